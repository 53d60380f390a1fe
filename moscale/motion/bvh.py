"""BVH motion capture <-> the 22-joint HumanML3D skeleton.

Import: `read_bvh` parses any BVH file (any channel order, several roots, End Sites), `BvhMotion.positions`
runs forward kinematics, and `load_bvh_joints` maps a known skeleton (CMU, Mixamo-style names, or a mapping
you give) onto the 22 HumanML3D joints in metres, y up, at 20 fps. `bvh_to_features` adds the HumanML3D
processing (263-dim features) and `build_dataset` turns a folder of BVH files plus a captions file into a
HumanML3D-layout training folder.

Export: `joints_to_bvh` / `features_to_bvh` write the 22-joint skeleton in a T-pose rest pose with one rotation
per joint found by inverse kinematics, so Blender, Unity or Unreal can import it.

Command line: `python -m moscale.motion.bvh {convert,export,build-dataset} --help`.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from moscale.motion.representation import (
    HUMANML3D,
    HUMANML3D_BONE_LENGTHS,
    average_std_within_groups,
    features_from_joints,
    qbetween,
    quaternion_to_matrix,
    recover_from_ric,
)

_ROTATION_CHANNELS = {"Xrotation": "X", "Yrotation": "Y", "Zrotation": "Z"}
_POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")


@dataclass
class BvhMotion:
    """The content of one BVH file.

    `offsets_J3` are the rest-pose offsets of each joint from its parent (the root's is its rest position),
    `channels` the channel names of each joint in file order, `values_FC` the motion block (one row per frame,
    columns in the joint order of `names`). `end_sites` maps a joint index to the offset of its End Site.
    """

    names: list[str]
    parents: list[int]
    offsets_J3: np.ndarray
    channels: list[tuple[str, ...]]
    frame_time: float
    values_FC: np.ndarray
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frame rate; files write Frame Time with few digits (.0083333), so a rate within 0.01% of a whole
        number is taken as that number."""
        rate = 1.0 / self.frame_time
        return float(round(rate)) if abs(rate - round(rate)) < 1e-4 * rate else rate

    @property
    def num_frames(self) -> int:
        return self.values_FC.shape[0]

    def channel_slices(self) -> list[slice]:
        """Column range of each joint's channels in `values_FC`."""
        starts = np.cumsum([0] + [len(c) for c in self.channels])
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]

    def local_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame local rotation matrices (F, J, 3, 3) and translations (F, J, 3) of every joint.

        Rotation channels compose in the order the file lists them (intrinsic rotations, the BVH convention);
        position channels, where a joint has them, replace its offset.
        """
        num_frames, num_joints = self.num_frames, len(self.names)
        rotations_FJ33 = np.tile(np.eye(3), (num_frames, num_joints, 1, 1))
        translations_FJ3 = np.tile(self.offsets_J3, (num_frames, 1, 1)).astype(np.float64)
        for joint, (names, columns) in enumerate(zip(self.channels, self.channel_slices())):
            values_FC = self.values_FC[:, columns]
            axes = "".join(_ROTATION_CHANNELS[n] for n in names if n in _ROTATION_CHANNELS)
            if axes:
                angles = values_FC[:, [i for i, n in enumerate(names) if n in _ROTATION_CHANNELS]]
                rotations_FJ33[:, joint] = Rotation.from_euler(axes, angles, degrees=True).as_matrix()
            for axis, name in enumerate(_POSITION_CHANNELS):
                if name in names:
                    translations_FJ3[:, joint, axis] = values_FC[:, names.index(name)]
        return rotations_FJ33, translations_FJ3

    def positions(self) -> np.ndarray:
        """World positions (F, J, 3) of every joint, in the file's units and axes."""
        local_FJ33, translations_FJ3 = self.local_transforms()
        global_FJ33 = np.empty_like(local_FJ33)
        positions_FJ3 = np.empty_like(translations_FJ3)
        for joint, parent in enumerate(self.parents):  # parents always come before their children
            if parent < 0:
                global_FJ33[:, joint] = local_FJ33[:, joint]
                positions_FJ3[:, joint] = translations_FJ3[:, joint]
            else:
                global_FJ33[:, joint] = global_FJ33[:, parent] @ local_FJ33[:, joint]
                positions_FJ3[:, joint] = positions_FJ3[:, parent] + np.einsum(
                    "fij,fj->fi", global_FJ33[:, parent], translations_FJ3[:, joint]
                )
        return positions_FJ3

    def rest_positions(self) -> np.ndarray:
        """Joint positions (J, 3) of the rest pose that the offsets describe."""
        positions_J3 = np.zeros((len(self.names), 3))
        for joint, parent in enumerate(self.parents):
            positions_J3[joint] = self.offsets_J3[joint] + (positions_J3[parent] if parent >= 0 else 0.0)
        return positions_J3


