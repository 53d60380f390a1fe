"""The HumanML3D representation against real processed clips, plus the properties the processing must have.

The sample folder comes from MOSCALE_HUMANML3D_SAMPLE (default: the shared HumanML3D sample); every clip found
in its new_joint_vecs/ is checked, so the same tests can be pointed at a full HumanML3D download.
"""

import numpy as np
import pytest
import torch

from moscale.motion.representation import (
    HUMANML3D,
    HUMANML3D_BONE_LENGTHS,
    KIT_ML,
    average_std_within_groups,
    features_from_joints,
    offsets_from_joints,
    qbetween,
    qrot,
    rebuild_dropped_frame,
    recover_from_ric,
    skeleton_for,
    target_offsets,
)
from tests.shared_data import HUMANML3D_SAMPLE as SAMPLE_DIR

CLIP_IDS = sorted(path.stem for path in (SAMPLE_DIR / "new_joint_vecs").glob("*.npy"))

# Max abs error allowed per part of the 263 dims when re-processing a released clip (contacts must be identical).
FEATURE_PARTS = {
    "root rotation velocity": slice(0, 1),
    "root linear velocity": slice(1, 3),
    "root height": slice(3, 4),
    "root-relative positions": slice(4, 67),
    "6D rotations": slice(67, 193),
    "local velocities": slice(193, 259),
}


def load_clip(clip_id):
    features = np.load(SAMPLE_DIR / "new_joint_vecs" / f"{clip_id}.npy")
    joints = np.load(SAMPLE_DIR / "new_joints" / f"{clip_id}.npy")
    return features, joints


def test_sample_folder_has_clips():
    assert CLIP_IDS, f"no clips in {SAMPLE_DIR / 'new_joint_vecs'}"


@pytest.mark.parametrize("clip_id", CLIP_IDS)
def test_recover_from_ric_matches_released_joints(clip_id):
    features, joints = load_clip(clip_id)
    recovered = recover_from_ric(torch.from_numpy(features), 22)
    assert recovered.shape == joints.shape
    # Measured on 012314: 0.0 (float32 torch reproduces the release bit for bit).
    assert (recovered.numpy() - joints).__abs__().max() <= 1e-5


@pytest.mark.parametrize("clip_id", CLIP_IDS)
def test_features_from_joints_reproduces_released_features(clip_id):
    features, joints = load_clip(clip_id)
    last_frame = rebuild_dropped_frame(features, joints)
    raw = np.concatenate([joints, last_frame[None]], axis=0)

    # Measured on 012314 (default skeleton): 1.1e-7, 3.7e-8, 1.2e-7, 1.3e-6, 7.7e-6, 1.9e-6; contacts identical.
    for offsets in (None, offsets_from_joints(joints[0])):
        remade = features_from_joints(raw, offsets=offsets)
        assert remade.shape == features.shape
        assert remade.dtype == np.float32
        for part, columns in FEATURE_PARTS.items():
            error = np.abs(remade[:, columns] - features[:, columns]).max()
            assert error <= 1e-4, f"{part}: max abs error {error:.2e}"
        np.testing.assert_array_equal(remade[:, 259:263], features[:, 259:263])


@pytest.mark.parametrize("clip_id", CLIP_IDS)
def test_released_clips_share_the_target_skeleton(clip_id):
    _, joints = load_clip(clip_id)
    parents = np.array(HUMANML3D.parents)
    lengths = np.linalg.norm(joints[:, 1:] - joints[:, parents[1:]], axis=-1)
    # 012314 stays within 1.2e-6 m; float32 joints several metres from the origin carry about 1e-6 m per coordinate.
    np.testing.assert_allclose(lengths, np.broadcast_to(HUMANML3D_BONE_LENGTHS[1:], lengths.shape), atol=1e-5)


def test_recover_from_ric_batched_torch_numpy_and_dtype():
    features, joints = load_clip(CLIP_IDS[0])
    batch = np.stack([features, features[::-1].copy()])
    from_numpy = recover_from_ric(batch, 22)
    from_torch = recover_from_ric(torch.from_numpy(batch), 22)
    assert isinstance(from_numpy, np.ndarray) and isinstance(from_torch, torch.Tensor)
    assert from_numpy.shape == (2, len(features), 22, 3)
    np.testing.assert_array_equal(from_numpy, from_torch.numpy())
    np.testing.assert_array_equal(from_numpy[0], recover_from_ric(features, 22))
    in_float64 = recover_from_ric(features.astype(np.float64), 22)
    assert in_float64.dtype == np.float64
    assert np.abs(in_float64 - joints).max() < 1e-5


def test_features_do_not_depend_on_where_the_motion_starts_or_faces():
    features, joints = load_clip(CLIP_IDS[0])
    raw = np.concatenate([joints, rebuild_dropped_frame(features, joints)[None]])
    yaw = qbetween(np.array([0.0, 0.0, 1.0]), np.array([np.sin(1.1), 0.0, np.cos(1.1)]))
    moved = qrot(np.broadcast_to(yaw, raw.shape[:-1] + (4,)), raw) + np.array([3.0, 0.5, -2.0])
    np.testing.assert_allclose(features_from_joints(moved), features_from_joints(raw), atol=1e-4)


