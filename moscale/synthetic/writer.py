"""Write generated clips as a HumanML3D-layout folder (`moscale.motion.dataset_writer`), plus the exact ground truth
in `semantics.jsonl`.

    new_joint_vecs/<id>.npy      (T, 263) float32, `features_from_joints` of the T + 1 generated frames
    new_joints/<id>.npy          (T, 22, 3) float32, `recover_from_ric` of those features (as HumanML3D made them)
    texts/<id>.txt               3 captions, `caption#lemma/POS ...#0.0#0.0`
    train.txt val.txt test.txt   ids, 80 / 5 / 15 % like HumanML3D; all.txt lists every id
    Mean.npy Std.npy             statistics of the train split; Std is averaged within each feature group, as in
                                 the released HumanML3D statistics
    semantics.jsonl              one JSON object per clip: id, split, frames, actions with their frames, captions

Clip i is made from the random generator seeded with (seed, i), so a folder is the same whatever the number of
worker processes, and clip i of a bigger folder equals clip i of a smaller one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from moscale.motion.dataset_writer import (
    FeatureMoments,
    create_dataset_folder,
    write_clip,
    write_splits,
    write_statistics,
)
from moscale.motion.representation import HUMANML3D, features_from_joints, recover_from_ric

from .captions import caption_line, make_captions
from .generator import generate_clip

SPLIT_FRACTIONS = {"train": 0.80, "val": 0.05, "test": 0.15}


@dataclass
class SyntheticExample:
    """One clip as written: features (T, 263), joints (T, 22, 3), captions and the ground truth."""

    clip_id: str
    features: np.ndarray
    joints: np.ndarray
    captions: list[str]
    semantics: dict


def make_example(seed: int, index: int) -> SyntheticExample:
    """Clip `index` of the dataset with seed `seed`."""
    rng = np.random.default_rng([seed, index])
    clip = generate_clip(rng)
    features = features_from_joints(clip.joints)
    joints = recover_from_ric(features)
    captions = make_captions(clip.actions, rng)
    last_row = len(features) - 1
    actions = []
    for action in clip.actions:
        record = action.to_dict()
        # Frame T (the extra raw frame that only feeds the last velocities) is not a row of the clip.
        record["start"], record["end"] = min(action.start, last_row), min(action.end, last_row)
        actions.append(record)
    semantics = {
        "id": f"{index:06d}",
        "num_frames": len(features),
        "fps": HUMANML3D.fps,
        "actions": actions,
        "captions": captions,
        "flight_frames": int((~clip.stance_2T[:, :-1]).all(0).sum()),
    }
    return SyntheticExample(f"{index:06d}", features, joints, captions, semantics)


def assign_splits(num_clips: int, seed: int) -> dict[str, str]:
    """clip id -> split; every split gets at least one clip once there are 3 clips."""
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(num_clips)
    num_val = max(1, int(round(SPLIT_FRACTIONS["val"] * num_clips))) if num_clips >= 3 else 0
    num_test = max(1, int(round(SPLIT_FRACTIONS["test"] * num_clips))) if num_clips >= 3 else 0
    splits = {}
    for rank, index in enumerate(order):
        split = "val" if rank < num_val else ("test" if rank < num_val + num_test else "train")
        splits[f"{index:06d}"] = split
    return splits


def _write_example(task: tuple[str, int, int]) -> tuple[dict, FeatureMoments]:
    out, seed, index = task
    example = make_example(seed, index)
    lines = [caption_line(caption) for caption in example.captions]
    write_clip(out, example.clip_id, example.features, lines, joints=example.joints)
    return example.semantics, FeatureMoments.of(example.features)


def _init_worker() -> None:
    # One process per core: keep torch (used by recover_from_ric) from starting its own threads in each.
    import torch

    torch.set_num_threads(1)


def write_dataset(
    out: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate `num_clips` clips into `out` (created); returns the folder. Refuses a folder that already holds a
    dataset unless `overwrite`."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    root = Path(out)
    if (root / "new_joint_vecs").exists() and not overwrite:
        raise FileExistsError(
            f"{root} already holds a dataset (new_joint_vecs/); pass overwrite=True "
            "(--overwrite) or choose another folder"
        )
    create_dataset_folder(root)
    workers = workers or min(os.cpu_count() or 1, 8)
    tasks = [(str(root), seed, index) for index in range(num_clips)]
    splits = assign_splits(num_clips, seed)
    semantics, train_moments = [], FeatureMoments()
    if workers > 1:
        pool = multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers, _init_worker)
        results = pool.imap(_write_example, tasks, chunksize=16)
    else:
        pool, results = None, map(_write_example, tasks)
    try:
        for record, moments in tqdm(
            results, total=num_clips, disable=not progress, desc="synthetic clips", unit="clip"
        ):
            record["split"] = splits[record["id"]]
            semantics.append(record)
            if record["split"] == "train":
                train_moments += moments
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    write_statistics(root, train_moments)
    write_splits(root, {split: [r["id"] for r in semantics if r["split"] == split] for split in SPLIT_FRACTIONS})
    with open(root / "semantics.jsonl", "w", encoding="utf-8") as handle:
        for record in semantics:
            handle.write(json.dumps(record) + "\n")
    return root
