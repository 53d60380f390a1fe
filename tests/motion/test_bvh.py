import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from moscale.motion.bvh import (
    HUMANML3D_JOINT_NAMES,
    _up_rotation,
    build_dataset,
    bvh_to_features,
    features_to_bvh,
    joints_to_bvh,
    load_bvh_joints,
    main,
    read_bvh,
    read_captions,
    resample,
    resolve_mapping,
    write_bvh,
)
from moscale.motion.representation import features_from_joints, recover_from_ric
from tests.shared_data import SHARED_DATA as DATA

BVH_DIR = DATA / "bvh"
SAMPLE = DATA / "humanml3d_sample"
SHARED_FILES = {  # name: (file fps, frames at 20 fps, detected mapping)
    "cmu_01_01": (120.0, 459, "cmu"),
    "cmu_jumping_jacks": (30.0, 83, "cmu-anatomical"),
    "wave_hello": (119.88, 140, "mixamo"),
}


@pytest.fixture(scope="module")
def shared_bvh_files():
    """The shared BVH files are part of the test data, as in CI: their absence is a failure, not a skip."""
    missing = [name for name in SHARED_FILES if not (BVH_DIR / f"{name}.bvh").is_file()]
    if missing or not (SAMPLE / "new_joints" / "012314.npy").is_file():
        pytest.fail(
            f"shared test data missing under {DATA} ({missing or 'humanml3d_sample'}): check out shared/ "
            "beside the repository or set MOSCALE_SHARED_DATA"
        )


needs_data = pytest.mark.usefixtures("shared_bvh_files")

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


def test_resample_copies_integer_steps_and_interpolates_between():
    frames = np.arange(13.0)[:, None] * np.array([[1.0, -2.0]])
    np.testing.assert_allclose(resample(frames, 120.0, 20.0), frames[::6])
    thirty = np.arange(7.0)[:, None]
    # 30 -> 20 fps: output t = 0, 0.05, 0.1, 0.15, 0.2 s = source frames 0, 1.5, 3, 4.5, 6.
    np.testing.assert_allclose(resample(thirty, 30.0, 20.0)[:, 0], [0, 1.5, 3, 4.5, 6])
    with pytest.raises(ValueError, match="positive"):
        resample(thirty, 0.0, 20.0)


@needs_data
@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_import_shared_files(name):
    fps, frames_at_20, mapping = SHARED_FILES[name]
    motion = read_bvh(BVH_DIR / f"{name}.bvh")
    assert motion.fps == pytest.approx(fps, rel=1e-3)
    assert resolve_mapping(motion.names)[0] == mapping
    joints = load_bvh_joints(motion)
    assert joints.shape == (frames_at_20, 22, 3)
    # A standing adult in metres, y up: head 1.3-1.6 m above the ankles, the ankles near the floor.
    height = joints[0, 15, 1] - joints[0, [7, 8], 1].mean()
    assert 1.2 < height < 1.7
    assert joints[..., 1].min() > -0.05
    features = bvh_to_features(motion)
    assert features.shape == (frames_at_20 - 1, 263) and np.isfinite(features).all()
    # After the HumanML3D processing the body faces +z: left hip at +x, toes ahead of the ankles.
    processed = recover_from_ric(features)[0]
    assert processed[1, 0] > 0.03 > -0.03 > processed[2, 0]
    assert processed[10, 2] - processed[7, 2] > 0.05 and processed[11, 2] - processed[8, 2] > 0.05
    # Normalised by the HumanML3D statistics, real mocap looks like HumanML3D data (mean |z| about 1).
    mean, std = np.load(SAMPLE / "Mean.npy"), np.load(SAMPLE / "Std.npy")
    assert np.abs((features - mean) / std).mean() < 1.5


@needs_data
def test_import_resamples_120_fps_by_taking_every_sixth_frame():
    motion = read_bvh(BVH_DIR / "cmu_01_01.bvh")
    _, weights = resolve_mapping(motion.names)
    mapped = np.einsum("kj,fjc->fkc", weights, motion.positions())
    joints = load_bvh_joints(motion, scale=1.0, up_axis="y")
    np.testing.assert_allclose(joints, mapped[::6][: len(joints)], atol=1e-9)