class _Tokens:
    """Whitespace tokens of a BVH file with the line number of each, for readable errors."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.items = [(word, number) for number, line in enumerate(text.splitlines(), 1) for word in line.split()]
        self.index = 0

    def peek(self) -> str | None:
        return self.items[self.index][0] if self.index < len(self.items) else None

    def next(self, expected: str | None = None) -> str:
        if self.index >= len(self.items):
            raise ValueError(f"{self.path}: the file ends early" + (f", expected {expected!r}" if expected else ""))
        word, number = self.items[self.index]
        self.index += 1
        if expected is not None and word != expected:
            raise ValueError(f"{self.path}, line {number}: expected {expected!r}, found {word!r}")
        return word

    def number(self, kind: type = float) -> float:
        word = self.next()
        try:
            return kind(word)
        except ValueError:
            raise ValueError(
                f"{self.path}, line {self.items[self.index - 1][1]}: expected a number, found {word!r}"
            ) from None


def read_bvh(path: str | Path) -> BvhMotion:
    """Parse a BVH file: hierarchy (one or more ROOTs, End Sites, any channel layout) and motion block."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BVH file not found: {path}")
    tokens = _Tokens(path.read_text(encoding="utf-8", errors="replace"), str(path))
    motion = BvhMotion(
        names=[], parents=[], offsets_J3=np.zeros((0, 3)), channels=[], frame_time=0.0, values_FC=np.zeros((0, 0))
    )
    offsets: list[np.ndarray] = []

    def parse_joint(parent: int) -> None:
        name = tokens.next()
        joint = len(motion.names)
        motion.names.append(name)
        motion.parents.append(parent)
        motion.channels.append(())
        offsets.append(np.zeros(3))
        tokens.next("{")
        while (word := tokens.next()) != "}":
            if word == "OFFSET":
                offsets[joint] = np.array([tokens.number() for _ in range(3)])
            elif word == "CHANNELS":
                names = tuple(tokens.next() for _ in range(int(tokens.number(int))))
                unknown = [n for n in names if n not in _ROTATION_CHANNELS and n not in _POSITION_CHANNELS]
                if unknown:
                    raise ValueError(f"{path}: joint {name!r} has unknown channels {unknown}")
                motion.channels[joint] = names
            elif word == "JOINT":
                parse_joint(joint)
            elif word == "End":
                tokens.next("Site")
                tokens.next("{")
                tokens.next("OFFSET")
                motion.end_sites[joint] = np.array([tokens.number() for _ in range(3)])
                tokens.next("}")
            else:
                raise ValueError(
                    f"{path}, line {tokens.items[tokens.index - 1][1]}: unexpected {word!r} in joint {name!r}"
                )

    tokens.next("HIERARCHY")
    while tokens.peek() == "ROOT":
        tokens.next()
        parse_joint(-1)
    if not motion.names:
        raise ValueError(f"{path}: no ROOT joint after HIERARCHY")
    tokens.next("MOTION")
    tokens.next("Frames:")
    num_frames = int(tokens.number(int))
    tokens.next("Frame")
    tokens.next("Time:")
    motion.frame_time = tokens.number()
    if motion.frame_time <= 0:
        raise ValueError(f"{path}: Frame Time must be positive, found {motion.frame_time}")
    num_channels = sum(len(c) for c in motion.channels)
    words = [word for word, _ in tokens.items[tokens.index :]]
    if len(words) != num_frames * num_channels:
        raise ValueError(
            f"{path}: the header announces {num_frames} frames x {num_channels} channels = "
            f"{num_frames * num_channels} values, but the motion block has {len(words)}; "
            "fix the 'Frames:' line or the channel lists"
        )
    motion.values_FC = np.asarray(words, dtype=np.float64).reshape(num_frames, num_channels)
    motion.offsets_J3 = np.stack(offsets)
    return motion


