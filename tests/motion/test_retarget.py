"""BVH skeletons onto the 22 HumanML3D joints: mappings, up axis, scale, resampling, on hand-made and real files."""

import json

import numpy as np
import pytest

from moscale.motion.bvh import read_bvh
from moscale.motion.representation import recover_from_ric
from moscale.motion.retarget import _up_rotation, bvh_to_features, load_bvh_joints, resample, resolve_mapping
from tests.shared_data import BVH_DIR, HUMANML3D_SAMPLE, SHARED_BVH_FILES

needs_data = pytest.mark.usefixtures("shared_bvh_files")  # tests/motion/conftest.py


def test_resample_copies_integer_steps_and_interpolates_between():
    frames = np.arange(13.0)[:, None] * np.array([[1.0, -2.0]])
    np.testing.assert_allclose(resample(frames, 120.0, 20.0), frames[::6])
    thirty = np.arange(7.0)[:, None]
    # 30 -> 20 fps: output t = 0, 0.05, 0.1, 0.15, 0.2 s = source frames 0, 1.5, 3, 4.5, 6.
    np.testing.assert_allclose(resample(thirty, 30.0, 20.0)[:, 0], [0, 1.5, 3, 4.5, 6])
    with pytest.raises(ValueError, match="positive"):
        resample(thirty, 0.0, 20.0)


@needs_data
@pytest.mark.parametrize("name", sorted(SHARED_BVH_FILES))
def test_import_shared_files(name):
    fps, frames_at_20, mapping = SHARED_BVH_FILES[name]
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
    mean, std = np.load(HUMANML3D_SAMPLE / "Mean.npy"), np.load(HUMANML3D_SAMPLE / "Std.npy")
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