@needs_data
def test_up_axis_and_scale_options():
    motion = read_bvh(BVH_DIR / "wave_hello.bvh")  # z up, file units
    auto = load_bvh_joints(motion)
    np.testing.assert_allclose(load_bvh_joints(motion, up_axis="z"), auto)
    wrong = load_bvh_joints(motion, up_axis="y")
    assert wrong[0, 15, 1] - wrong[0, 7, 1] < 0.5 < auto[0, 15, 1] - auto[0, 7, 1]
    in_units = load_bvh_joints(motion, scale=1.0)
    ratio = np.linalg.norm(auto[0, 4] - auto[0, 7]) / np.linalg.norm(in_units[0, 4] - in_units[0, 7])
    np.testing.assert_allclose(load_bvh_joints(motion, scale=0.01), in_units * 0.01, atol=1e-12)
    assert 0.03 < ratio < 0.05  # auto scaling sizes the skeleton like HumanML3D's
    with pytest.raises(ValueError, match="up_axis"):
        load_bvh_joints(motion, up_axis="up")
    with pytest.raises(ValueError, match="scale"):
        load_bvh_joints(motion, scale=-1.0)


@pytest.mark.parametrize("axis", ["x", "y", "z", "-x", "-y", "-z", "+z"])
def test_up_axis_turns_onto_y_without_mirroring(axis):
    rotation = _up_rotation(axis, np.zeros(3))
    up = np.zeros(3)
    up["xyz".index(axis[-1])] = -1.0 if axis.startswith("-") else 1.0
    np.testing.assert_allclose(rotation @ up, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


@needs_data
def test_namespaced_mixamo_names_are_detected():
    motion = read_bvh(BVH_DIR / "wave_hello.bvh")
    plain = load_bvh_joints(motion)
    motion.names = [f"mixamorig:{name}" for name in motion.names]
    assert resolve_mapping(motion.names)[0] == "mixamo"
    np.testing.assert_array_equal(load_bvh_joints(motion), plain)


@needs_data
def test_user_mapping_from_json(tmp_path):
    motion = read_bvh(BVH_DIR / "wave_hello.bvh")
    mapping = {
        "pelvis": "Hips",
        "spine1": "Spine",
        "spine2": "Spine1",
        "spine3": {"Spine2": 0.5, "Spine3": 0.5},
        "neck": "Neck",
        "head": "Head",
        "l_collar": "LeftShoulder",
        "r_collar": "RightShoulder",
        "l_hip": "LeftUpLeg",
        "r_hip": "RightUpLeg",
        "l_knee": "LeftLeg",
        "r_knee": "RightLeg",
        "l_ankle": "LeftFoot",
        "r_ankle": "RightFoot",
        "l_foot": "LeftToeBase",
        "r_foot": "RightToeBase",
        "l_shoulder": "LeftArm",
        "r_shoulder": "RightArm",
        "l_elbow": "LeftForeArm",
        "r_elbow": "RightForeArm",
        "l_wrist": "LeftHand",
        "r_wrist": "RightHand",
    }
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping))
    custom = load_bvh_joints(motion, mapping=path, scale=1.0)
    builtin = load_bvh_joints(motion, mapping="mixamo", scale=1.0)
    positions = resample(read_bvh(BVH_DIR / "wave_hello.bvh").positions(), motion.fps, 20.0)
    index = {n: i for i, n in enumerate(motion.names)}
    expected_spine3 = 0.5 * (positions[:, index["Spine2"]] + positions[:, index["Spine3"]])
    np.testing.assert_allclose(custom[:, 9], expected_spine3[:, [0, 2, 1]] * [1, 1, -1], atol=1e-9)
    np.testing.assert_allclose(np.delete(custom, 9, axis=1), np.delete(builtin, 9, axis=1), atol=1e-12)

    with pytest.raises(ValueError, match=r"missing \['head'\]"):
        load_bvh_joints(motion, mapping={k: v for k, v in mapping.items() if k != "head"})
    with pytest.raises(ValueError, match="'Chest' .* is not in the BVH file"):
        load_bvh_joints(motion, mapping={**mapping, "spine2": "Chest"})
    with pytest.raises(ValueError, match="sum to 1"):
        load_bvh_joints(motion, mapping={**mapping, "spine3": {"Spine2": 0.5}})
    with pytest.raises(ValueError, match="zero-length bones"):
        load_bvh_joints(motion, mapping={**mapping, "spine2": "Spine"})
    with pytest.raises(FileNotFoundError, match="neither a built-in mapping"):
        load_bvh_joints(motion, mapping="no_such_mapping.json")


def _reimport(path: Path) -> np.ndarray:
    motion = read_bvh(path)
    return motion.positions()[:, [motion.names.index(n) for n in HUMANML3D_JOINT_NAMES]]


