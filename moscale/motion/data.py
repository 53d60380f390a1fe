"""HumanML3D-layout motion folders -> `datasets.Dataset` / `datasets.IterableDataset`, plus the per-item
transform (caption choice, crop, normalisation) and the batch collator.

A HumanML3D-layout folder (HumanML3D or KIT-ML) holds::

    new_joint_vecs/<id>.npy   (T, feature_dim) motion features
    texts/<id>.txt            one caption per line: ``caption#word/POS word/POS ...#start#end``
    train.txt val.txt test.txt  motion ids, one per line
    Mean.npy Std.npy          (feature_dim,) normalisation statistics

The work is split in three stages so that the Arrow cache holds raw, reusable data:

1. `index_motion_folder` reads the split file, every caption file and only the ``.npy`` headers; it applies the
   length rules and returns the list of items with a `FilterReport` (what was dropped and why).
2. `load_motion_dataset` turns the index into a `datasets.Dataset` (or a streaming `IterableDataset`) of raw,
   un-normalised, un-cropped items; NaN/inf checks happen here, when the motion data is read.
3. `MotionTransform` picks a caption, crops to a multiple of the unit length and normalises, at read time (so
   every epoch draws new crops): through `TransformedMotionDataset` (fast, numpy rows) or
   ``dataset.with_transform`` for map-style data, ``iterable.map(transform, batched=True)`` when streaming.
   `MotionCollator` pads a batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, IterableDataset, List, NamedSplit, Value
from datasets.exceptions import DatasetGenerationError

from moscale.motion.representation import HUMANML3D, KIT_ML, UNIT_LENGTH, SkeletonSpec

__all__ = [
    "FOLDER_FORMATS",
    "HUMANML3D_FORMAT",
    "KIT_ML_FORMAT",
    "MAX_MOTION_LENGTH",
    "UNIT_LENGTH",
    "Caption",
    "FilterReport",
    "MotionCollator",
    "MotionDataError",
    "MotionFolderFormat",
    "MotionFolderIndex",
    "MotionItem",
    "MotionTransform",
    "TransformedMotionDataset",
    "index_motion_folder",
    "load_mean_std",
    "load_motion_dataset",
    "motion_features",
    "parse_caption_line",
    "read_captions",
    "read_split",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


class MotionDataError(ValueError):
    """A file of a motion folder has content the loaders cannot use (wrong shape, NaN, malformed caption)."""


@dataclass(frozen=True)
class MotionFolderFormat:
    """A dataset's skeleton (feature size, frame rate) and the clip lengths its loader keeps.

    Clips are kept when ``min_length <= T < max_length`` (frames), the authors' rule. Caption times (seconds)
    become frames at ``caption_fps``, by default the skeleton's frame rate; the authors' loaders multiply by 20 on
    both datasets, so ``caption_fps=20`` reproduces them on KIT-ML captions that carry times.
    """

    skeleton: SkeletonSpec
    min_length: int
    max_length: int
    caption_fps: float | None = None

    @property
    def name(self) -> str:
        return self.skeleton.name

    @property
    def feature_dim(self) -> int:
        return self.skeleton.feature_dim

    @property
    def fps(self) -> float:
        return self.skeleton.fps


# The authors' length ranges: MoScale's loader (HumanML3D only) keeps 40 <= T < 200; MoMask's, which the KIT-ML
# results follow, keeps 24 <= T < 200 on KIT-ML.
HUMANML3D_FORMAT = MotionFolderFormat(skeleton=HUMANML3D, min_length=40, max_length=200)
KIT_ML_FORMAT = MotionFolderFormat(skeleton=KIT_ML, min_length=24, max_length=200)
FOLDER_FORMATS = {HUMANML3D_FORMAT.name: HUMANML3D_FORMAT, KIT_ML_FORMAT.name: KIT_ML_FORMAT}

MAX_MOTION_LENGTH = 196
# Part of the Arrow cache key: bump it when the generated columns change, so that old caches are not reused.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Caption:
    """One parsed caption line. ``start``/``end`` are seconds; both 0 means the whole motion."""

    text: str
    tokens: tuple[str, ...]
    start: float
    end: float

    @property
    def is_whole_motion(self) -> bool:
        return self.start == 0.0 and self.end == 0.0


def _parse_time(value: str, what: str, path: Path, line_number: int) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise MotionDataError(
            f"{path}, line {line_number}: {what} time {value!r} is not a number; expected seconds such as 0.0 or 3.5"
        ) from None
    # The authors' loader reads 'nan' times as 0 (the whole motion); so do we.
    if math.isnan(seconds):
        return 0.0
    if seconds < 0 or math.isinf(seconds):
        raise MotionDataError(
            f"{path}, line {line_number}: {what} time {value!r} must be a finite, non-negative number of seconds"
        )
    return seconds


def parse_caption_line(line: str, path: PathLike = "<caption>", line_number: int = 1) -> Caption:
    """Parse ``caption#word/POS word/POS ...#start#end``; raises `MotionDataError` naming the file and line."""
    path = Path(path)
    fields = line.strip().rsplit("#", 3)
    if len(fields) != 4:
        raise MotionDataError(
            f"{path}, line {line_number}: expected 'caption#word/POS ...#start#end' (4 fields separated by '#'), "
            f"got {len(fields)} field(s): {line.strip()!r}"
        )
    text, token_field, start_field, end_field = fields
    text = text.strip()
    if not text:
        raise MotionDataError(f"{path}, line {line_number}: the caption (first field) is empty")
    tokens = tuple(token_field.split())
    malformed = [token for token in tokens if "/" not in token]
    if malformed:
        raise MotionDataError(
            f"{path}, line {line_number}: tokens must look like 'word/POS', got {malformed[:3]} in {token_field!r}"
        )
    start = _parse_time(start_field, "start", path, line_number)
    end = _parse_time(end_field, "end", path, line_number)
    caption = Caption(text=text, tokens=tokens, start=start, end=end)
    if not caption.is_whole_motion and end <= start:
        # The authors' loader drops such a caption (its slice is empty); so do we, but not silently.
        warnings.warn(
            f"{path}, line {line_number}: start {start:g} s is not before end {end:g} s, so this caption covers no "
            "frame and is skipped; write start < end, or 0 and 0 for the whole motion",
            stacklevel=2,
        )
    return caption


