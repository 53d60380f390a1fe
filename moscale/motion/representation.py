"""The HumanML3D and KIT-ML motion representation: skeletons, joints -> features and features -> joints.

A motion of T frames is a `(T, feature_dim)` array. For HumanML3D (22 joints, 20 fps, 263 dims) the columns are

    [0:1]     root angular velocity about y (a half angle per frame, see `recover_root_rot_pos`)
    [1:3]     root linear velocity in the xz plane, in the root's own heading frame
    [3:4]     root height
    [4:67]    joints 1..21 relative to the root in x and z (absolute y), in the root's heading frame
    [67:193]  6D rotations of joints 1..21 (first two columns of each rotation matrix)
    [193:259] velocities of all 22 joints, in the root's heading frame
    [259:263] foot contacts (left heel, left toe, right ankle, right toe)

KIT-ML uses the same layout for 21 joints (251 dims, 12.5 fps).

`recover_from_ric` works on numpy arrays and torch tensors of any leading batch shape and returns the same kind.
`features_from_joints` reproduces the processing that made the released HumanML3D `new_joint_vecs`, including
the two places where the release departs from the published script (see docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

__all__ = [
    "HUMANML3D",
    "HUMANML3D_BONE_LENGTHS",
    "HUMANML3D_JOINT_NAMES",
    "KIT_ML",
    "SkeletonSpec",
    "UNIT_LENGTH",
    "average_std_within_groups",
    "features_from_joints",
    "forward_kinematics",
    "inverse_kinematics",
    "offsets_from_joints",
    "qbetween",
    "qinv",
    "qmul",
    "qrot",
    "rebuild_dropped_frame",
    "recover_from_ric",
    "recover_root_rot_pos",
    "skeleton_for",
    "target_offsets",
    "uniform_skeleton",
]

UNIT_LENGTH = 4
"""Frames per step of the motion encoders (MoScale's tokenizer, the T2M evaluator): clip lengths are cropped to
multiples of it, and one latent step covers this many frames."""


@dataclass(frozen=True)
class SkeletonSpec:
    """Everything the feature processing needs to know about one dataset's skeleton."""

    name: str
    joints_num: int
    feature_dim: int
    fps: float
    kinematic_chain: tuple[tuple[int, ...], ...]
    raw_offsets: tuple[tuple[int, int, int], ...]
    # Joints whose bones set the leg length used to rescale a source skeleton onto the target.
    leg_joints: tuple[int, int]
    foot_left: tuple[int, int]
    foot_right: tuple[int, int]
    # (right hip, left hip, right shoulder, left shoulder) as the processing script reads them.
    face_joints: tuple[int, int, int, int]
    feet_threshold: float

    @property
    def parents(self) -> tuple[int, ...]:
        parents = [-1] * self.joints_num
        for chain in self.kinematic_chain:
            for parent, child in zip(chain[:-1], chain[1:]):
                parents[child] = parent
        return tuple(parents)

    @property
    def raw_offsets_array(self) -> np.ndarray:
        return np.asarray(self.raw_offsets, dtype=np.float64)

    @property
    def feature_groups(self) -> tuple[slice, ...]:
        """The column ranges of the layout: root rotation velocity, root xz velocity, root height, root-relative
        positions, 6D rotations, local velocities, foot contacts."""
        positions = 4 + (self.joints_num - 1) * 3
        rotations = positions + (self.joints_num - 1) * 6
        velocities = rotations + self.joints_num * 3
        bounds = (0, 1, 3, 4, positions, rotations, velocities, self.feature_dim)
        return tuple(slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]))


