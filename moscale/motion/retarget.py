"""Retargeting a BVH skeleton onto the 22 HumanML3D joints: `load_bvh_joints` and `bvh_to_features`.

Each HumanML3D joint is one BVH joint or a weighted blend of several (`JOINT_MAPPINGS` knows CMU and Mixamo-style
skeletons; `resolve_mapping` detects them or reads your own). The joints are then scaled to metres, turned y up and
resampled to 20 fps; `bvh_to_features` adds the HumanML3D processing (263-dim features).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from moscale.motion.bvh import BvhMotion, read_bvh
from moscale.motion.representation import (
    HUMANML3D,
    HUMANML3D_BONE_LENGTHS,
    HUMANML3D_JOINT_NAMES,
    features_from_joints,
)

# A mapping gives, for each HumanML3D joint, the BVH joint at the same place, or a weighted blend of BVH joint
# positions where the source skeleton has no joint there (weights sum to 1). Source skeletons place the spine
# and collar joints differently from SMPL, so these are approximate: only bone directions survive into the
# features, because the HumanML3D processing retargets every clip onto its own bone lengths.
_LIMBS = {
    "hip": "{side}UpLeg",
    "knee": "{side}Leg",
    "ankle": "{side}Foot",
    "foot": "{side}ToeBase",
    "shoulder": "{side}Arm",
    "elbow": "{side}ForeArm",
    "wrist": "{side}Hand",
}


def _sided(limbs: dict[str, str]) -> dict[str, str]:
    return {
        f"{s}_{joint}": name.format(side=side)
        for s, side in (("l", "Left"), ("r", "Right"))
        for joint, name in limbs.items()
    }


JOINT_MAPPINGS: dict[str, dict[str, str | dict[str, float]]] = {
    # CMU mocap as converted by amc2bvh (31 joints: Hips, LHipJoint, LeftUpLeg, ..., LowerBack, Spine, Spine1,
    # Neck, Neck1, Head, LeftShoulder, LeftArm, ...). Spine1 is the upper chest (Neck and LeftShoulder sit on it
    # with zero offsets), Neck1 the middle of the neck.
    "cmu": {
        "pelvis": "Hips",
        "spine1": "Spine",
        "spine2": {"Spine": 0.5, "Spine1": 0.5},
        "spine3": "Spine1",
        "neck": "Neck1",
        "head": "Head",
        "l_collar": {"Spine1": 0.5, "LeftArm": 0.5},
        "r_collar": {"Spine1": 0.5, "RightArm": 0.5},
        **_sided(_LIMBS),
    },
    # CMU mocap with anatomical joint names (LeftHip, LeftKnee, ..., lowerback, Chest, Chest2, LeftCollar,
    # LeftShoulder, LeftElbow, LeftWrist).
    "cmu-anatomical": {
        "pelvis": "Hips",
        "spine1": "Chest",
        "spine2": {"Chest": 0.5, "Chest2": 0.5},
        "spine3": "Chest2",
        "neck": "Neck",
        "head": "Head",
        "l_collar": {"Chest2": 0.5, "LeftShoulder": 0.5},
        "r_collar": {"Chest2": 0.5, "RightShoulder": 0.5},
        **_sided(
            {
                "hip": "{side}Hip",
                "knee": "{side}Knee",
                "ankle": "{side}Ankle",
                "foot": "{side}Toe",
                "shoulder": "{side}Shoulder",
                "elbow": "{side}Elbow",
                "wrist": "{side}Wrist",
            }
        ),
    },
    # Mixamo and the many rigs that copy its names (a "mixamorig:" style prefix is ignored).
    "mixamo": {
        "pelvis": "Hips",
        "spine1": "Spine",
        "spine2": "Spine1",
        "spine3": "Spine2",
        "neck": "Neck",
        "head": "Head",
        "l_collar": "LeftShoulder",
        "r_collar": "RightShoulder",
        **_sided(_LIMBS),
    },
    # The files that `joints_to_bvh` writes.
    "humanml3d": {joint: joint for joint in HUMANML3D_JOINT_NAMES},
}


def _bare_name(name: str) -> str:
    """Joint name without a namespace prefix ("mixamorig:Hips" -> "hips"), lower case."""
    return re.split(r"[:|]", name)[-1].lower()


def _blend_weights(mapping: dict, names: list[str], where: str) -> np.ndarray:
    """(22, J) matrix W with HumanML3D joints = W @ BVH joints, for a mapping (see `JOINT_MAPPINGS`)."""
    missing_keys = [joint for joint in HUMANML3D_JOINT_NAMES if joint not in mapping]
    unknown_keys = [key for key in mapping if key not in HUMANML3D_JOINT_NAMES]
    if missing_keys or unknown_keys:
        raise ValueError(
            f"{where}: a joint mapping needs exactly the 22 keys {list(HUMANML3D_JOINT_NAMES)}; "
            f"missing {missing_keys}, unknown {unknown_keys}"
        )
    index = {_bare_name(name): i for i, name in enumerate(names)}
    weights = np.zeros((len(HUMANML3D_JOINT_NAMES), len(names)))
    for row, joint in enumerate(HUMANML3D_JOINT_NAMES):
        source = mapping[joint]
        blend = {source: 1.0} if isinstance(source, str) else dict(source)
        for name, weight in blend.items():
            if _bare_name(name) not in index:
                raise ValueError(
                    f"{where}: joint {name!r} (for {joint}) is not in the BVH file, whose joints are {names}"
                )
            weights[row, index[_bare_name(name)]] += float(weight)
        if not np.isclose(weights[row].sum(), 1.0):
            raise ValueError(f"{where}: the weights for {joint} sum to {weights[row].sum()}, they must sum to 1")
    return weights


def resolve_mapping(names: list[str], mapping: str | dict | Path | None = None) -> tuple[str, np.ndarray]:
    """Pick the joint mapping for a BVH skeleton and return (its name, the (22, J) blend matrix).

    `mapping` is None (try the built-in mappings in order and take the first whose joints all exist), the name
    of a built-in mapping (`JOINT_MAPPINGS`), a dict, or the path of a JSON file holding such a dict.
    """
    if mapping is None:
        present = {_bare_name(n) for n in names}
        for key, candidate in JOINT_MAPPINGS.items():
            needed = {_bare_name(n) for v in candidate.values() for n in ([v] if isinstance(v, str) else v)}
            if needed <= present:
                return key, _blend_weights(candidate, names, f"mapping {key!r}")
        raise ValueError(
            f"No built-in joint mapping ({', '.join(JOINT_MAPPINGS)}) fits a skeleton with joints "
            f"{names}: write a JSON mapping (docs/io.md) and pass it as mapping="
        )
    if isinstance(mapping, str) and mapping in JOINT_MAPPINGS:
        return mapping, _blend_weights(JOINT_MAPPINGS[mapping], names, f"mapping {mapping!r}")
    if isinstance(mapping, (str, Path)):
        path = Path(mapping)
        if not path.is_file():
            raise FileNotFoundError(
                f"Joint mapping {mapping!r} is neither a built-in mapping "
                f"({', '.join(JOINT_MAPPINGS)}) nor an existing JSON file"
            )
        return str(path), _blend_weights(json.loads(path.read_text()), names, str(path))
    return "custom", _blend_weights(mapping, names, "custom mapping")


def _up_rotation(up_axis: str, up_vector: np.ndarray) -> np.ndarray:
    """Rotation matrix that turns the file's up axis onto +y ("auto": the axis nearest to `up_vector`)."""
    axes = {"x": 0, "y": 1, "z": 2}
    if up_axis == "auto":
        axis = int(np.argmax(np.abs(up_vector)))
        sign = 1.0 if up_vector[axis] > 0 else -1.0
    else:
        match = re.fullmatch(r"([+-]?)([xyz])", up_axis.lower())
        if match is None:
            raise ValueError(f"up_axis must be 'auto' or one of x, y, z, -x, -y, -z; got {up_axis!r}")
        axis, sign = axes[match.group(2)], -1.0 if match.group(1) == "-" else 1.0
    up = np.zeros(3)
    up[axis] = sign
    if up[1] == -1.0:  # upside down: half a turn about the forward axis z
        return np.diag([-1.0, -1.0, 1.0])
    rotation, _ = Rotation.align_vectors([[0.0, 1.0, 0.0]], [up])
    return rotation.as_matrix()