def read_captions(path: PathLike) -> list[Caption]:
    """All captions of one ``texts/<id>.txt`` file (blank lines are not captions and are skipped)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    captions = [parse_caption_line(line, path, number) for number, line in enumerate(lines, 1) if line.strip()]
    if not captions:
        raise MotionDataError(f"{path}: no caption line; every motion in a split needs at least one caption")
    return captions


def read_split(root: PathLike, split: str) -> list[str]:
    """Motion ids listed in ``<root>/<split>.txt`` (one per line, blank lines ignored, duplicates refused)."""
    root = _existing_folder(root)
    path = root / f"{split}.txt"
    if not path.is_file():
        found = sorted(p.name for p in root.glob("*.txt"))
        raise FileNotFoundError(
            f"split file {path} not found (split={split!r}); split files found in {root}: {found or 'none'}. "
            "Add a file with one motion id per line, or pass another split name."
        )
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    duplicates = sorted(motion_id for motion_id, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise MotionDataError(f"{path}: motion ids listed more than once: {duplicates[:5]}")
    return ids


def _existing_folder(root: PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"motion folder {root} does not exist; expected a HumanML3D-layout folder with new_joint_vecs/, texts/ "
            "and <split>.txt"
        )
    return root


def _motion_shape(path: Path) -> tuple[int, ...]:
    # mmap reads only the .npy header, so indexing a large folder does not read the motion data.
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (ValueError, OSError) as error:
        raise MotionDataError(f"{path}: not a readable numeric .npy array ({error})") from error


@dataclass
class FilterReport:
    """Counts of what `index_motion_folder` kept and dropped; nothing else is ever dropped."""

    split: str
    motions_listed: int = 0
    motions_missing: list[str] = field(default_factory=list)
    motions_too_short: int = 0
    motions_too_long: int = 0
    whole_motion_items: int = 0
    subclip_items: int = 0
    subclips_too_short: int = 0
    motions_with_only_subclip_captions: int = 0

    @property
    def items(self) -> int:
        return self.whole_motion_items + self.subclip_items

    def summary(self) -> str:
        return (
            f"split {self.split!r}: {self.motions_listed} motions listed, {len(self.motions_missing)} missing, "
            f"{self.motions_too_short} too short and {self.motions_too_long} too long (dropped with their sub-clips); "
            f"{self.items} items = {self.whole_motion_items} whole motions + {self.subclip_items} sub-clips "
            f"({self.subclips_too_short} sub-clips too short, dropped); "
            f"{self.motions_with_only_subclip_captions} motions are used only through their sub-clips"
        )


@dataclass(frozen=True)
class MotionItem:
    """One dataset item: frames ``start_frame:end_frame`` of a motion file with its captions."""

    id: str
    motion_id: str
    motion_path: str
    start_frame: int
    end_frame: int
    captions: tuple[Caption, ...]
    file_stamp: tuple[int, int]  # (size, mtime_ns) of the motion file: changes invalidate the Arrow cache


@dataclass
class MotionFolderIndex:
    root: Path
    split: str
    format: MotionFolderFormat
    items: list[MotionItem]
    report: FilterReport


def _resolve_format(format: MotionFolderFormat | str) -> MotionFolderFormat:
    if isinstance(format, MotionFolderFormat):
        return format
    if format not in FOLDER_FORMATS:
        raise ValueError(f"unknown folder format {format!r}; known: {sorted(FOLDER_FORMATS)} or a MotionFolderFormat")
    return FOLDER_FORMATS[format]


def index_motion_folder(
    root: PathLike,
    split: str = "train",
    format: MotionFolderFormat | str = HUMANML3D_FORMAT,
    missing_files: Literal["error", "skip"] = "error",
) -> MotionFolderIndex:
    """List the items of one split the way the authors' loader does, reading only captions and ``.npy`` headers.

    Rules: a motion is kept when ``min_length <= T < max_length``; a too short or too long motion is dropped with
    all its captions. Whole-motion captions (start = end = 0) form one item; each caption with a time range
    becomes its own item ``motion[int(start * fps):int(end * fps)]``, kept under the same length rule. A motion
    whose captions all have time ranges has no whole-motion item. Every drop is counted in the `FilterReport`.

    ``missing_files="skip"`` skips (and reports) ids whose motion or caption file is absent instead of raising.
    """
    root = _existing_folder(root)
    format = _resolve_format(format)
    if missing_files not in ("error", "skip"):
        raise ValueError(f"missing_files must be 'error' or 'skip', got {missing_files!r}")
    motion_dir, text_dir = root / "new_joint_vecs", root / "texts"
    for folder in (motion_dir, text_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: a HumanML3D-layout folder needs new_joint_vecs/ and texts/")

    report = FilterReport(split=split)
    items: list[MotionItem] = []
    motion_ids = read_split(root, split)
    report.motions_listed = len(motion_ids)
    for motion_id in motion_ids:
        motion_path, text_path = motion_dir / f"{motion_id}.npy", text_dir / f"{motion_id}.txt"
        absent = [str(path) for path in (motion_path, text_path) if not path.is_file()]
        if absent:
            if missing_files == "skip":
                report.motions_missing.append(motion_id)
                continue
            raise FileNotFoundError(
                f"motion {motion_id!r} of split {split!r} is missing {absent}; fix the folder, remove the id from "
                f"{split}.txt, or pass missing_files='skip'"
            )
        shape = _motion_shape(motion_path)
        if len(shape) != 2 or shape[1] != format.feature_dim:
            raise MotionDataError(
                f"{motion_path}: motion shape {shape}, expected (frames, {format.feature_dim}) for the "
                f"{format.name!r} format; is this the right dataset format (HumanML3D 263, KIT-ML 251)?"
            )
        num_frames = shape[0]
        captions = read_captions(text_path)
        if num_frames < format.min_length:
            report.motions_too_short += 1
            continue
        if num_frames >= format.max_length:
            report.motions_too_long += 1
            continue
        stat = motion_path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        whole = tuple(caption for caption in captions if caption.is_whole_motion)
        if whole:
            items.append(MotionItem(motion_id, motion_id, str(motion_path), 0, num_frames, whole, stamp))
            report.whole_motion_items += 1
        else:
            report.motions_with_only_subclip_captions += 1
        for line_number, caption in enumerate(captions, 1):
            if caption.is_whole_motion:
                continue
            # Python slice semantics, as in the authors' loader: an end past the last frame stops at the last frame.
            fps = format.caption_fps or format.fps
            start, end = int(caption.start * fps), int(caption.end * fps)
            clip_frames = len(range(num_frames)[start:end])
            # A sub-clip is never longer than its motion, which already passed the upper bound.
            if clip_frames < format.min_length:
                report.subclips_too_short += 1
                continue
            item_id = f"{motion_id}:{line_number}"
            end_frame = start + clip_frames
            items.append(MotionItem(item_id, motion_id, str(motion_path), start, end_frame, (caption,), stamp))
            report.subclip_items += 1
    return MotionFolderIndex(root=root, split=split, format=format, items=items, report=report)


def motion_features(feature_dim: int) -> Features:
    """The explicit `datasets.Features` of the raw items (a typed Array2D keeps motions as fast numeric arrays)."""
    return Features(
        {
            "id": Value("string"),
            "motion_id": Value("string"),
            "start_frame": Value("int32"),
            "end_frame": Value("int32"),
            "length": Value("int32"),
            "motion": Array2D(shape=(None, feature_dim), dtype="float32"),
            "captions": List(Value("string")),
            "tokens": List(List(Value("string"))),
        }
    )


def _generate_items(items: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    # Items arrive as plain dicts so that datasets can split the list into shards (num_proc, DataLoader workers).
    for item in items:
        motion = np.load(item["motion_path"], allow_pickle=False)
        clip = motion[item["start_frame"] : item["end_frame"]]
        if not np.isfinite(clip).all():
            rows = item["start_frame"] + np.flatnonzero(~np.isfinite(clip).all(axis=1))
            raise MotionDataError(
                f"{item['motion_path']}: motion has NaN or inf values in frame(s) {rows[:10].tolist()}; "
                "re-export this motion or remove its id from the split file"
            )
        yield {
            "id": item["id"],
            "motion_id": item["motion_id"],
            "start_frame": item["start_frame"],
            "end_frame": item["end_frame"],
            "length": len(clip),
            "motion": clip.astype(np.float32, copy=False),
            "captions": item["captions"],
            "tokens": item["tokens"],
        }


def _item_records(items: Sequence[MotionItem]) -> list[dict[str, Any]]:
    return [
        {
            "id": item.id,
            "motion_id": item.motion_id,
            "motion_path": item.motion_path,
            "start_frame": item.start_frame,
            "end_frame": item.end_frame,
            "captions": [caption.text for caption in item.captions],
            "tokens": [list(caption.tokens) for caption in item.captions],
            "file_stamp": list(item.file_stamp),
        }
        for item in items
    ]


def load_motion_dataset(
    root: PathLike,
    split: str = "train",
    format: MotionFolderFormat | str = HUMANML3D_FORMAT,
    *,
    streaming: bool = False,
    missing_files: Literal["error", "skip"] = "error",
    cache_dir: PathLike | None = None,
    keep_in_memory: bool = False,
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """Load one split of a HumanML3D-layout folder as raw items (un-normalised, un-cropped).

    Columns: ``id`` (the motion id, or ``<motion id>:<caption line>`` for a sub-clip), ``motion_id``,
    ``start_frame``/``end_frame`` (the frames of the motion file), ``length``, ``motion`` (length, feature_dim)
    float32, ``captions`` and ``tokens`` (one ``word/POS`` list per caption).

    ``streaming=False`` writes an Arrow cache (keyed by the items and the motion files' sizes and times) and
    raises any bad-file error now. ``streaming=True`` returns an `IterableDataset` that reads motions while
    iterating: the split and caption files are checked now, a motion's NaN check happens when it is read.
    Apply `MotionTransform` with ``dataset.with_transform(t)`` or ``iterable.map(t, batched=True)``.
    """
    index = index_motion_folder(root, split, format, missing_files=missing_files)
    logger.info("%s: %s", index.root, index.report.summary())
    if not index.items:
        raise MotionDataError(f"{index.root}: no item left after the length rules ({index.report.summary()})")
    records = _item_records(index.items)
    features = motion_features(index.format.feature_dim)
    gen_kwargs = {"items": records}
    if streaming:
        return IterableDataset.from_generator(_generate_items, features=features, gen_kwargs=gen_kwargs)
    fingerprint = hashlib.sha256(
        json.dumps([_CACHE_VERSION, index.format.name, index.format.feature_dim, records], sort_keys=True).encode()
    ).hexdigest()[:32]
    try:
        return Dataset.from_generator(
            _generate_items,
            features=features,
            gen_kwargs=gen_kwargs,
            cache_dir=None if cache_dir is None else str(cache_dir),
            keep_in_memory=keep_in_memory,
            num_proc=num_proc,
            # datasets reserves "all" for the union of splits; HumanML3D's all.txt is a plain list of ids.
            split=NamedSplit("all_ids" if split == "all" else split),
            fingerprint=fingerprint,
        )
    except DatasetGenerationError as error:
        # Surface our own message (which file, what is wrong) instead of datasets' generic wrapper.
        if isinstance(error.__cause__, MotionDataError):
            raise error.__cause__ from None
        raise


def load_mean_std(
    source: PathLike | tuple[PathLike, PathLike], feature_dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation statistics as float64 ``(mean, std)``.

    ``source`` is a folder holding ``Mean.npy``/``Std.npy`` (a dataset folder) or ``mean.npy``/``std.npy`` (the
    evaluator's ``meta`` folder), or an explicit ``(mean_path, std_path)`` pair such as the evaluator's
    ``t2m_mean.npy``/``t2m_std.npy``.
    """
    if isinstance(source, tuple):
        mean_path, std_path = (Path(path) for path in source)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"statistics folder {folder} does not exist")
        pairs = [(folder / "Mean.npy", folder / "Std.npy"), (folder / "mean.npy", folder / "std.npy")]
        found = [pair for pair in pairs if pair[0].is_file() and pair[1].is_file()]
        if not found:
            raise FileNotFoundError(
                f"{folder} has no Mean.npy/Std.npy (dataset statistics) nor mean.npy/std.npy (evaluator statistics); "
                "pass a folder holding them or an explicit (mean_path, std_path) pair"
            )
        mean_path, std_path = found[0]
    arrays = []
    for path in (mean_path, std_path):
        if not path.is_file():
            raise FileNotFoundError(f"normalisation statistics file {path} not found")
        arrays.append(np.load(path, allow_pickle=False).astype(np.float64))
    mean, std = arrays
    expected = (feature_dim,) if feature_dim is not None else mean.shape
    if mean.ndim != 1 or mean.shape != expected or std.shape != expected:
        raise MotionDataError(
            f"statistics {mean_path} {mean.shape} and {std_path} {std.shape} must both have shape {expected}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise MotionDataError(f"{mean_path}/{std_path}: mean must be finite and std finite and > 0 in every dimension")
    return mean, std


class MotionTransform:
    """Per-item processing at read time: choose a caption, crop to a multiple of the unit length, normalise.

    A batched function for ``Dataset.with_transform`` and ``IterableDataset.map(batched=True)``; it returns
    ``motion`` (normalised float32, (L, D)), ``length``, ``caption``, ``tokens`` and ``id``.

    ``random_crop=True`` is the authors' loader (used by them for training and for evaluation): with probability
    1/3 (when ``unit_length < 10``) the length is one unit shorter than the largest multiple of ``unit_length``,
    and the crop starts at a random frame. ``random_crop=False`` keeps the first ``(T // unit_length) *
    unit_length`` frames. ``random_caption`` picks one of the item's captions uniformly, else the first.

    Randomness comes from ``np.random.default_rng(seed)``; inside a DataLoader worker the worker's torch seed is
    mixed in, so workers differ and a seeded torch makes the whole run reproducible.
    """

    def __init__(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        unit_length: int = UNIT_LENGTH,
        random_crop: bool = True,
        random_caption: bool = True,
        seed: int | None = None,
    ):
        if unit_length < 1:
            raise ValueError(f"unit_length must be >= 1, got {unit_length}")
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} must be equal 1-D shapes")
        self.unit_length = unit_length
        self.random_crop = random_crop
        self.random_caption = random_caption
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._rng_owner: int | None = None

    def _generator(self) -> np.random.Generator:
        worker = torch.utils.data.get_worker_info()
        owner = None if worker is None else worker.seed
        if self._rng is None or owner != self._rng_owner:
            entropy = [part for part in (self.seed, owner) if part is not None]
            self._rng = np.random.default_rng(entropy or None)
            self._rng_owner = owner
        return self._rng

    def crop_length(self, num_frames: int, rng: np.random.Generator | None = None) -> int:
        """Frames kept from a clip of ``num_frames``: a multiple of the unit length (see the class docstring)."""
        units = num_frames // self.unit_length
        if units < 1:
            raise MotionDataError(f"a clip of {num_frames} frames is shorter than one unit ({self.unit_length} frames)")
        if self.random_crop and self.unit_length < 10 and units > 1 and (rng or self._generator()).random() < 1 / 3:
            units -= 1
        return units * self.unit_length

    def normalize(self, motion: np.ndarray) -> np.ndarray:
        if motion.shape[-1] != self.mean.shape[0]:
            raise MotionDataError(f"motion has {motion.shape[-1]} features, the statistics have {self.mean.shape[0]}")
        return ((motion - self.mean) / self.std).astype(np.float32)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rng = self._generator()
        out: dict[str, list] = {"id": [], "motion": [], "length": [], "caption": [], "tokens": []}
        for index, motion in enumerate(batch["motion"]):
            motion = np.asarray(motion, dtype=np.float32)
            length = self.crop_length(len(motion), rng)
            start = int(rng.integers(0, len(motion) - length + 1)) if self.random_crop else 0
            captions, tokens = batch["captions"][index], batch["tokens"][index]
            choice = int(rng.integers(len(captions))) if self.random_caption else 0
            out["id"].append(batch["id"][index])
            out["motion"].append(self.normalize(motion[start : start + length]))
            out["length"].append(length)
            out["caption"].append(captions[choice])
            out["tokens"].append(list(tokens[choice]))
        return out