HUMANML3D = SkeletonSpec(
    name="humanml3d",
    joints_num=22,
    feature_dim=263,
    fps=20.0,
    kinematic_chain=(
        (0, 2, 5, 8, 11),
        (0, 1, 4, 7, 10),
        (0, 3, 6, 9, 12, 15),
        (9, 14, 17, 19, 21),
        (9, 13, 16, 18, 20),
    ),
    raw_offsets=(
        (0, 0, 0),
        (1, 0, 0),
        (-1, 0, 0),
        (0, 1, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, 1, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, 1, 0),
        (0, 0, 1),
        (0, 0, 1),
        (0, 1, 0),
        (1, 0, 0),
        (-1, 0, 0),
        (0, 0, 1),
        (0, -1, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, -1, 0),
    ),
    leg_joints=(5, 8),
    foot_left=(7, 10),
    foot_right=(8, 11),
    face_joints=(2, 1, 17, 16),
    feet_threshold=0.002,
)

KIT_ML = SkeletonSpec(
    name="kit-ml",
    joints_num=21,
    feature_dim=251,
    fps=12.5,
    kinematic_chain=((0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4), (3, 5, 6, 7), (3, 8, 9, 10)),
    raw_offsets=(
        (0, 0, 0),
        (0, 1, 0),
        (0, 1, 0),
        (0, 1, 0),
        (0, 1, 0),
        (1, 0, 0),
        (0, -1, 0),
        (0, -1, 0),
        (-1, 0, 0),
        (0, -1, 0),
        (0, -1, 0),
        (1, 0, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, 0, 1),
        (0, 0, 1),
        (-1, 0, 0),
        (0, -1, 0),
        (0, -1, 0),
        (0, 0, 1),
        (0, 0, 1),
    ),
    leg_joints=(17, 18),
    foot_left=(19, 20),
    foot_right=(14, 15),
    face_joints=(11, 16, 5, 8),
    # The value the public KIT-ML processing passes; KIT-ML joints are in millimetres, so it is in mm^2.
    feet_threshold=0.05,
)

# Bone lengths (metres) of the skeleton every HumanML3D clip is retargeted to, joint j to its parent. Mean over
# the 170 frames of new_joints/012314.npy (spread 2.4e-7 m); all processed clips share these lengths.
HUMANML3D_BONE_LENGTHS = np.array(
    [
        0.0,
        0.10307396,
        0.10988336,
        0.13156823,
        0.39362319,
        0.39018822,
        0.14319022,
        0.43243300,
        0.42564340,
        0.05736474,
        0.14338179,
        0.14941905,
        0.21936005,
        0.13748679,
        0.14338281,
        0.10303921,
        0.13161396,
        0.12298439,
        0.25683990,
        0.26309186,
        0.26601182,
        0.26987629,
    ],
    dtype=np.float64,
)

# The 22 HumanML3D joints by index, as the BVH files of `moscale.motion.bvh_export` name them (l_foot: the toes).
HUMANML3D_JOINT_NAMES = (
    "pelvis",
    "l_hip",
    "r_hip",
    "spine1",
    "l_knee",
    "r_knee",
    "spine2",
    "l_ankle",
    "r_ankle",
    "spine3",
    "l_foot",
    "r_foot",
    "neck",
    "l_collar",
    "r_collar",
    "head",
    "l_shoulder",
    "r_shoulder",
    "l_elbow",
    "r_elbow",
    "l_wrist",
    "r_wrist",
)


def average_std_within_groups(std: np.ndarray, spec: SkeletonSpec = HUMANML3D) -> np.ndarray:
    """The dataset standard deviation as HumanML3D's Std.npy holds it: averaged within each feature group, so that
    normalising keeps every group's internal proportions."""
    std = np.array(std, dtype=np.float64)
    for group in spec.feature_groups:
        std[group] = std[group].mean()
    return std


def skeleton_for(joints_num: int) -> SkeletonSpec:
    """The skeleton with `joints_num` joints (22: HumanML3D, 21: KIT-ML)."""
    for spec in (HUMANML3D, KIT_ML):
        if spec.joints_num == joints_num:
            return spec
    raise ValueError(f"No skeleton has {joints_num} joints: use 22 (HumanML3D) or 21 (KIT-ML).")