def write_bvh(path: str | Path, motion: BvhMotion, precision: int = 6) -> None:
    """Write `motion` as a BVH file (tabs for indentation, one motion row per line).

    The file lists joints depth first, so reading it back may order them differently from `motion.names`.
    """
    children: dict[int, list[int]] = {j: [] for j in range(len(motion.names))}
    for joint, parent in enumerate(motion.parents):
        if parent >= 0:
            children[parent].append(joint)

    def vector(v: np.ndarray) -> str:
        return " ".join(f"{x:.{precision}f}" for x in v)

    lines = ["HIERARCHY"]
    order: list[int] = []  # joints in the depth-first order of the hierarchy, which the motion columns follow

    def emit(joint: int, depth: int) -> None:
        order.append(joint)
        pad = "\t" * depth
        keyword = "ROOT" if motion.parents[joint] < 0 else "JOINT"
        lines.extend(
            [
                f"{pad}{keyword} {motion.names[joint]}",
                f"{pad}{{",
                f"{pad}\tOFFSET {vector(motion.offsets_J3[joint])}",
                f"{pad}\tCHANNELS {len(motion.channels[joint])} {' '.join(motion.channels[joint])}",
            ]
        )
        for child in children[joint]:
            emit(child, depth + 1)
        if joint in motion.end_sites:
            lines.extend(
                [f"{pad}\tEnd Site", f"{pad}\t{{", f"{pad}\t\tOFFSET {vector(motion.end_sites[joint])}", f"{pad}\t}}"]
            )
        lines.append(f"{pad}}}")

    for root in (j for j, p in enumerate(motion.parents) if p < 0):
        emit(root, 0)
    lines.extend(["MOTION", f"Frames: {motion.num_frames}", f"Frame Time: {motion.frame_time:.8f}"])
    columns = motion.channel_slices()
    values_FC = np.concatenate([motion.values_FC[:, columns[joint]] for joint in order], axis=1)
    lines.extend(vector(row) for row in values_FC)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# BVH skeleton -> the 22 HumanML3D joints.

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


# ----------------------------------------------------------------------------------------------------------------
# HumanML3D joints -> BVH.

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
            channels.append(_POSITION_CHANNELS + rotation_names)
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


# ----------------------------------------------------------------------------------------------------------------
# BVH files + captions -> a HumanML3D-layout training folder.


def bvh_to_features(bvh: str | Path | BvhMotion, **import_options) -> np.ndarray:
    """BVH file -> HumanML3D features (T - 1, 263) float32, from the T joint frames of `load_bvh_joints`."""
    return features_from_joints(load_bvh_joints(bvh, **import_options))


