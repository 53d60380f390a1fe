"""The BVH motion capture file format: `read_bvh` parses a file into a `BvhMotion`, `write_bvh` writes one.

`read_bvh` takes any hierarchy (one or more ROOTs, End Sites, any channel order, position channels on any joint);
`BvhMotion.positions` runs forward kinematics over all frames. Mapping a BVH skeleton onto the HumanML3D joints is
`moscale.motion.retarget`; writing HumanML3D motions as BVH files is `moscale.motion.bvh_export`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROTATION_CHANNELS = {"Xrotation": "X", "Yrotation": "Y", "Zrotation": "Z"}
POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")


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
            axes = "".join(ROTATION_CHANNELS[n] for n in names if n in ROTATION_CHANNELS)
            if axes:
                angles = values_FC[:, [i for i, n in enumerate(names) if n in ROTATION_CHANNELS]]
                rotations_FJ33[:, joint] = Rotation.from_euler(axes, angles, degrees=True).as_matrix()
            for axis, name in enumerate(POSITION_CHANNELS):
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

    def number(self, what: str, kind: type = float) -> float:
        """The next word as a finite number; `what` names it in the error ("the OFFSET of joint 'Hips'")."""
        word = self.next()
        line = self.items[self.index - 1][1]
        try:
            value = kind(word)
        except ValueError:
            raise ValueError(f"{self.path}, line {line}: expected a number for {what}, found {word!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{self.path}, line {line}: {what} must be a finite number, found {word!r}")
        return value


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
                offsets[joint] = np.array([tokens.number(f"the OFFSET of joint {name!r}") for _ in range(3)])
            elif word == "CHANNELS":
                count = tokens.number(f"the channel count of joint {name!r}", int)
                names = tuple(tokens.next() for _ in range(count))
                unknown = [n for n in names if n not in ROTATION_CHANNELS and n not in POSITION_CHANNELS]
                if unknown:
                    raise ValueError(f"{path}: joint {name!r} has unknown channels {unknown}")
                motion.channels[joint] = names
            elif word == "JOINT":
                parse_joint(joint)
            elif word == "End":
                tokens.next("Site")
                tokens.next("{")
                tokens.next("OFFSET")
                what = f"the End Site OFFSET of joint {name!r}"
                motion.end_sites[joint] = np.array([tokens.number(what) for _ in range(3)])
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
    num_frames = tokens.number("the frame count", int)
    tokens.next("Frame")
    tokens.next("Time:")
    motion.frame_time = tokens.number("the Frame Time")
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
    motion.values_FC = _motion_values(words, num_channels, motion, tokens).reshape(num_frames, num_channels)
    motion.offsets_J3 = np.stack(offsets)
    return motion


def _motion_values(words: list[str], num_channels: int, motion: BvhMotion, tokens: _Tokens) -> np.ndarray:
    """The motion block's words as numbers. A word that is not a finite number is refused with its line, frame,
    joint and channel: one NaN angle would turn every joint below it into NaN, silently."""
    values = np.array([_float_or_nan(word) for word in words], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if not len(bad):
        return values
    index = int(bad[0])
    frame, column = divmod(index, num_channels)
    joint, columns = next((j, c) for j, c in enumerate(motion.channel_slices()) if c.start <= column < c.stop)
    more = f" ({len(bad) - 1} more such values follow)" if len(bad) > 1 else ""
    raise ValueError(
        f"{tokens.path}, line {tokens.items[tokens.index + index][1]}: frame {frame + 1}, channel "
        f"{motion.channels[joint][column - columns.start]} of joint {motion.names[joint]!r} is {words[index]!r}, "
        f"not a finite number{more}; fix or remove that frame"
    )


def _float_or_nan(word: str) -> float:
    try:
        return float(word)
    except ValueError:
        return math.nan


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
