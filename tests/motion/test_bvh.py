"""The BVH file format: the parser (hierarchy, channel orders, several roots, End Sites, errors) and the writer."""

import numpy as np
import pytest

from moscale.motion.bvh import read_bvh, write_bvh

SMALL_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Arm
  {
    OFFSET 0 0 1
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 0 1
    }
  }
  JOINT Slider
  {
    OFFSET 5 5 5
    CHANNELS 6 Xposition Yposition Zposition Xrotation Zrotation Yrotation
    JOINT Tip
    {
      OFFSET 0 0 1
      CHANNELS 3 Xrotation Zrotation Yrotation
    }
  }
}
ROOT Prop
{
  OFFSET 0 0 0
  CHANNELS 3 Xposition Yposition Zposition
}
MOTION
Frames: 2
Frame Time: 0.5
1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 7 8 9
1 2 3 90 0 0 0 90 0 0 0 1 90 0 0 0 90 0 -1 -1 -1
"""


@pytest.fixture(scope="module")
def small_bvh(tmp_path_factory):
    path = tmp_path_factory.mktemp("bvh") / "small.bvh"
    path.write_text(SMALL_BVH)
    return path


def test_parser_reads_hierarchy_channels_end_sites_and_roots(small_bvh):
    motion = read_bvh(small_bvh)
    assert motion.names == ["Hips", "Arm", "Slider", "Tip", "Prop"]
    assert motion.parents == [-1, 0, 0, 2, -1]
    assert motion.channels[2] == ("Xposition", "Yposition", "Zposition", "Xrotation", "Zrotation", "Yrotation")
    assert motion.num_frames == 2 and motion.fps == 2.0
    np.testing.assert_allclose(motion.end_sites[1], [0, 0, 1])
    np.testing.assert_allclose(motion.offsets_J3[2], [5, 5, 5])


def test_forward_kinematics_follows_channels(small_bvh):
    positions = read_bvh(small_bvh).positions()
    # Frame 0: no rotation; Slider's position channels (0, 0, 0) replace its offset.
    np.testing.assert_allclose(positions[0], [[1, 2, 3], [1, 2, 4], [1, 2, 3], [1, 2, 4], [7, 8, 9]], atol=1e-12)
    # Frame 1: the root turns 90 degrees about z, which leaves the +z offsets of Arm and Slider alone; Slider
    # turns 90 degrees about x, so Tip's offset (0, 0, 1) becomes (0, -1, 0), then (1, 0, 0) under the root.
    np.testing.assert_allclose(positions[1], [[1, 2, 3], [1, 2, 4], [1, 2, 4], [2, 2, 4], [-1, -1, -1]], atol=1e-12)


ORDER_BVH = """HIERARCHY
ROOT A
{
  OFFSET 0 0 0
  CHANNELS 2 FIRST SECOND
  JOINT B
  {
    OFFSET 0 0 1
    CHANNELS 0
  }
}
MOTION
Frames: 1
Frame Time: 0.1
90 90
"""


@pytest.mark.parametrize(
    "first, second, expected", [("Zrotation", "Xrotation", [1, 0, 0]), ("Xrotation", "Zrotation", [0, -1, 0])]
)
def test_rotations_compose_in_the_listed_order(tmp_path, first, second, expected):
    path = tmp_path / "order.bvh"
    path.write_text(ORDER_BVH.replace("FIRST", first).replace("SECOND", second))
    # Intrinsic rotations: R = R_first @ R_second, applied to B's offset (0, 0, 1).
    np.testing.assert_allclose(read_bvh(path).positions()[0, 1], expected, atol=1e-12)


def test_parser_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_bvh(tmp_path / "missing.bvh")
    short = tmp_path / "short.bvh"
    short.write_text(SMALL_BVH.replace("Frames: 2", "Frames: 3"))
    with pytest.raises(ValueError, match="announces 3 frames"):
        read_bvh(short)
    odd = tmp_path / "odd.bvh"
    odd.write_text(SMALL_BVH.replace("Zposition Xrotation", "Zposition Wrotation"))
    with pytest.raises(ValueError, match="unknown channels"):
        read_bvh(odd)


def test_write_then_read_keeps_positions(small_bvh, tmp_path):
    motion = read_bvh(small_bvh)
    write_bvh(tmp_path / "copy.bvh", motion)
    again = read_bvh(tmp_path / "copy.bvh")
    order = [again.names.index(n) for n in motion.names]
    np.testing.assert_allclose(again.positions()[:, order], motion.positions(), atol=1e-5)
    assert again.end_sites[again.names.index("Arm")].tolist() == [0, 0, 1]


def test_a_non_finite_offset_is_refused_with_file_joint_and_line(tmp_path):
    bad = tmp_path / "bad_offset.bvh"
    bad.write_text(SMALL_BVH.replace("OFFSET 5 5 5", "OFFSET 5 nan 5"))
    with pytest.raises(ValueError) as raised:
        read_bvh(bad)
    assert str(raised.value) == f"{bad}, line 17: the OFFSET of joint 'Slider' must be a finite number, found 'nan'"
    bad.write_text(SMALL_BVH.replace("OFFSET 0 0 1\n    }", "OFFSET 0 inf 1\n    }"))
    with pytest.raises(ValueError, match="line 12: the End Site OFFSET of joint 'Arm' must be a finite number"):
        read_bvh(bad)
    bad.write_text(SMALL_BVH.replace("Frame Time: 0.5", "Frame Time: nan"))
    with pytest.raises(ValueError, match="line 33: the Frame Time must be a finite number"):
        read_bvh(bad)


def test_a_non_finite_motion_value_is_refused_with_file_frame_channel_and_line(tmp_path):
    rows = SMALL_BVH.splitlines()
    # Frame 2, column 13 (counting from 1): Slider's Xrotation after its three position channels.
    second_frame = rows[-1].split()
    second_frame[12] = "nan"
    second_frame[20] = "NaN"
    bad = tmp_path / "bad_value.bvh"
    bad.write_text("\n".join(rows[:-1] + [" ".join(second_frame)]) + "\n")
    with pytest.raises(ValueError) as raised:
        read_bvh(bad)
    assert str(raised.value) == (
        f"{bad}, line 35: frame 2, channel Xrotation of joint 'Slider' is 'nan', not a finite number "
        "(1 more such values follow); fix or remove that frame"
    )
    bad.write_text(SMALL_BVH.replace("7 8 9", "7 eight 9"))
    with pytest.raises(ValueError, match="line 34: frame 1, channel Yposition of joint 'Prop' is 'eight'"):
        read_bvh(bad)