@needs_data
def test_export_round_trip_of_real_humanml3d_joints(tmp_path):
    joints = np.load(SAMPLE / "new_joints" / "012314.npy")
    written = joints_to_bvh(joints, tmp_path / "012314.bvh")
    assert np.abs(_reimport(tmp_path / "012314.bvh") - joints).max() < 1e-4
    # The detected "humanml3d" mapping brings the file back through the importer unchanged.
    np.testing.assert_allclose(load_bvh_joints(tmp_path / "012314.bvh", scale=1.0), joints, atol=1e-4)
    # A T-pose rest: legs down, spine and head up, arms out to the sides, feet forward.
    offsets = dict(zip(written.names, written.offsets_J3))
    assert offsets["l_knee"][1] < -0.3 and offsets["spine2"][1] > 0.1 and offsets["head"][1] > 0.05
    assert offsets["l_elbow"][0] > 0.2 and offsets["r_elbow"][0] < -0.2 and offsets["l_foot"][2] > 0.1
    rest = written.rest_positions()  # standing on the ground at the origin
    assert rest[:, 1].min() == pytest.approx(0.0, abs=1e-9) and rest[0, [0, 2]].tolist() == [0.0, 0.0]
    # Only the root and the six joints next to the two branching joints carry positions.
    with_positions = [n for n, c in zip(written.names, written.channels) if "Xposition" in c]
    assert with_positions == ["pelvis", "l_hip", "r_hip", "spine1", "neck", "l_collar", "r_collar"]


@needs_data
@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_export_round_trip_of_each_shared_file_within_1_cm(tmp_path, name):
    joints = load_bvh_joints(BVH_DIR / f"{name}.bvh")
    joints_to_bvh(joints, tmp_path / f"{name}.bvh")
    assert np.linalg.norm(_reimport(tmp_path / f"{name}.bvh") - joints, axis=-1).max() < 0.01


@needs_data
def test_export_round_trip_of_imported_mocap_and_features(tmp_path):
    joints = load_bvh_joints(BVH_DIR / "cmu_jumping_jacks.bvh")
    joints_to_bvh(joints, tmp_path / "jacks.bvh", units_per_metre=100.0)
    # Resampling 30 -> 20 fps stretches bones by up to 3 mm; the round trip stays within 1 cm.
    assert np.abs(_reimport(tmp_path / "jacks.bvh") / 100.0 - joints).max() < 0.01
    features = features_from_joints(joints)
    features_to_bvh(features, tmp_path / "features.bvh")
    assert np.abs(_reimport(tmp_path / "features.bvh") - recover_from_ric(features)).max() < 0.01
    with pytest.raises(ValueError, match=r"\(T, 22, 3\)"):
        joints_to_bvh(features, tmp_path / "bad.bvh")
    with pytest.raises(ValueError, match="263"):
        features_to_bvh(joints[:, :, 0], tmp_path / "bad.bvh")


BLENDER_PROBE = r"""
import builtins, json, sys
import bpy
import io_anim_bvh.import_bvh as import_bvh
# Debian's Blender 3.4 runs its BVH importer on Python 3.11, which no longer accepts the 'rU' open mode.
import_bvh.open = lambda file, mode="r", *args, **kwargs: builtins.open(file, mode.replace("U", ""), *args, **kwargs)
bvh_path, out_path = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=bvh_path, global_scale=1.0, frame_start=1, rotate_mode="NATIVE",
                        axis_forward="-Z", axis_up="Y")
armature = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
first, last = (int(round(f)) for f in armature.animation_data.action.frame_range)
frames = []
for frame in range(first, last + 1):
    bpy.context.scene.frame_set(frame)
    frames.append({b.name: list(armature.matrix_world @ b.head) for b in armature.pose.bones})
json.dump(frames, open(out_path, "w"))
"""


