"""HumanML3D joints and features -> BVH: round trips through our importer, and Blender's import where installed."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from moscale.motion.bvh_export import features_to_bvh, joints_to_bvh
from moscale.motion.representation import HUMANML3D_JOINT_NAMES, features_from_joints, recover_from_ric
from moscale.motion.retarget import load_bvh_joints
from tests.helpers import reimported_joints
from tests.shared_data import BVH_DIR, HUMANML3D_SAMPLE, SHARED_BVH_FILES

needs_data = pytest.mark.usefixtures("shared_bvh_files")  # tests/motion/conftest.py


@needs_data
def test_export_round_trip_of_real_humanml3d_joints(tmp_path):
    joints = np.load(HUMANML3D_SAMPLE / "new_joints" / "012314.npy")
    written = joints_to_bvh(joints, tmp_path / "012314.bvh")
    assert np.abs(reimported_joints(tmp_path / "012314.bvh") - joints).max() < 1e-4
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
@pytest.mark.parametrize("name", sorted(SHARED_BVH_FILES))
def test_export_round_trip_of_each_shared_file_within_1_cm(tmp_path, name):
    joints = load_bvh_joints(BVH_DIR / f"{name}.bvh")
    joints_to_bvh(joints, tmp_path / f"{name}.bvh")
    assert np.linalg.norm(reimported_joints(tmp_path / f"{name}.bvh") - joints, axis=-1).max() < 0.01


@needs_data
def test_export_round_trip_of_imported_mocap_and_features(tmp_path):
    joints = load_bvh_joints(BVH_DIR / "cmu_jumping_jacks.bvh")
    joints_to_bvh(joints, tmp_path / "jacks.bvh", units_per_metre=100.0)
    # Resampling 30 -> 20 fps stretches bones by up to 3 mm; the round trip stays within 1 cm.
    assert np.abs(reimported_joints(tmp_path / "jacks.bvh") / 100.0 - joints).max() < 0.01
    features = features_from_joints(joints)
    features_to_bvh(features, tmp_path / "features.bvh")
    assert np.abs(reimported_joints(tmp_path / "features.bvh") - recover_from_ric(features)).max() < 0.01
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
    joints = np.load(HUMANML3D_SAMPLE / "new_joints" / "012314.npy")[:30]
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
