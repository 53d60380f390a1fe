"""Write a HumanML3D-layout dataset folder, the layout that `moscale.motion.data` reads:

    new_joint_vecs/<id>.npy              (T, 263) float32 features
    new_joints/<id>.npy                  (T, 22, 3) float32 joints, `recover_from_ric` of the features (as HumanML3D
                                         made them)
    texts/<id>.txt                       one `caption#word/POS ...#start#end` line per caption
    Mean.npy, Std.npy                    (263,) float32: the mean per dimension, and the standard deviation averaged
                                         within each feature group, as the released HumanML3D statistics are
    train.txt val.txt test.txt all.txt   clip ids, one a line

Both dataset builders write through this module: `moscale.motion.bvh_dataset` (your BVH files and captions) and
`moscale.synthetic.writer` (the procedural dataset). Clips can be written from several processes; their
`FeatureMoments` add up to the folder's statistics.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moscale.motion.representation import HUMANML3D, SkeletonSpec, average_std_within_groups, recover_from_ric

CLIP_FOLDERS = ("new_joint_vecs", "new_joints", "texts")
# Below this, a feature group is taken as constant over the clips (see `write_statistics`).
CONSTANT_GROUP_STD = 1e-6


def create_dataset_folder(root: str | os.PathLike) -> Path:
    """Create `root` and its per-clip folders (existing files are kept, and replaced when written again)."""
    root = Path(root)
    for folder in CLIP_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def write_clip(
    root: str | os.PathLike,
    clip_id: str,
    features: np.ndarray,
    caption_lines: Sequence[str],
    joints: np.ndarray | None = None,
) -> None:
    """Write one clip: its features (T, D), its joints (`recover_from_ric` of the features unless the caller has
    them already) and its caption lines."""
    root = Path(root)
    features = np.asarray(features, dtype=np.float32)
    if joints is None:
        joints = recover_from_ric(features)
    np.save(root / "new_joint_vecs" / f"{clip_id}.npy", features)
    np.save(root / "new_joints" / f"{clip_id}.npy", np.asarray(joints, dtype=np.float32))
    (root / "texts" / f"{clip_id}.txt").write_text("\n".join(caption_lines) + "\n", encoding="utf-8")


@dataclass
class FeatureMoments:
    """Per-dimension sums over the feature rows of some clips, in float64; `+` pools two sets of clips."""

    total: np.ndarray | float = 0.0
    total_square: np.ndarray | float = 0.0
    rows: int = 0

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureMoments:
        features = np.asarray(features, dtype=np.float64)
        return cls(features.sum(0), (features**2).sum(0), len(features))

    def __add__(self, other: FeatureMoments) -> FeatureMoments:
        return FeatureMoments(self.total + other.total, self.total_square + other.total_square, self.rows + other.rows)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and (population) standard deviation."""
        if self.rows == 0:
            raise ValueError("no feature rows: the statistics need at least one clip")
        mean = self.total / self.rows
        return mean, np.sqrt(np.maximum(self.total_square / self.rows - mean**2, 0.0))


def write_statistics(
    root: str | os.PathLike, moments: FeatureMoments, spec: SkeletonSpec = HUMANML3D
) -> tuple[np.ndarray, np.ndarray]:
    """Write Mean.npy and Std.npy (float32) from the moments of the clips they describe; returns them.

    A feature group that does not vary over those clips (foot contacts of clips that all stand on both feet, a
    handful of static clips) gets a standard deviation of 1, so it is left unscaled, with a warning naming it.
    The loaders refuse a zero, and there is no right scale for such a group: a tiny one (a clamp at 1e-6) would blow
    any other motion that does vary there (a held-out clip, a generated motion) up by a million, and refusing the
    folder would rule out legitimate narrow datasets (gestures performed standing still).
    """
    mean, std = moments.mean_std()
    std = average_std_within_groups(std, spec)
    constant = [group for group in spec.feature_groups if std[group][0] < CONSTANT_GROUP_STD]
    if constant:
        warnings.warn(
            f"feature columns {[(g.start, g.stop) for g in constant]} do not vary over the clips: their Std is set to "
            "1 (unscaled). A model trained on this folder will not learn to move them; add clips that do.",
            stacklevel=2,
        )
        for group in constant:
            std[group] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    np.save(Path(root) / "Mean.npy", mean)
    np.save(Path(root) / "Std.npy", std)
    return mean, std


def write_splits(root: str | os.PathLike, splits: Mapping[str, Sequence[str]]) -> None:
    """Write one `<split>.txt` per split (ids in the given order) and `all.txt` (every id, sorted), as HumanML3D
    ships them."""
    every_id = sorted({clip_id for ids in splits.values() for clip_id in ids})
    for split, ids in {**splits, "all": every_id}.items():
        (Path(root) / f"{split}.txt").write_text("".join(f"{clip_id}\n" for clip_id in ids), encoding="utf-8")