def resample(positions_F_: np.ndarray, source_fps: float, target_fps: float) -> np.ndarray:
    """Linear interpolation of frames (F, ...) at `source_fps` onto a `target_fps` grid over the same duration.

    Frames at exact multiples of the source period are copied (120 -> 20 fps keeps every 6th frame).
    """
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {source_fps} -> {target_fps}")
    num_frames = len(positions_F_)
    duration = (num_frames - 1) / source_fps
    times = np.arange(int(np.floor(duration * target_fps + 1e-6)) + 1) / target_fps
    position = np.minimum(times * source_fps, num_frames - 1)
    lower = np.floor(position + 1e-6).astype(int).clip(0, num_frames - 1)
    upper = np.minimum(lower + 1, num_frames - 1)
    weight = (position - lower).clip(0.0, 1.0).reshape((-1,) + (1,) * (positions_F_.ndim - 1))
    return positions_F_[lower] * (1.0 - weight) + positions_F_[upper] * weight


def load_bvh_joints(
    bvh: str | Path | BvhMotion,
    mapping: str | dict | Path | None = None,
    scale: float | str = "auto",
    up_axis: str = "auto",
    fps: float = 20.0,
) -> np.ndarray:
    """BVH file -> HumanML3D joint positions (T, 22, 3), metres, y up, at `fps`.

    Args:
        bvh: a path or a parsed `BvhMotion`.
        mapping: see `resolve_mapping` (None: detect CMU / Mixamo-style skeletons).
        scale: metres per file unit (0.01 for centimetres), or "auto" to size the skeleton so that its legs are
            as long as HumanML3D's (hip to ankle, 0.83 m); the features do not depend on it.
        up_axis: the file's up axis ("y", "z", "-z", ...) or "auto" (from the rest pose: feet to head).
        fps: output frame rate (HumanML3D: 20).
    """
    motion = bvh if isinstance(bvh, BvhMotion) else read_bvh(bvh)
    where = "BVH motion" if isinstance(bvh, BvhMotion) else str(bvh)
    if motion.num_frames < 2:
        raise ValueError(f"{where}: needs at least 2 frames, has {motion.num_frames}")
    _, weights_KJ = resolve_mapping(motion.names, mapping)
    rest_K3 = weights_KJ @ motion.rest_positions()
    parents = np.array(HUMANML3D.parents)
    bone_lengths = np.linalg.norm(rest_K3[1:] - rest_K3[parents[1:]], axis=-1)
    leg_length = bone_lengths[[3, 4, 6, 7]].sum() / 2.0  # the bones ending at the knees and ankles
    if bone_lengths.min() <= 1e-6 * leg_length:
        short = [HUMANML3D_JOINT_NAMES[j + 1] for j in np.flatnonzero(bone_lengths <= 1e-6 * leg_length)]
        raise ValueError(
            f"{where}: the mapping puts {short} on their parent joint (zero-length bones in the rest "
            "pose); map them to distinct joints or blends"
        )
    if scale == "auto":
        scale = HUMANML3D_BONE_LENGTHS[[4, 5, 7, 8]].sum() / 2.0 / leg_length
    elif not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"scale must be a positive number (metres per file unit) or 'auto', got {scale!r}")
    head_up = rest_K3[15] - rest_K3[[7, 8]].mean(axis=0)
    rotation_33 = _up_rotation(up_axis, head_up)
    joints_FK3 = np.einsum("kj,fjc->fkc", weights_KJ, motion.positions())
    joints_FK3 = scale * joints_FK3 @ rotation_33.T
    return resample(joints_FK3, motion.fps, fps)


def bvh_to_features(bvh: str | Path | BvhMotion, **import_options) -> np.ndarray:
    """BVH file -> HumanML3D features (T - 1, 263) float32, from the T joint frames of `load_bvh_joints`."""
    return features_from_joints(load_bvh_joints(bvh, **import_options))
