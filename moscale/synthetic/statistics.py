"""What a written procedural dataset holds: `python -m moscale.synthetic.statistics DIR`.

Reads `DIR/semantics.jsonl` and reports the number of actions per clip, each action's share of all actions, the
share of each count among counted actions, clip lengths in rows, and how many captions are distinct.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np


def dataset_statistics(folder: str | os.PathLike) -> dict:
    """Composition figures of the dataset in `folder` (fractions in [0, 1], lengths in rows)."""
    path = Path(folder) / "semantics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by python -m moscale.synthetic")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{path} holds no clip")
    actions = [action for record in records for action in record["actions"]]
    counted = [action["count"] for action in actions if "count" in action]
    captions = [caption for record in records for caption in record["captions"]]
    rows = np.array([record["num_frames"] for record in records])
    actions_per_clip = Counter(len(record["actions"]) for record in records)
    action_names = Counter(action["name"] for action in actions)
    counts = Counter(counted)
    return {
        "clips": len(records),
        "actions_per_clip": {n: actions_per_clip[n] / len(records) for n in sorted(actions_per_clip)},
        "action_share": {name: action_names[name] / len(actions) for name in sorted(action_names)},
        "count_share": {n: counts[n] / len(counted) for n in sorted(counts)},
        "rows_min": int(rows.min()),
        "rows_median": float(np.median(rows)),
        "rows_max": int(rows.max()),
        "captions": len(captions),
        "distinct_captions": len(set(captions)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moscale.synthetic.statistics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="a folder written by python -m moscale.synthetic")
    args = parser.parse_args(argv)
    figures = dataset_statistics(args.folder)
    print(f"clips: {figures['clips']}")
    for title, key, form in (
        ("actions per clip", "actions_per_clip", ".0%"),
        ("share of all actions", "action_share", ".1%"),
        ("counts among counted actions", "count_share", ".0%"),
    ):
        print(f"{title}: " + ", ".join(f"{name}: {share:{form}}" for name, share in figures[key].items()))
    print(f"rows per clip: {figures['rows_min']} to {figures['rows_max']}, median {figures['rows_median']:g}")
    print(f"distinct captions: {figures['distinct_captions']:,} of {figures['captions']:,}")


if __name__ == "__main__":
    main()