def test_features_roundtrip_through_recovery_on_retargeted_skeleton():
    # A skeleton 20% larger is rescaled onto the HumanML3D bone lengths: recovery then gives the target lengths.
    features, joints = load_clip(CLIP_IDS[0])
    raw = np.concatenate([joints, rebuild_dropped_frame(features, joints)[None]]) * 1.2
    recovered = recover_from_ric(features_from_joints(raw), 22)
    parents = np.array(HUMANML3D.parents)
    lengths = np.linalg.norm(recovered[:, 1:] - recovered[:, parents[1:]], axis=-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(HUMANML3D_BONE_LENGTHS[1:], lengths.shape), atol=1e-5)
    assert recovered[..., 1].min() == pytest.approx(0.0, abs=1e-6)


def _pairwise_distances(joints):
    return np.linalg.norm(joints[..., :, None, :] - joints[..., None, :, :], axis=-1)


@pytest.mark.parametrize("spec", [HUMANML3D, KIT_ML], ids=lambda spec: spec.name)
def test_features_recover_the_posed_skeleton(spec):
    # A random swaying pose sequence on a random skeleton: after processing, recovery gives back every frame's
    # pose (all pairwise joint distances) for T rows.
    from moscale.motion.representation import forward_kinematics

    rng = np.random.default_rng(0)
    offsets = spec.raw_offsets_array * rng.uniform(0.05, 0.4, size=(spec.joints_num, 1))
    num_frames = 40
    phase = np.linspace(0, 2 * np.pi, num_frames)[:, None]
    axis_angle = (
        0.3 * np.sin(phase + rng.uniform(0, 6, size=(1, spec.joints_num)))[..., None] * np.array([1.0, 0.2, 0.5])
    )
    half = np.linalg.norm(axis_angle, axis=-1, keepdims=True) / 2
    quats = np.concatenate([np.cos(half), np.sin(half) * axis_angle / np.maximum(2 * half, 1e-12)], axis=-1)
    root = np.stack([np.linspace(0, 1.5, num_frames), np.full(num_frames, 1.0), np.zeros(num_frames)], axis=-1)
    joints = forward_kinematics(quats, root, offsets, spec)

    features = features_from_joints(joints, spec, offsets=offsets)
    assert features.shape == (num_frames - 1, spec.feature_dim)
    assert np.isfinite(features).all()
    recovered = recover_from_ric(features, spec.joints_num)
    np.testing.assert_allclose(_pairwise_distances(recovered), _pairwise_distances(joints[:-1]), atol=1e-5)


def test_qbetween_handles_opposite_directions():
    quat = qbetween(np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]))
    turned = qrot(quat, np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(turned, [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]], atol=1e-12)


def test_bad_inputs_give_clear_errors():
    features, joints = load_clip(CLIP_IDS[0])
    with pytest.raises(ValueError, match="263 dims, got 251"):
        recover_from_ric(features[:, :251], 22)
    with pytest.raises(ValueError, match=r"\(T\+1, 22, 3\).*spec=KIT_ML"):
        features_from_joints(joints[:, :21])
    with pytest.raises(ValueError, match=r"\(T\+1, 21, 3\) for kit-ml"):
        features_from_joints(joints, KIT_ML, offsets=offsets_from_joints(joints[0]))
    with pytest.raises(ValueError, match="at least 2 frames"):
        features_from_joints(joints[:1])
    broken = joints.copy()
    broken[5, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        features_from_joints(broken)
    collapsed = joints.copy()
    collapsed[7, 4] = collapsed[7, 1]  # the left knee on the left hip: that bone has no direction
    with pytest.raises(ValueError, match="Joint 4 coincides with its parent joint 1 in frame 7"):
        features_from_joints(collapsed)
    with pytest.raises(ValueError, match=r"offsets must be a finite \(22, 3\) array"):
        features_from_joints(joints, offsets=np.ones((21, 3)))
    with pytest.raises(ValueError, match="non-zero length"):
        features_from_joints(joints, offsets=np.zeros((22, 3)))
    # Hips and shoulders stacked on one vertical line give no facing direction.
    no_facing = joints.copy()
    no_facing[:, [1, 2, 16, 17]] = no_facing[:, [0]] + np.array(
        [[0.0, 0.05, 0.0], [0.0, -0.05, 0.0], [0.0, 0.45, 0.0], [0.0, 0.35, 0.0]]
    )
    with pytest.raises(ValueError, match="no facing direction"):
        features_from_joints(no_facing)
    with pytest.raises(ValueError, match="same T"):
        rebuild_dropped_frame(features[:-1], joints)
    with pytest.raises(ValueError, match="have 263 dims, got 251"):
        rebuild_dropped_frame(features[:, :251], joints)
    with pytest.raises(ValueError, match="No skeleton has 24 joints"):
        skeleton_for(24)
    with pytest.raises(ValueError, match="No built-in target skeleton"):
        target_offsets(KIT_ML)


@pytest.mark.parametrize("spec", [HUMANML3D, KIT_ML], ids=lambda spec: spec.name)
def test_feature_groups_tile_the_layout(spec):
    groups = spec.feature_groups
    sizes = [group.stop - group.start for group in groups]
    joints = spec.joints_num
    assert sizes == [1, 2, 1, (joints - 1) * 3, (joints - 1) * 6, joints * 3, 4]
    assert groups[0].start == 0 and groups[-1].stop == spec.feature_dim
    assert all(a.stop == b.start for a, b in zip(groups[:-1], groups[1:]))


def test_std_is_averaged_within_each_group():
    std = np.random.default_rng(0).uniform(0.1, 2.0, HUMANML3D.feature_dim)
    averaged = average_std_within_groups(std)
    for group in HUMANML3D.feature_groups:
        np.testing.assert_allclose(averaged[group], std[group].mean())
    assert not np.shares_memory(averaged, std)