def read_captions(path: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """Read a captions file: one caption a line, `name<TAB>caption` or `name<TAB>caption<TAB>start<TAB>end`.

    `name` is the BVH file name without `.bvh`; a clip may have several lines. `start`/`end` (seconds) caption
    only that part of the clip, as in HumanML3D (0 0: the whole clip). Blank lines and lines starting with '#'
    are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    captions: dict[str, list[tuple[str, float, float]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) not in (2, 4) or not fields[0].strip() or not fields[1].strip():
            raise ValueError(
                f"{path}, line {number}: expected 'name<TAB>caption' or 'name<TAB>caption<TAB>start"
                f"<TAB>end' (tab-separated), got {line!r}"
            )
        if "#" in fields[1]:
            raise ValueError(f"{path}, line {number}: captions may not contain '#', the HumanML3D field separator")
        try:
            start, end = (float(fields[2]), float(fields[3])) if len(fields) == 4 else (0.0, 0.0)
        except ValueError:
            raise ValueError(f"{path}, line {number}: start and end must be seconds, got {fields[2:]}") from None
        captions.setdefault(fields[0].strip(), []).append((fields[1].strip(), start, end))
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return captions


def _text_line(caption: str, start: float, end: float) -> str:
    # HumanML3D stores word/POS-tag pairs for the T2M evaluator; without a tagger every word gets the catch-all
    # tag OTHER of the evaluator's POS vocabulary. MoScale training reads only the caption.
    words = re.findall(r"[a-z0-9']+", caption.lower())
    return f"{caption}#{' '.join(f'{w}/OTHER' for w in words)}#{start}#{end}"


def feature_mean_std(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Dataset Mean/Std (263,) as HumanML3D computes them: per-dimension mean, and a standard deviation averaged
    within each feature group (root rotation velocity, root xz velocity, root height, positions, rotations,
    velocities, foot contacts), so that normalisation keeps each group's internal proportions."""
    stacked = np.concatenate(features, axis=0).astype(np.float64)
    mean, std = stacked.mean(axis=0), average_std_within_groups(stacked.std(axis=0))
    if (std == 0).any():
        raise ValueError(
            "a feature group has zero variance over the whole dataset (too few or static clips): "
            "add more motion before training"
        )
    return mean.astype(np.float32), std.astype(np.float32)


def skipped_captions(out_dir: str | Path, captions: dict[str, list[tuple[str, float, float]]]) -> list[str]:
    """The captions of a `build_dataset` folder that the HumanML3D loaders (`moscale.motion.data`) will skip, with why.

    The loaders keep a motion of 40 <= T < 200 frames; a motion outside that range is skipped with all its captions,
    timed parts included, and a timed part shorter than 40 frames is skipped alone.
    """
    from moscale.motion.data import HUMANML3D_FORMAT

    low, high, fps = HUMANML3D_FORMAT.min_length, HUMANML3D_FORMAT.max_length, HUMANML3D_FORMAT.fps
    skipped = []
    for name, clip_captions in captions.items():
        num_frames = len(np.load(Path(out_dir) / "new_joint_vecs" / f"{name}.npy", mmap_mode="r"))
        for caption, start, end in clip_captions:
            if not low <= num_frames < high:
                skipped.append(f"{name} '{caption}' (the motion has {num_frames} frames)")
            elif (start, end) != (0.0, 0.0):
                part = len(range(num_frames)[int(start * fps) : int(end * fps)])
                if part < low:
                    skipped.append(f"{name} '{caption}' (the part has {part} frames)")
    return skipped


def _bvh_files(inputs: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(item.glob("*.bvh")))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"no such BVH file or folder: {item}")
    if not files:
        raise ValueError(f"no .bvh files in {[str(i) for i in inputs]}")
    stems = [f.stem for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"several BVH files share the names {duplicates}; clip names must be unique")
    return files