@needs_data
@pytest.mark.skipif(
    shutil.which("blender") is None,
    reason="Blender is not installed (Debian: apt-get install blender); it checks our BVH files in the real client",
)
def test_blender_imports_exported_bvh_at_the_same_joint_positions(tmp_path):
    joints = np.load(SAMPLE / "new_joints" / "012314.npy")[:30]
    joints_to_bvh(joints, tmp_path / "clip.bvh")
    (tmp_path / "probe.py").write_text(BLENDER_PROBE)
    result = subprocess.run(
        [
            "blender",
            "-b",
            "--factory-startup",
            "--python",
            str(tmp_path / "probe.py"),
            "--",
            str(tmp_path / "clip.bvh"),
            str(tmp_path / "heads.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (tmp_path / "heads.json").is_file(), result.stdout[-2000:] + result.stderr[-2000:]
    frames = json.loads((tmp_path / "heads.json").read_text())
    assert len(frames) == len(joints)
    heads = np.array([[frame[name] for name in HUMANML3D_JOINT_NAMES] for frame in frames])
    # Blender is z up: its (x, y, z) is our (x, -z, y).
    heads = np.stack([heads[..., 0], heads[..., 2], -heads[..., 1]], axis=-1)
    assert np.abs(heads - joints).max() < 1e-4  # the file has 6 decimals; 1 cm is the requirement


@needs_data
def test_build_dataset_command(tmp_path, capsys):
    captions = tmp_path / "captions.tsv"
    captions.write_text(
        "# name<TAB>caption[<TAB>start<TAB>end]\n"
        "cmu_jumping_jacks\ta person does jumping jacks.\n"
        "wave_hello\ta person waves hello with the right hand.\n"
        "wave_hello\tsomeone waves.\t1.0\t4.0\n"
    )
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("cmu_jumping_jacks", "wave_hello"):
        shutil.copy(BVH_DIR / f"{name}.bvh", clips / f"{name}.bvh")
    out = tmp_path / "dataset"
    main(["build-dataset", str(clips), "--captions", str(captions), "--out", str(out), "--val-fraction", "0.5"])
    assert "1 train, 1 val, 0 test" in capsys.readouterr().out
    for name, frames in (("cmu_jumping_jacks", 82), ("wave_hello", 139)):
        features = np.load(out / "new_joint_vecs" / f"{name}.npy")
        assert features.shape == (frames, 263)
        np.testing.assert_allclose(np.load(out / "new_joints" / f"{name}.npy"), recover_from_ric(features))
    texts = (out / "texts" / "wave_hello.txt").read_text().splitlines()
    assert texts == [
        "a person waves hello with the right hand.#a/OTHER person/OTHER waves/OTHER hello/OTHER "
        "with/OTHER the/OTHER right/OTHER hand/OTHER#0.0#0.0",
        "someone waves.#someone/OTHER waves/OTHER#1.0#4.0",
    ]
    mean, std = np.load(out / "Mean.npy"), np.load(out / "Std.npy")
    assert mean.shape == std.shape == (263,)
    assert np.unique(std[4:67]).size == 1 and np.unique(std[259:]).size == 1 and (std > 0).all()
    assert sorted((out / "all.txt").read_text().split()) == ["cmu_jumping_jacks", "wave_hello"]
    assert len((out / "train.txt").read_text().split()) == len((out / "val.txt").read_text().split()) == 1

    captions.write_text("wave_hello\tonly one clip has a caption\n")
    with pytest.raises(ValueError, match=r"clips without a caption \['cmu_jumping_jacks'\]"):
        build_dataset([clips], captions, tmp_path / "other")
    captions.write_text("wave_hello a caption without a tab\n")
    with pytest.raises(ValueError, match="tab-separated"):
        read_captions(captions)


@needs_data
def test_build_dataset_names_the_captions_the_loaders_skip(tmp_path, capsys):
    from moscale.motion.data import load_motion_dataset

    captions = tmp_path / "captions.tsv"
    captions.write_text(
        "cmu_01_01\ta person jumps forward, then turns around.\t1.0\t8.5\n"  # a 23 s take: skipped, part too
        "cmu_jumping_jacks\ta person does jumping jacks.\n"
        "cmu_jumping_jacks\tthe first second.\t0.0\t1.0\n"  # a 20-frame part: skipped alone
    )
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("cmu_01_01", "cmu_jumping_jacks"):
        shutil.copy(BVH_DIR / f"{name}.bvh", clips / f"{name}.bvh")
    out = tmp_path / "dataset"
    main(["build-dataset", str(clips), "--captions", str(captions), "--out", str(out)])
    note = capsys.readouterr().out
    assert "cmu_01_01 'a person jumps forward, then turns around.' (the motion has 458 frames)" in note
    assert "cmu_jumping_jacks 'the first second.' (the part has 20 frames)" in note
    assert "does jumping jacks" not in note
    loaded = load_motion_dataset(out, "train", cache_dir=tmp_path / "cache")
    assert loaded["captions"] == [["a person does jumping jacks."]]


@needs_data
def test_convert_and_export_commands(tmp_path):
    main(["convert", str(BVH_DIR / "cmu_jumping_jacks.bvh"), str(tmp_path / "joints.npy")])
    main(["convert", str(BVH_DIR / "cmu_jumping_jacks.bvh"), str(tmp_path / "features.npy"), "--features"])
    joints, features = np.load(tmp_path / "joints.npy"), np.load(tmp_path / "features.npy")
    assert joints.shape == (83, 22, 3) and features.shape == (82, 263)
    main(["export", str(tmp_path / "joints.npy"), str(tmp_path / "joints.bvh")])
    main(["export", str(tmp_path / "features.npy"), str(tmp_path / "features.bvh")])
    assert np.abs(_reimport(tmp_path / "joints.bvh") - joints).max() < 0.01
    assert read_bvh(tmp_path / "features.bvh").num_frames == 82
