"""HumanML3D joints or features -> a BVH file that Blender, Unity or Unreal import: `joints_to_bvh`,
`features_to_bvh`.

The file holds the 22-joint skeleton in a T-pose rest pose, with one rotation per joint found by inverse
kinematics (and positions on the root and the six joints that leave the two branching joints).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from moscale.motion.bvh import POSITION_CHANNELS, BvhMotion, write_bvh
from moscale.motion.representation import (
    HUMANML3D,
    HUMANML3D_JOINT_NAMES,
    qbetween,
    quaternion_to_matrix,
    recover_from_ric,
)

# Rest pose of the exported skeleton: a T-pose facing +z (y up, the body's left on +x). Bones leaving the two
# branching joints (the pelvis and spine3) are not listed: their rest offsets come from the motion itself.
_REST_DIRECTIONS = {
    4: (0, -1, 0),
    5: (0, -1, 0),
    6: (0, 1, 0),
    7: (0, -1, 0),
    8: (0, -1, 0),
    9: (0, 1, 0),
    10: (0, 0, 1),
    11: (0, 0, 1),
    15: (0, 1, 0),
    16: (1, 0, 0),
    17: (-1, 0, 0),
    18: (1, 0, 0),
    19: (-1, 0, 0),
    20: (1, 0, 0),
    21: (-1, 0, 0),
}
# The pelvis and spine3 each have three children, which move independently in real data (a CMU lower back
# bends apart from the hips); one rotation cannot place all three, so these six joints get position channels.
_BRANCH_CHILDREN = (1, 2, 3, 12, 13, 14)
# End Sites show the last bone of each chain in viewers: (direction, length as a fraction of the parent bone).
_END_SITES = {
    10: ((0, 0, 1), 0.5),
    11: ((0, 0, 1), 0.5),
    15: ((0, 1, 0), 1.0),
    20: ((1, 0, 0), 0.3),
    21: ((-1, 0, 0), 0.3),
}
_EXPORT_CHANNEL_ORDER = "ZXY"  # intrinsic; the middle angle (pitch) rarely reaches +-90 degrees


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frame(x_axis: np.ndarray, y_axis: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) whose x column follows `x_axis` and y column `y_axis` (made orthogonal)."""
    x = _normalize(x_axis)
    y = _normalize(y_axis - (y_axis * x).sum(-1, keepdims=True) * x)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def _turn_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest-arc rotation matrices (T, 3, 3) turning directions a onto b."""
    return quaternion_to_matrix(qbetween(a, b))


def joints_to_bvh(
    joints,
    path: str | Path,
    fps: float = 20.0,
    units_per_metre: float = 1.0,
) -> BvhMotion:
    """Write HumanML3D joint positions (T, 22, 3), metres, y up, as a BVH file on the 22-joint skeleton.

    The rest pose is a T-pose with the motion's own median bone lengths. Every joint gets a rotation found by
    inverse kinematics (the shortest turn from its parent's orientation that points its bone at the child,
    so limbs carry no twist); the root and the six joints that leave the pelvis and spine3 also get positions.
    Re-importing the file gives back the joints up to the variation of the bone lengths over time (none for
    processed HumanML3D data).

    Args:
        joints: (T, 22, 3) array (numpy or torch).
        path: where to write the .bvh file.
        fps: frame rate of `joints` (HumanML3D: 20).
        units_per_metre: file units per metre (1 for Blender, 100 for centimetre rigs).

    Returns:
        The `BvhMotion` that was written.
    """
    if hasattr(joints, "detach"):
        joints = joints.detach().cpu().numpy()
    joints_TK3 = np.asarray(joints, dtype=np.float64)
    if joints_TK3.ndim != 3 or joints_TK3.shape[1:] != (22, 3):
        raise ValueError(
            f"joints must have shape (T, 22, 3), got {joints_TK3.shape}; features (T, 263) go through features_to_bvh"
        )
    if not np.isfinite(joints_TK3).all():
        raise ValueError("joints contain NaN or infinite values")
    if fps <= 0 or units_per_metre <= 0:
        raise ValueError(f"fps and units_per_metre must be positive, got {fps} and {units_per_metre}")
    joints_TK3 = joints_TK3 * units_per_metre
    parents = HUMANML3D.parents
    num_frames, num_joints = joints_TK3.shape[:2]
    children = {j: [c for c in range(num_joints) if parents[c] == j] for j in range(num_joints)}
    bones_TK3 = joints_TK3 - joints_TK3[:, list(np.maximum(parents, 0))]
    lengths_K = np.median(np.linalg.norm(bones_TK3, axis=-1), axis=0)
    if lengths_K[1:].min() <= 1e-9:
        raise ValueError("some bones have zero length: the joints do not look like a HumanML3D skeleton")

    global_TK33 = np.zeros((num_frames, num_joints, 3, 3))
    global_TK33[:, 0] = _frame(joints_TK3[:, 1] - joints_TK3[:, 2], bones_TK3[:, 3])
    offsets_K3 = np.zeros((num_joints, 3))
    for joint in range(1, num_joints):  # parents come first in HumanML3D order
        parent = parents[joint]
        if joint in _BRANCH_CHILDREN:
            local_T3 = np.einsum("tji,tj->ti", global_TK33[:, parent], bones_TK3[:, joint])
            offsets_K3[joint] = np.median(local_T3, axis=0)
        else:
            offsets_K3[joint] = lengths_K[joint] * np.asarray(_REST_DIRECTIONS[joint], dtype=np.float64)
        if joint == 9:  # spine3 carries the shoulders: orient it by the collars and the neck
            global_TK33[:, 9] = _frame(joints_TK3[:, 13] - joints_TK3[:, 14], bones_TK3[:, 12])
        elif children[joint]:
            child = children[joint][0]
            rest_T3 = np.einsum("tij,j->ti", global_TK33[:, parent], _REST_DIRECTIONS[child])
            global_TK33[:, joint] = _turn_between(rest_T3, bones_TK3[:, child]) @ global_TK33[:, parent]
        else:
            global_TK33[:, joint] = global_TK33[:, parent]

    columns = []
    channels: list[tuple[str, ...]] = []
    rotation_names = tuple(f"{axis}rotation" for axis in _EXPORT_CHANNEL_ORDER)
    for joint in range(num_joints):
        parent = parents[joint]
        local_T33 = (
            global_TK33[:, joint]
            if parent < 0
            else (np.swapaxes(global_TK33[:, parent], -1, -2) @ global_TK33[:, joint])
        )
        if parent < 0 or joint in _BRANCH_CHILDREN:
            channels.append(POSITION_CHANNELS + rotation_names)
            position_T3 = (
                joints_TK3[:, 0] if parent < 0 else np.einsum("tji,tj->ti", global_TK33[:, parent], bones_TK3[:, joint])
            )
            columns.append(position_T3)
        else:
            channels.append(rotation_names)
        angles_T3 = Rotation.from_matrix(local_T33).as_euler(_EXPORT_CHANNEL_ORDER, degrees=True)
        columns.append(np.unwrap(angles_T3, period=360.0, axis=0))

    end_sites = {
        joint: lengths_K[joint] * fraction * np.asarray(direction, dtype=np.float64)
        for joint, (direction, fraction) in _END_SITES.items()
    }
    # The rest pose stands on the ground (y = 0) at the origin; the root's position channels place each frame.
    rest_J3 = np.zeros((num_joints, 3))
    for joint in range(1, num_joints):
        rest_J3[joint] = rest_J3[parents[joint]] + offsets_K3[joint]
    offsets_K3[0] = (0.0, -rest_J3[:, 1].min(), 0.0)
    motion = BvhMotion(
        names=list(HUMANML3D_JOINT_NAMES),
        parents=list(parents),
        offsets_J3=offsets_K3,
        channels=channels,
        frame_time=1.0 / fps,
        values_FC=np.concatenate(columns, axis=1),
        end_sites=end_sites,
    )
    write_bvh(path, motion)
    return motion


def features_to_bvh(features, path: str | Path, fps: float = 20.0, units_per_metre: float = 1.0) -> BvhMotion:
    """Write un-normalised HumanML3D features (T, 263) as a BVH file (see `joints_to_bvh`)."""
    features = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features)
    if features.ndim != 2 or features.shape[1] != HUMANML3D.feature_dim:
        raise ValueError(f"features must have shape (T, {HUMANML3D.feature_dim}), got {features.shape}")
    return joints_to_bvh(recover_from_ric(features.astype(np.float32)), path, fps, units_per_metre)
