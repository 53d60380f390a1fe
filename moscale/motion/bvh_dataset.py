"""A HumanML3D-layout training folder from your own BVH files and a captions file: `build_dataset`.

Each BVH file is retargeted and processed into HumanML3D features (`moscale.motion.retarget`), written with its
captions through `moscale.motion.dataset_writer`, and the clips are drawn into train / val / test lists.
`skipped_captions` names the captions that the HumanML3D loaders will not use (clips too long or too short).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from moscale.motion.dataset_writer import (
    FeatureMoments,
    create_dataset_folder,
    write_clip,
    write_splits,
    write_statistics,
)
from moscale.motion.retarget import bvh_to_features


def read_caption_table(path: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """Read the captions file of a BVH folder: one caption a line, `name<TAB>caption` or
    `name<TAB>caption<TAB>start<TAB>end` (the captions of one HumanML3D `texts/<id>.txt` are `data.read_captions`).

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
        if (start, end) != (0.0, 0.0) and not 0.0 <= start < end:
            raise ValueError(
                f"{path}, line {number}: start {start:g} s and end {end:g} s must satisfy 0 <= start < end (or be "
                "0 0 for the whole clip); as written the caption would cover no frame"
            )
        captions.setdefault(fields[0].strip(), []).append((fields[1].strip(), start, end))
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return captions


def _text_line(caption: str, start: float, end: float) -> str:
    # HumanML3D stores word/POS-tag pairs for the T2M evaluator; without a tagger every word gets the catch-all
    # tag OTHER of the evaluator's POS vocabulary. MoScale training reads only the caption.
    words = re.findall(r"[a-z0-9']+", caption.lower())
    return f"{caption}#{' '.join(f'{w}/OTHER' for w in words)}#{start}#{end}"


def skipped_captions(output_dir: str | Path, captions: dict[str, list[tuple[str, float, float]]]) -> list[str]:
    """The captions of a `build_dataset` folder that the HumanML3D loaders (`moscale.motion.data`) will skip, with why.

    The loaders keep a motion of 40 <= T < 200 frames; a motion outside that range is skipped with all its captions,
    timed parts included, and a timed part shorter than 40 frames is skipped alone.
    """
    from moscale.motion.data import HUMANML3D_FORMAT

    low, high, fps = HUMANML3D_FORMAT.min_length, HUMANML3D_FORMAT.max_length, HUMANML3D_FORMAT.fps
    skipped = []
    for name, clip_captions in captions.items():
        num_frames = len(np.load(Path(output_dir) / "new_joint_vecs" / f"{name}.npy", mmap_mode="r"))
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
    output_dir: str | Path,
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
        captions_path: captions file (see `read_caption_table`); every clip needs at least one caption.
        output_dir: output folder (created; existing files of the same names are replaced).
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
    captions = read_caption_table(captions_path)
    names = [f.stem for f in files]
    uncaptioned = [n for n in names if n not in captions]
    unknown = sorted(set(captions) - set(names))
    if uncaptioned or unknown:
        raise ValueError(
            f"captions and BVH files do not match: clips without a caption {uncaptioned}, captions "
            f"for missing clips {unknown}"
        )
    # Every file is converted before anything is written, so that a bad file leaves no half-built folder.
    clip_features = {}
    for path, name in zip(files, names):
        try:
            clip_features[name] = bvh_to_features(path, **import_options)
        except ValueError as error:
            message = str(error)  # most already start with the file; the others are told which one
            raise ValueError(message if str(path) in message else f"{path}: {message}") from error
    output_dir = create_dataset_folder(output_dir)
    moments = FeatureMoments()
    for name, features in clip_features.items():
        write_clip(output_dir, name, features, [_text_line(*caption) for caption in captions[name]])
        moments += FeatureMoments.of(features)
    # HumanML3D's statistics cover every clip of the dataset.
    write_statistics(output_dir, moments)

    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    num_val, num_test = int(len(names) * val_fraction), int(len(names) * test_fraction)
    splits = {
        "val": sorted(shuffled[:num_val]),
        "test": sorted(shuffled[num_val : num_val + num_test]),
        "train": sorted(shuffled[num_val + num_test :]),
    }
    write_splits(output_dir, splits)
    splits["all"] = sorted(names)
    return splits
