"""The synthetic performer: a HumanML3D-sized body posed from a few per-frame channels.

The body has the bone lengths of the skeleton every HumanML3D clip is retargeted to (`HUMANML3D_BONE_LENGTHS`),
so the features written from it need no rescaling. Coordinates are metres, y up; at yaw 0 the body faces +Z and
its left side is +X, as in HumanML3D.

The legs are solved by two-bone inverse kinematics from ankle targets, so a planted foot stays exactly where it
was put (no foot sliding by construction). The spine, head and arms are placed by forward kinematics: each joint
is its parent plus a rotated rest direction times its bone length. Every bone therefore keeps its length exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moscale.motion.representation import HUMANML3D_BONE_LENGTHS

(
    PELVIS,
    L_HIP,
    R_HIP,
    SPINE1,
    L_KNEE,
    R_KNEE,
    SPINE2,
    L_ANKLE,
    R_ANKLE,
    SPINE3,
    L_FOOT,
    R_FOOT,
    NECK,
    L_COLLAR,
    R_COLLAR,
    HEAD,
    L_SHOULDER,
    R_SHOULDER,
    L_ELBOW,
    R_ELBOW,
    L_WRIST,
    R_WRIST,
) = range(22)

LEFT, RIGHT = 0, 1
SIDE_NAMES = ("left", "right")
# x sign of each side: the left side of a body facing +Z is +X.
SIDE_SIGN = (1.0, -1.0)
HIP = (L_HIP, R_HIP)
KNEE = (L_KNEE, R_KNEE)
ANKLE = (L_ANKLE, R_ANKLE)
TOE = (L_FOOT, R_FOOT)
COLLAR = (L_COLLAR, R_COLLAR)
SHOULDER = (L_SHOULDER, R_SHOULDER)
ELBOW = (L_ELBOW, R_ELBOW)
WRIST = (L_WRIST, R_WRIST)

BONE = HUMANML3D_BONE_LENGTHS
THIGH = tuple(float(BONE[j]) for j in KNEE)
SHIN = tuple(float(BONE[j]) for j in ANKLE)
FOOT = tuple(float(BONE[j]) for j in TOE)
LEG_REACH = tuple(t + s for t, s in zip(THIGH, SHIN))

# Rest directions of the left-side and central bones in the body frame (x left, y up, z forward); the right side
# mirrors x. They follow the bone directions of a standing HumanML3D body: the hips sit below the pelvis, the
# upper spine leans forward, the collars rise towards the shoulders.
_REST_DIRECTION = {
    L_HIP: (0.80, -0.58, 0.05),
    SPINE1: (0.0, 0.95, -0.30),
    SPINE2: (0.0, 0.97, 0.25),
    SPINE3: (0.0, 0.60, 0.80),
    NECK: (0.0, 0.95, 0.30),
    HEAD: (0.0, 0.85, 0.52),
    L_COLLAR: (0.30, 0.94, 0.15),
    L_SHOULDER: (0.97, -0.10, 0.20),
}

# A flat foot points forward and down from the ankle to the toe joint, whose height above the floor is TOE_HEIGHT.
FOOT_PITCH = float(np.arcsin(0.30))
TOE_HEIGHT = 0.01
ANKLE_HEIGHT = tuple(TOE_HEIGHT + f * np.sin(FOOT_PITCH) for f in FOOT)
# Standing hip-to-ankle distance as a fraction of the leg's reach: the longer leg's knee stands bent about
# 16 degrees, the shorter one's about 11.
STAND_EXTENSION = 0.995


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rest_offset(joint: int) -> np.ndarray:
    """Offset (3,) of `joint` from its parent in the body frame, for the bones placed by forward kinematics."""
    mirrored = {R_HIP: L_HIP, R_COLLAR: L_COLLAR, R_SHOULDER: L_SHOULDER}
    direction = np.array(_REST_DIRECTION[mirrored.get(joint, joint)], dtype=np.float64)
    if joint in mirrored:
        direction[0] = -direction[0]
    return _unit(direction) * BONE[joint]


def standing_pelvis_height() -> float:
    """Pelvis height of the neutral standing pose (the lower of the two legs decides)."""
    return min(ANKLE_HEIGHT[s] + STAND_EXTENSION * LEG_REACH[s] - rest_offset(HIP[s])[1] for s in (LEFT, RIGHT))


def rot_y(angle):
    """Rotation matrices (..., 3, 3) about +y (a positive angle turns +Z towards +X, i.e. to the body's left)."""
    c, s = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1), np.stack([-s, zero, c], -1)], -2)


def rot_x(angle):
    """Rotation matrices (..., 3, 3) about +x (a positive angle tips +Y towards +Z, i.e. a forward lean)."""
    c, s = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([one, zero, zero], -1), np.stack([zero, c, -s], -1), np.stack([zero, s, c], -1)], -2)


def rot_z(angle):
    """Rotation matrices (..., 3, 3) about +z (a positive angle turns -Y towards +X)."""
    c, s = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)], -2)


def _apply(matrix_T33, vector):
    return np.einsum("tij,...tj->...ti", matrix_T33, np.broadcast_to(vector, matrix_T33.shape[:-1]))


@dataclass
class PoseChannels:
    """Per-frame controls of the body, T frames. Angles in radians, positions in metres (world frame).

    Arms are set by shoulder flexion (forward raise), abduction (sideways raise) and elbow flexion; `bend_up`
    chooses the plane in which the elbow bends, from forward-and-up (0) to straight up (1, used for waving).
    """

    pelvis_T3: np.ndarray
    yaw_T: np.ndarray
    lean_T: np.ndarray
    ankle_2T3: np.ndarray
    foot_yaw_2T: np.ndarray
    foot_pitch_2T: np.ndarray
    arm_flex_2T: np.ndarray
    arm_abduct_2T: np.ndarray
    elbow_2T: np.ndarray
    bend_up_2T: np.ndarray
    ik_clamped_frames: int = field(default=0)


