import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import pytest

from moscale.motion.render import as_joints, main, render_animation, render_keyframes
from moscale.motion.representation import features_from_joints, recover_from_ric
from tests.shared_data import SHARED_DATA as DATA

CLIP = DATA / "humanml3d_sample" / "new_joints" / "012314.npy"

RED, BLUE = np.array([214, 39, 40]), np.array([31, 119, 180])  # right and left side of the body
SMALL = {"panel_size": 1.6, "dpi": 50}


@pytest.fixture(scope="module")
def clip():
    if not CLIP.is_file():  # shared test data, as in CI: its absence is a failure, not a skip
        pytest.fail(
            f"HumanML3D sample clip not found at {CLIP}: check out shared/ beside the repository or set "
            "MOSCALE_SHARED_DATA"
        )
    return np.load(CLIP)


def _has_color(image: np.ndarray, color: np.ndarray, tolerance: int = 40) -> bool:
    return bool((np.abs(image[..., :3].astype(int) - color).sum(-1) < tolerance).any())


def test_gif_side_by_side_animates_each_motion(clip, tmp_path):
    path = render_animation([clip[:8], clip[60:65]], tmp_path / "compare.gif", captions=["first", "second"], **SMALL)
    reader = imageio.get_reader(path)
    frames = [np.asarray(frame) for frame in reader]
    assert len(frames) == 8  # the longer motion sets the length
    assert reader.get_meta_data()["duration"] == 50  # ms per frame at 20 fps
    height, width = frames[0].shape[:2]
    assert width == pytest.approx(2 * 1.6 * 50, abs=2) and height == pytest.approx((1.6 + 0.3) * 50, abs=2)
    left, right = frames[0][:, : width // 2], frames[0][:, width // 2 :]
    for panel in (left, right):
        assert _has_color(panel, RED) and _has_color(panel, BLUE)

    # The first motion moves between frames; the second, 5 frames long, holds its last pose at the end (the
    # time counter in the bottom right corner still runs, so leave it out; a hand of the left motion may reach
    # a few pixels over the middle).
    def changed_pixels(a, b, columns):
        return (np.abs(frames[a][:-12, columns].astype(int) - frames[b][:-12, columns]).sum(-1) > 60).sum()

    assert changed_pixels(0, 7, slice(0, width // 2)) > 100
    assert changed_pixels(0, 4, slice(width // 2, None)) > 100
    assert changed_pixels(4, 7, slice(width // 2, None)) < 5


def test_mp4_has_every_frame_at_the_motion_rate(clip, tmp_path):
    path = render_animation(clip[:10], tmp_path / "clip.mp4", captions="a person plays tennis", fps=20, **SMALL)
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        frames = list(reader)
    finally:
        reader.close()
    assert meta["fps"] == 20.0 and len(frames) == 10
    assert meta["size"][0] % 2 == 0 and meta["size"][1] % 2 == 0


def test_features_render_like_their_joints(clip, tmp_path):
    features = features_from_joints(clip[:12])
    np.testing.assert_array_equal(as_joints(features), recover_from_ric(features))
    render_keyframes(features, tmp_path / "from_features.png", num_keyframes=3, **SMALL)
    render_keyframes(recover_from_ric(features), tmp_path / "from_joints.png", num_keyframes=3, **SMALL)
    np.testing.assert_array_equal(
        imageio.imread(tmp_path / "from_features.png"), imageio.imread(tmp_path / "from_joints.png")
    )


def test_keyframe_strip_has_one_row_per_motion(clip, tmp_path):
    path = render_keyframes(
        [clip, clip[::-1]], tmp_path / "strip.png", captions=["forward", "backward"], num_keyframes=4, **SMALL
    )
    image = imageio.imread(path)
    row_height = 0.8 * 1.6 + 0.3
    assert image.shape[:2] == pytest.approx((2 * row_height * 50, 4 * 1.6 * 50), abs=2)
    top, bottom = image[: image.shape[0] // 2], image[image.shape[0] // 2 :]
    assert _has_color(top, RED) and _has_color(bottom, BLUE)
    # The reversed motion starts with the last pose: the two rows differ.
    assert np.abs(top.astype(int) - bottom[: top.shape[0]]).sum() > 0


def test_command_line_writes_the_requested_format(clip, tmp_path):
    np.save(tmp_path / "motion.npy", clip[:6])
    main([str(tmp_path / "motion.npy"), "--output_path", str(tmp_path / "motion.gif"), "--caption", "tennis"])
    main([str(tmp_path / "motion.npy"), "--output_path", str(tmp_path / "half.gif"), "--step", "2", "--dpi", "40"])
    main([str(tmp_path / "motion.npy"), "--output_path", str(tmp_path / "motion.png"), "--keyframes", "3"])
    assert len(list(imageio.get_reader(tmp_path / "motion.gif"))) == 6
    half = imageio.get_reader(tmp_path / "half.gif")
    assert len(list(half)) == 3 and half.get_meta_data()["duration"] == 100  # same playback speed
    assert imageio.imread(tmp_path / "motion.png").ndim == 3


def test_bad_inputs_name_the_problem(tmp_path):
    joints = np.zeros((4, 22, 3))
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        render_animation(joints, tmp_path / "motion.avi")
    with pytest.raises(ValueError, match=r"\.png"):
        render_keyframes(joints, tmp_path / "strip.jpg")
    with pytest.raises(ValueError, match="one caption per motion"):
        render_animation([joints, joints], tmp_path / "m.gif", captions=["only one"])
    with pytest.raises(ValueError, match=r"joints \(T, 22 or 21, 3\) or features"):
        render_animation(np.zeros((4, 10, 3)), tmp_path / "m.gif")
    with pytest.raises(ValueError, match="NaN"):
        render_keyframes(np.full((4, 22, 3), np.nan), tmp_path / "m.png")