class TransformedMotionDataset(torch.utils.data.Dataset):
    """A map-style dataset of raw items seen through a `MotionTransform`, for a torch DataLoader.

    Same items as ``dataset.with_transform(transform)``, but rows are read in numpy format: a ``with_transform``
    dataset converts every motion through Python lists first, which dominates the loading time.
    """

    def __init__(self, dataset: Dataset, transform: MotionTransform):
        self.rows = dataset.with_format("numpy", columns=["motion"], output_all_columns=True)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        batch = self.transform(self.rows[indices])
        return [{key: values[row] for key, values in batch.items()} for row in range(len(indices))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]


@dataclass
class MotionCollator:
    """Pad transformed items into a batch.

    Returns ``motions`` (B, L, D) float32 with zero padding, ``lengths`` (B,) int64, ``mask`` (B, L) bool (True on
    real frames), ``captions``, and ``tokens`` / ``ids`` when the items have them. ``L`` is the longest item, or
    ``max_length`` when set (196 pads every batch like the authors); an item longer than ``max_length`` raises.
    """

    max_length: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        motions = [torch.as_tensor(np.asarray(example["motion"], dtype=np.float32)) for example in examples]
        lengths = torch.tensor([len(motion) for motion in motions], dtype=torch.long)
        for example, motion in zip(examples, motions):
            if "length" in example and int(example["length"]) != len(motion):
                raise ValueError(f"item {example.get('id')!r}: length {example['length']} but {len(motion)} frames")
        longest = int(lengths.max())
        padded_length = longest if self.max_length is None else self.max_length
        if longest > padded_length:
            raise ValueError(
                f"an item has {longest} frames, more than max_length={self.max_length}; crop it first "
                "(MotionTransform) or raise max_length"
            )
        motions_BLD = motions[0].new_zeros(len(motions), padded_length, motions[0].shape[-1])
        for row, motion in enumerate(motions):
            motions_BLD[row, : len(motion)] = motion
        batch: dict[str, Any] = {
            "motions": motions_BLD,
            "lengths": lengths,
            "mask": torch.arange(padded_length)[None, :] < lengths[:, None],
            "captions": [example["caption"] for example in examples],
        }
        if all("tokens" in example for example in examples):
            batch["tokens"] = [list(example["tokens"]) for example in examples]
        if all("id" in example for example in examples):
            batch["ids"] = [example["id"] for example in examples]
        return batch