def _two_bone_ik(hip_T3, ankle_T3, thigh, shin, pole_T3):
    """Knee positions and reachable ankle positions; the knee bends towards `pole`. Also the clamped-frame count."""
    reach_T3 = ankle_T3 - hip_T3
    distance_T = np.linalg.norm(reach_T3, axis=-1)
    longest = (thigh + shin) * (1.0 - 1e-4)
    shortest = abs(thigh - shin) + 1e-3
    clamped = int(((distance_T > longest) | (distance_T < shortest)).sum())
    distance_T = np.clip(distance_T, shortest, longest)
    axis_T3 = reach_T3 / np.linalg.norm(reach_T3, axis=-1, keepdims=True)
    cos_hip = (thigh**2 + distance_T**2 - shin**2) / (2 * thigh * distance_T)
    sin_hip = np.sqrt(np.clip(1.0 - cos_hip**2, 0.0, 1.0))
    bend_T3 = pole_T3 - (pole_T3 * axis_T3).sum(-1, keepdims=True) * axis_T3
    bend_T3 = _unit(bend_T3)
    knee_T3 = hip_T3 + thigh * (cos_hip[:, None] * axis_T3 + sin_hip[:, None] * bend_T3)
    return knee_T3, hip_T3 + axis_T3 * distance_T[:, None], clamped


def arm_directions(side: int, flex_T, abduct_T, elbow_T, bend_up_T):
    """Upper-arm and forearm unit directions (T, 3) in the heading frame."""
    sign = SIDE_SIGN[side]
    down = np.array([0.0, -1.0, 0.0])
    upper_T3 = _apply(rot_z(sign * abduct_T) @ rot_x(-flex_T), down)
    # The elbow bends towards a reference that blends forward-and-up (a relaxed arm) with straight up (a wave).
    reference_T3 = _unit((1.0 - bend_up_T)[:, None] * _unit([0.0, 1.0, 1.0]) + bend_up_T[:, None] * [0.0, 1.0, 0.0])
    bend_T3 = _unit(reference_T3 - (reference_T3 * upper_T3).sum(-1, keepdims=True) * upper_T3)
    forearm_T3 = np.cos(elbow_T)[:, None] * upper_T3 + np.sin(elbow_T)[:, None] * bend_T3
    return upper_T3, forearm_T3


def pose_to_joints(channels: PoseChannels) -> np.ndarray:
    """Joint positions (T, 22, 3) of the posed body; also stores the IK clamp count in `channels`."""
    num_frames = len(channels.yaw_T)
    joints = np.zeros((num_frames, 22, 3))
    heading_T33 = rot_y(channels.yaw_T)
    joints[:, PELVIS] = channels.pelvis_T3

    # Spine and head: the lean is spread over the spine; the head keeps itself more upright.
    lean_share = {SPINE1: 0.5, SPINE2: 1.0, SPINE3: 1.0, NECK: 0.8, HEAD: 0.5}
    for joint, parent in ((SPINE1, PELVIS), (SPINE2, SPINE1), (SPINE3, SPINE2), (NECK, SPINE3), (HEAD, NECK)):
        rotation = heading_T33 @ rot_x(lean_share[joint] * channels.lean_T)
        joints[:, joint] = joints[:, parent] + _apply(rotation, rest_offset(joint))
    chest_T33 = heading_T33 @ rot_x(channels.lean_T)

    for side in (LEFT, RIGHT):
        joints[:, COLLAR[side]] = joints[:, SPINE3] + _apply(chest_T33, rest_offset(COLLAR[side]))
        joints[:, SHOULDER[side]] = joints[:, COLLAR[side]] + _apply(chest_T33, rest_offset(SHOULDER[side]))
        upper_T3, forearm_T3 = arm_directions(
            side,
            channels.arm_flex_2T[side],
            channels.arm_abduct_2T[side],
            channels.elbow_2T[side],
            channels.bend_up_2T[side],
        )
        # Arms hang in the heading frame (gravity), not in the leaning chest frame.
        joints[:, ELBOW[side]] = joints[:, SHOULDER[side]] + _apply(heading_T33, upper_T3) * BONE[ELBOW[side]]
        joints[:, WRIST[side]] = joints[:, ELBOW[side]] + _apply(heading_T33, forearm_T3) * BONE[WRIST[side]]

    clamped = 0
    for side in (LEFT, RIGHT):
        joints[:, HIP[side]] = joints[:, PELVIS] + _apply(heading_T33, rest_offset(HIP[side]))
        foot_yaw_T = channels.foot_yaw_2T[side]
        foot_forward_T3 = np.stack([np.sin(foot_yaw_T), np.zeros_like(foot_yaw_T), np.cos(foot_yaw_T)], -1)
        knee_T3, ankle_T3, side_clamped = _two_bone_ik(
            joints[:, HIP[side]], channels.ankle_2T3[side], THIGH[side], SHIN[side], foot_forward_T3
        )
        clamped += side_clamped
        joints[:, KNEE[side]] = knee_T3
        joints[:, ANKLE[side]] = ankle_T3
        pitch_T = FOOT_PITCH + channels.foot_pitch_2T[side]
        toe_T3 = np.cos(pitch_T)[:, None] * foot_forward_T3 - np.sin(pitch_T)[:, None] * [0.0, 1.0, 0.0]
        joints[:, TOE[side]] = ankle_T3 + FOOT[side] * toe_T3
    channels.ik_clamped_frames = clamped
    return joints