def target_offsets(spec: SkeletonSpec = HUMANML3D) -> np.ndarray:
    """(J, 3) offsets of the target skeleton: each joint's raw direction times its bone length."""
    if spec is not HUMANML3D and spec != HUMANML3D:
        raise ValueError(
            f"No built-in target skeleton for {spec.name}: pass offsets measured on one of its processed clips "
            "(`offsets_from_joints(new_joints[0], spec)`)."
        )
    return spec.raw_offsets_array * HUMANML3D_BONE_LENGTHS[:, None]


def offsets_from_joints(joints_J3: np.ndarray, spec: SkeletonSpec = HUMANML3D) -> np.ndarray:
    """(J, 3) offsets whose lengths are the bone lengths of one pose (raw direction times bone length)."""
    joints_J3 = np.asarray(joints_J3, dtype=np.float64)
    parents = np.array(spec.parents)
    lengths = np.linalg.norm(joints_J3[1:] - joints_J3[parents[1:]], axis=-1)
    return spec.raw_offsets_array * np.concatenate([[0.0], lengths])[:, None]


# ----------------------------------------------------------------------------------------------------------------
# Quaternions (w, x, y, z), numpy or torch, broadcasting over leading dimensions.


def _cross(a, b):
    if isinstance(a, torch.Tensor):
        return torch.linalg.cross(a, b, dim=-1)
    return np.cross(a, b, axis=-1)


def _cat(parts):
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def qinv(q):
    """Inverse of a unit quaternion."""
    return _cat([q[..., :1], -q[..., 1:]])