def build_dataset(
    bvh_inputs: list[str | Path],
    captions_path: str | Path,
    out_dir: str | Path,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 0,
    **import_options,
) -> dict[str, list[str]]:
    """Convert BVH files and their captions into a HumanML3D-layout folder.

    Writes `new_joint_vecs/<name>.npy` (T, 263), `new_joints/<name>.npy` (T, 22, 3), `texts/<name>.txt`,
    `Mean.npy`, `Std.npy` and the split lists `train.txt`, `val.txt`, `test.txt`, `all.txt`.

    Args:
        bvh_inputs: BVH files and/or folders of them; a clip's name is its file name without `.bvh`.
        captions_path: captions file (see `read_captions`); every clip needs at least one caption.
        out_dir: output folder (created; existing files of the same names are replaced).
        val_fraction, test_fraction: shares of clips drawn (with `seed`) for the validation and test lists.
        import_options: `mapping`, `scale`, `up_axis` for `load_bvh_joints`.

    Returns:
        The split lists, by split name.
    """
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"val_fraction and test_fraction must be >= 0 and sum to < 1, got {val_fraction}, {test_fraction}"
        )
    files = _bvh_files(bvh_inputs)
    captions = read_captions(captions_path)
    names = [f.stem for f in files]
    uncaptioned = [n for n in names if n not in captions]
    unknown = sorted(set(captions) - set(names))
    if uncaptioned or unknown:
        raise ValueError(
            f"captions and BVH files do not match: clips without a caption {uncaptioned}, captions "
            f"for missing clips {unknown}"
        )
    out_dir = Path(out_dir)
    for folder in ("new_joint_vecs", "new_joints", "texts"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    all_features = []
    for path, name in zip(files, names):
        try:
            features = bvh_to_features(path, **import_options)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        np.save(out_dir / "new_joint_vecs" / f"{name}.npy", features)
        np.save(out_dir / "new_joints" / f"{name}.npy", recover_from_ric(features))
        lines = [_text_line(*caption) for caption in captions[name]]
        (out_dir / "texts" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        all_features.append(features)
    mean, std = feature_mean_std(all_features)
    np.save(out_dir / "Mean.npy", mean)
    np.save(out_dir / "Std.npy", std)

    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    num_val, num_test = int(len(names) * val_fraction), int(len(names) * test_fraction)
    splits = {
        "val": sorted(shuffled[:num_val]),
        "test": sorted(shuffled[num_val : num_val + num_test]),
        "train": sorted(shuffled[num_val + num_test :]),
        "all": sorted(names),
    }
    for split, members in splits.items():
        (out_dir / f"{split}.txt").write_text("".join(f"{m}\n" for m in members), encoding="utf-8")
    return splits


# ----------------------------------------------------------------------------------------------------------------
# Command line.


def _scale_arg(text: str) -> float | str:
    return text if text == "auto" else float(text)


def _add_import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mapping", default=None, help=f"joint mapping: {', '.join(JOINT_MAPPINGS)} or a JSON file (default: detect)"
    )
    parser.add_argument(
        "--scale",
        type=_scale_arg,
        default="auto",
        help="metres per file unit (0.01 for centimetres) or 'auto' (HumanML3D leg length)",
    )
    parser.add_argument("--up-axis", default="auto", help="the file's up axis: y, z, -z, ... or auto")


def main(argv: list[str] | None = None) -> None:
    """`python -m moscale.motion.bvh convert | export | build-dataset`."""
    parser = argparse.ArgumentParser(prog="python -m moscale.motion.bvh", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="BVH -> HumanML3D joints (T, 22, 3) or features (T-1, 263) .npy")
    convert.add_argument("bvh")
    convert.add_argument("output", help=".npy file to write")
    convert.add_argument("--features", action="store_true", help="write 263-dim features instead of joints")
    _add_import_options(convert)

    export = commands.add_parser("export", help="HumanML3D joints or features .npy -> BVH")
    export.add_argument("motion", help=".npy of joints (T, 22, 3) or un-normalised features (T, 263)")
    export.add_argument("output", help=".bvh file to write")
    export.add_argument("--fps", type=float, default=20.0)
    export.add_argument("--units-per-metre", type=float, default=1.0, help="100 for centimetre rigs")

    build = commands.add_parser("build-dataset", help="BVH files + captions -> HumanML3D-layout folder")
    build.add_argument("bvh", nargs="+", help="BVH files and/or folders of them")
    build.add_argument("--captions", required=True, help="tab-separated: name, caption[, start, end]")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--val-fraction", type=float, default=0.0)
    build.add_argument("--test-fraction", type=float, default=0.0)
    build.add_argument("--seed", type=int, default=0)
    _add_import_options(build)

    args = parser.parse_args(argv)
    if args.command == "convert":
        options = {"mapping": args.mapping, "scale": args.scale, "up_axis": args.up_axis}
        array = bvh_to_features(args.bvh, **options) if args.features else load_bvh_joints(args.bvh, **options)
        np.save(args.output, array.astype(np.float32))
        print(f"wrote {args.output}: {array.shape}")
    elif args.command == "export":
        motion = np.load(args.motion)
        if motion.ndim == 2:
            features_to_bvh(motion, args.output, args.fps, args.units_per_metre)
        else:
            joints_to_bvh(motion, args.output, args.fps, args.units_per_metre)
        print(f"wrote {args.output}: {len(motion)} frames at {args.fps:g} fps")
    else:
        splits = build_dataset(
            args.bvh,
            args.captions,
            args.out,
            args.val_fraction,
            args.test_fraction,
            args.seed,
            mapping=args.mapping,
            scale=args.scale,
            up_axis=args.up_axis,
        )
        print(
            f"wrote {args.out}: {len(splits['train'])} train, {len(splits['val'])} val, "
            f"{len(splits['test'])} test clips"
        )
        skipped = skipped_captions(args.out, read_captions(args.captions))
        if skipped:
            print(
                "note: HumanML3D loaders keep motions of 40 to 199 frames (2 to 10 s) and skip a longer or shorter "
                f"motion together with its timed parts, so these captions will not be used: {'; '.join(skipped)}. "
                "Cut long takes into separate BVH files of 2 to 10 s."
            )


if __name__ == "__main__":
    main()