def qmul(q, r):
    """Hamilton product q * r."""
    w1, x1, y1, z1 = (q[..., i : i + 1] for i in range(4))
    w2, x2, y2, z2 = (r[..., i : i + 1] for i in range(4))
    return _cat(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def qrot(q, v):
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    qvec = q[..., 1:]
    uv = _cross(qvec, v)
    uuv = _cross(qvec, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def qbetween(v0, v1):
    """The shortest-arc unit quaternion that turns direction v0 onto direction v1."""
    lib = torch if isinstance(v0, torch.Tensor) else np
    axis = _cross(v0, v1)
    w = lib.sqrt((v0**2).sum(-1, keepdims=True) * (v1**2).sum(-1, keepdims=True)) + (v0 * v1).sum(-1, keepdims=True)
    q = _cat([w, axis])
    norm = lib.sqrt((q**2).sum(-1, keepdims=True))
    # Opposite directions have no unique shortest arc: turn half a circle about an axis normal to v0.
    opposite = norm[..., 0] < 1e-8 * lib.sqrt((v0**2).sum(-1) * (v1**2).sum(-1))
    if opposite.any():
        x_axis = lib.zeros_like(v0)
        x_axis[..., 0] = 1
        y_axis = lib.zeros_like(v0)
        y_axis[..., 1] = 1
        along_x = lib.abs(v0[..., 0:1]) > 0.9 * lib.sqrt((v0**2).sum(-1, keepdims=True))
        normal = _cross(v0, lib.where(along_x, y_axis, x_axis))
        half_turn = _cat([lib.zeros_like(w), normal / lib.sqrt((normal**2).sum(-1, keepdims=True))])
        return lib.where(opposite[..., None], half_turn, q / lib.where(opposite[..., None], 1, norm))
    return q / norm


def quaternion_to_matrix(q):
    """(..., 4) unit quaternions -> (..., 3, 3) rotation matrices."""
    lib = torch if isinstance(q, torch.Tensor) else np
    w, x, y, z = (q[..., i] for i in range(4))
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return lib.stack([lib.stack(row, -1) for row in rows], -2)


def quaternion_to_cont6d(q):
    """(..., 4) -> (..., 6): the first two columns of the rotation matrix, column after column."""
    matrix = quaternion_to_matrix(q)
    return _cat([matrix[..., 0], matrix[..., 1]])


# ----------------------------------------------------------------------------------------------------------------
# Kinematics.


def _unit_facing(vectors_T3: np.ndarray, spec: SkeletonSpec) -> np.ndarray:
    norms_T1 = np.linalg.norm(vectors_T3, axis=-1, keepdims=True)
    degenerate = np.flatnonzero(norms_T1[:, 0] < 1e-12)
    if len(degenerate):
        raise ValueError(
            f"The hips and shoulders {spec.face_joints} give no facing direction in frames "
            f"{degenerate[:10].tolist()} (their left-right vector is vertical or zero): check the joint order."
        )
    return vectors_T3 / norms_T1


def inverse_kinematics(
    joints_TJ3: np.ndarray, spec: SkeletonSpec = HUMANML3D, smooth_forward: bool = True
) -> np.ndarray:
    """Local joint rotations (T, J, 4) that turn each raw bone direction onto the observed bone.

    The root rotation turns the body's forward direction onto +Z about y (smoothed over time with a Gaussian of
    sigma 20 frames, as HumanML3D does) and is the identity at frame 0, as in the released data. Every chain,
    the two arm chains that start at the upper spine included, starts from the root rotation: this is how the
    released 6D features were made, so the "local" rotations of the hips, the lower spine and the collars are
    relative to the root heading.
    """
    joints_TJ3 = np.asarray(joints_TJ3, dtype=np.float64)
    # HumanML3D's IK unpacks the face joints in another order than the facing step of the processing does, so
    # its "across" vector is (j1 - j2) + (j17 - j16) for HumanML3D; the released features depend on it.
    first_hip, second_hip, right_shoulder, left_shoulder = spec.face_joints
    across_T3 = (joints_TJ3[:, second_hip] - joints_TJ3[:, first_hip]) + (
        joints_TJ3[:, right_shoulder] - joints_TJ3[:, left_shoulder]
    )
    across_T3 = _unit_facing(across_T3, spec)
    forward_T3 = np.cross(np.array([[0.0, 1.0, 0.0]]), across_T3, axis=-1)
    if smooth_forward:
        forward_T3 = gaussian_filter1d(forward_T3, 20, axis=0, mode="nearest")
    forward_T3 = _unit_facing(forward_T3, spec)

    num_frames = len(joints_TJ3)
    root_quat_T4 = qbetween(forward_T3, np.tile([[0.0, 0.0, 1.0]], (num_frames, 1)))
    root_quat_T4[0] = (1.0, 0.0, 0.0, 0.0)

    raw_offsets = spec.raw_offsets_array
    quats_TJ4 = np.zeros((num_frames, spec.joints_num, 4))
    quats_TJ4[:, 0] = root_quat_T4
    for chain in spec.kinematic_chain:
        global_rot_T4 = root_quat_T4
        for parent, child in zip(chain[:-1], chain[1:]):
            bone_T3 = joints_TJ3[:, child] - joints_TJ3[:, parent]
            bone_T3 = bone_T3 / np.linalg.norm(bone_T3, axis=-1, keepdims=True)
            rest_T3 = np.broadcast_to(raw_offsets[child], bone_T3.shape)
            bone_rot_T4 = qbetween(rest_T3, bone_T3)
            local_T4 = qmul(qinv(global_rot_T4), bone_rot_T4)
            quats_TJ4[:, child] = local_T4
            global_rot_T4 = qmul(global_rot_T4, local_T4)
    return quats_TJ4


def forward_kinematics(
    quats_TJ4: np.ndarray, root_pos_T3: np.ndarray, offsets_J3: np.ndarray, spec: SkeletonSpec = HUMANML3D
) -> np.ndarray:
    """Joint positions (T, J, 3) from local rotations laid out as `inverse_kinematics` returns them."""
    quats_TJ4 = np.asarray(quats_TJ4, dtype=np.float64)
    joints_TJ3 = np.zeros(quats_TJ4.shape[:-1] + (3,))
    joints_TJ3[:, 0] = root_pos_T3
    for chain in spec.kinematic_chain:
        global_rot_T4 = quats_TJ4[:, 0]
        for parent, child in zip(chain[:-1], chain[1:]):
            global_rot_T4 = qmul(global_rot_T4, quats_TJ4[:, child])
            offset_T3 = np.broadcast_to(offsets_J3[child], joints_TJ3[:, child].shape)
            joints_TJ3[:, child] = qrot(global_rot_T4, offset_T3) + joints_TJ3[:, parent]
    return joints_TJ3


def uniform_skeleton(joints_TJ3: np.ndarray, offsets_J3: np.ndarray, spec: SkeletonSpec = HUMANML3D) -> np.ndarray:
    """Retarget joint positions onto the target bone lengths, keeping every bone's direction.

    The root trajectory is scaled by the ratio of leg lengths (target / source, measured at frame 0).
    """
    joints_TJ3 = np.asarray(joints_TJ3, dtype=np.float64)
    source_offsets_J3 = offsets_from_joints(joints_TJ3[0], spec)
    leg = list(spec.leg_joints)
    scale = np.abs(offsets_J3[leg]).max(-1).sum() / np.abs(source_offsets_J3[leg]).max(-1).sum()
    quats_TJ4 = inverse_kinematics(joints_TJ3, spec, smooth_forward=False)
    return forward_kinematics(quats_TJ4, joints_TJ3[:, 0] * scale, offsets_J3, spec)


# ----------------------------------------------------------------------------------------------------------------
# Joints -> features.


def _validate_joints(joints, spec: SkeletonSpec) -> np.ndarray:
    if isinstance(joints, torch.Tensor):
        joints = joints.detach().cpu().numpy()
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (spec.joints_num, 3):
        hint = ""
        if joints.ndim == 3 and joints.shape[1] in (HUMANML3D.joints_num, KIT_ML.joints_num):
            hint = " Pass spec=KIT_ML (and offsets) for 21-joint KIT-ML joints, spec=HUMANML3D for 22 joints."
        raise ValueError(
            f"Expected joints of shape (T+1, {spec.joints_num}, 3) for {spec.name}, got {tuple(joints.shape)}.{hint}"
        )
    if len(joints) < 2:
        raise ValueError("Need at least 2 frames of joints: T+1 frames make T feature rows.")
    if not np.isfinite(joints).all():
        raise ValueError("Joint positions contain NaN or infinite values.")
    # A bone of length zero has no direction, so the inverse kinematics would turn it into NaN rotations.
    parents = np.array(spec.parents)
    lengths_TJ = np.linalg.norm(joints[:, 1:] - joints[:, parents[1:]], axis=-1)
    if (lengths_TJ < 1e-6).any():
        frame, bone = (int(i) for i in np.argwhere(lengths_TJ < 1e-6)[0])
        raise ValueError(
            f"Joint {bone + 1} coincides with its parent joint {parents[bone + 1]} in frame {frame}: every bone needs "
            "a length to have a direction. Check the joint order (HumanML3D's 22 joints) and the source data."
        )
    return joints


def _validate_offsets(offsets, spec: SkeletonSpec) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.shape != (spec.joints_num, 3) or not np.isfinite(offsets).all():
        raise ValueError(
            f"offsets must be a finite ({spec.joints_num}, 3) array for {spec.name}, got shape {offsets.shape}; "
            "measure them on a processed clip with offsets_from_joints(new_joints[0], spec)."
        )
    if (np.linalg.norm(offsets[1:], axis=-1) <= 0).any():
        raise ValueError("offsets: every bone but the root's needs a non-zero length.")
    return offsets


def features_from_joints(
    joints,
    spec: SkeletonSpec = HUMANML3D,
    offsets: np.ndarray | None = None,
    feet_threshold: float | None = None,
) -> np.ndarray:
    """HumanML3D processing of raw joint positions: (T+1, J, 3) metres, y up -> (T, feature_dim) float32.

    Steps: retarget to the target skeleton's bone lengths, put the lowest joint on the floor, move the frame-0
    root to x = z = 0, rotate about y so that frame 0 faces +Z, detect foot contacts, then compute root
    velocities, root-relative positions, 6D rotations by inverse kinematics and local velocities.

    Args:
        joints: raw joint positions, T+1 frames (the last frame only feeds the velocities of row T-1).
        spec: `HUMANML3D` or `KIT_ML`.
        offsets: (J, 3) target skeleton offsets; default: the HumanML3D skeleton (required for KIT-ML).
        feet_threshold: squared displacement per frame under which a foot joint is in contact (default: the
            dataset's value, 0.002 m^2 for HumanML3D, 0.05 for KIT-ML in its millimetre units).
    """
    joints = _validate_joints(joints, spec)
    offsets = target_offsets(spec) if offsets is None else _validate_offsets(offsets, spec)
    feet_threshold = spec.feet_threshold if feet_threshold is None else feet_threshold

    positions = uniform_skeleton(joints, offsets, spec)
    positions[..., 1] -= positions[..., 1].min()
    root_start = positions[0, 0] * np.array([1.0, 0.0, 1.0])
    positions = positions - root_start

    right_hip, left_hip, right_shoulder, left_shoulder = spec.face_joints
    across = (positions[0, right_hip] - positions[0, left_hip]) + (
        positions[0, right_shoulder] - positions[0, left_shoulder]
    )
    forward = np.cross([0.0, 1.0, 0.0], across / np.linalg.norm(across))
    face_z = qbetween(forward / np.linalg.norm(forward), np.array([0.0, 0.0, 1.0]))
    positions = qrot(np.broadcast_to(face_z, positions.shape[:-1] + (4,)), positions)

    global_positions = positions
    step_sq = ((positions[1:] - positions[:-1]) ** 2).sum(-1)
    contacts_left = (step_sq[:, list(spec.foot_left)] < feet_threshold).astype(np.float64)
    contacts_right = (step_sq[:, list(spec.foot_right)] < feet_threshold).astype(np.float64)

    quats_TJ4 = inverse_kinematics(positions, spec, smooth_forward=True)
    cont6d_TJ6 = quaternion_to_cont6d(quats_TJ4)
    root_rot_T4 = quats_TJ4[:, 0]
    root_velocity = qrot(root_rot_T4[1:], positions[1:, 0] - positions[:-1, 0])
    root_rot_velocity = qmul(root_rot_T4[1:], qinv(root_rot_T4[:-1]))

    local = positions.copy()
    local[..., 0] -= local[:, 0:1, 0]
    local[..., 2] -= local[:, 0:1, 2]
    local = qrot(np.broadcast_to(root_rot_T4[:, None], local.shape[:-1] + (4,)), local)

    num_rows = len(positions) - 1
    root_data = np.concatenate(
        [np.arcsin(root_rot_velocity[:, 2:3]), root_velocity[:, [0, 2]], local[:-1, 0, 1:2]], axis=-1
    )
    ric_data = local[:-1, 1:].reshape(num_rows, -1)
    rot_data = cont6d_TJ6[:-1, 1:].reshape(num_rows, -1)
    local_velocity = qrot(
        np.broadcast_to(root_rot_T4[:-1, None], global_positions[1:].shape[:-1] + (4,)),
        global_positions[1:] - global_positions[:-1],
    ).reshape(num_rows, -1)
    features = np.concatenate([root_data, ric_data, rot_data, local_velocity, contacts_left, contacts_right], axis=-1)
    if not np.isfinite(features).all():
        bad_rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise ValueError(
            f"The processing gave NaN features in rows {bad_rows[:10].tolist()}: the joints of those frames make "
            "a degenerate pose (e.g. bones of zero length or exactly opposite to the rest pose); check the input."
        )
    return features.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Features -> joints.


def _as_tensor(data):
    if isinstance(data, torch.Tensor):
        return data, False
    array = np.asarray(data)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    return torch.from_numpy(array), True


def recover_root_rot_pos(features):
    """Root heading quaternions (..., T, 4) and root positions (..., T, 3) from features (..., T, D).

    The heading starts at the identity and integrates the per-frame half-angle velocity of column 0; the root
    xz position integrates the velocities of columns 1:3 rotated back into the world frame; y is column 3.
    """
    data, to_numpy = _as_tensor(features)
    rot_velocity = data[..., 0]
    angle = torch.zeros_like(rot_velocity)
    angle[..., 1:] = rot_velocity[..., :-1]
    angle = torch.cumsum(angle, dim=-1)

    root_quat = torch.zeros(data.shape[:-1] + (4,), dtype=data.dtype, device=data.device)
    root_quat[..., 0] = torch.cos(angle)
    root_quat[..., 2] = torch.sin(angle)

    root_pos = torch.zeros(data.shape[:-1] + (3,), dtype=data.dtype, device=data.device)
    root_pos[..., 1:, 0] = data[..., :-1, 1]
    root_pos[..., 1:, 2] = data[..., :-1, 2]
    root_pos = qrot(qinv(root_quat), root_pos)
    root_pos = torch.cumsum(root_pos, dim=-2)
    root_pos[..., 1] = data[..., 3]
    if to_numpy:
        return root_quat.numpy(), root_pos.numpy()
    return root_quat, root_pos


def recover_from_ric(features, joints_num: int = 22):
    """Global joint positions (..., T, joints_num, 3) from features (..., T, D); numpy in, numpy out."""
    data, to_numpy = _as_tensor(features)
    expected_dim = skeleton_for(joints_num).feature_dim
    if data.shape[-1] != expected_dim:
        raise ValueError(
            f"Features for {joints_num} joints have {expected_dim} dims, got {data.shape[-1]}: pass the matching "
            "joints_num (22 for HumanML3D, 21 for KIT-ML) or un-normalised features of the right dataset."
        )
    root_quat, root_pos = recover_root_rot_pos(data)
    local = data[..., 4 : (joints_num - 1) * 3 + 4].reshape(data.shape[:-1] + (joints_num - 1, 3))
    heading = qinv(root_quat)[..., None, :].expand(local.shape[:-1] + (4,))
    positions = qrot(heading, local)
    positions = (
        positions
        + torch.stack([root_pos[..., 0], torch.zeros_like(root_pos[..., 0]), root_pos[..., 2]], dim=-1)[..., None, :]
    )
    positions = torch.cat([root_pos[..., None, :], positions], dim=-2)
    return positions.numpy() if to_numpy else positions


def rebuild_dropped_frame(features, joints) -> np.ndarray:
    """The raw frame T that the released HumanML3D data dropped, from the last feature row and frame T-1.

    HumanML3D made T feature rows from T+1 processed frames but kept only T frames of joints. The last row's
    local velocities, turned back into the world frame, give the missing frame exactly:
    joints[T] = joints[T-1] + R_y(theta[T-1])^-1 local_velocity[T-1].
    """
    features = np.asarray(features, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or features.ndim != 2 or len(features) != len(joints):
        raise ValueError(
            f"Expected features (T, D) and their joints (T, J, 3) with the same T, got {features.shape} and "
            f"{joints.shape}."
        )
    joints_num = joints.shape[-2]
    feature_dim = skeleton_for(joints_num).feature_dim
    if features.shape[-1] != feature_dim:
        raise ValueError(f"Features of {joints_num} joints have {feature_dim} dims, got {features.shape[-1]}.")
    root_quat, _ = recover_root_rot_pos(features)
    velocity_start = 4 + (joints_num - 1) * 9
    last_velocity = features[-1, velocity_start : velocity_start + joints_num * 3].reshape(joints_num, 3)
    heading = np.broadcast_to(qinv(np.asarray(root_quat[-1], dtype=np.float64)), (joints_num, 4))
    return joints[-1] + qrot(heading, last_velocity)
