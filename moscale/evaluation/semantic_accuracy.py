"""Semantic accuracy: does a generated motion do what its caption asked, as read back by the procedural detectors?

The procedural dataset (`moscale.synthetic`) knows exactly what each clip contains (`semantics.jsonl`: actions in
order, with direction, side, count and turn angle). `moscale.synthetic.detect` reads the same facts back from any
motion's joints. Comparing the two for generated motions measures what the distribution metrics (FID, R-precision)
cannot: whether "wave the left hand three times, then jump" produced three left-hand waves followed by a jump.

Categories (each a fraction of the ground-truth facts it applies to):

- ``action``: each asked action is present (matched by name, ignoring order);
- ``count``: a counted action (steps, jumps, waves, squats, kicks) was done the asked number of times;
- ``direction``: walk/run/side step/jump/turn went the asked way (forward/backward/left/right/in place);
- ``side``: the asked hand waved / the asked foot kicked;
- ``angle``: a turn was the asked 90 or 180 degrees;
- ``order``: texts with 2 or 3 actions, all present and done in the asked order (other detections ignored);
- ``exact``: the detected action list equals the asked one in order, names, directions, sides, counts and angles
  (nothing missing, nothing extra).

An attribute is judged on the matched action: the k-th asked action of a name goes with the k-th detected action
of that name, so a missing action counts as wrong for its attributes too. Results are given overall and by text
complexity (number of asked actions: 1, 2, 3). Run the same function on the dataset's own joints to get the
detectors' ceiling: generated motions cannot be judged more accurately than the detectors read the real ones.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = ("action", "count", "direction", "side", "angle", "order", "exact")
_ATTRIBUTES = ("count", "direction", "side", "angle")
_KEY_FIELDS = ("name", "direction", "side", "count", "angle")


def load_semantics(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Clip id -> ground-truth record from a ``semantics.jsonl`` file (a folder holding one is accepted)."""
    path = Path(path)
    if path.is_dir():
        path = path / "semantics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: semantic accuracy needs the ground truth that `python -m moscale.synthetic` writes "
            "beside a procedural dataset."
        )
    records = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "id" not in record or not isinstance(record.get("actions"), list):
            raise ValueError(f"{path}, line {number}: a record needs an 'id' and a list of 'actions'.")
        records[str(record["id"])] = record
    return records


def detect_actions(joints_TJ3: np.ndarray, fps: float = 20.0) -> list[dict[str, Any]]:
    """The actions `moscale.synthetic.detect` finds in HumanML3D joints (T, 22, 3), as plain dicts in time order."""
    from moscale.synthetic import detect

    return detect(np.asarray(joints_TJ3), fps=fps).to_dict()["actions"]


def _key(action: Mapping[str, Any]) -> tuple:
    return tuple(action.get(field) for field in _KEY_FIELDS)


def _match(truth: Sequence[Mapping], detected: Sequence[Mapping]) -> list[int | None]:
    """For each asked action, the index of its detected counterpart (k-th of a name with k-th of that name)."""
    positions: dict[str, list[int]] = defaultdict(list)
    for index, action in enumerate(detected):
        positions[action["name"]].append(index)
    seen: Counter = Counter()
    matches: list[int | None] = []
    for action in truth:
        name = action["name"]
        rank = seen[name]
        seen[name] += 1
        matches.append(positions[name][rank] if rank < len(positions[name]) else None)
    return matches


def score_clip(truth: Sequence[Mapping[str, Any]], detected: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """(correct, applicable) per category for one motion: ``truth`` as in semantics.jsonl, ``detected`` as
    `detect_actions` returns. Categories that do not apply to the clip are absent."""
    if not truth:
        raise ValueError("A ground-truth record without actions cannot be scored.")
    matches = _match(truth, detected)
    scores: dict[str, list[int]] = {"action": [0, 0]}
    for action, match in zip(truth, matches):
        scores["action"][0] += match is not None
        scores["action"][1] += 1
        for attribute in _ATTRIBUTES:
            if action.get(attribute) is None:
                continue
            correct = match is not None and detected[match].get(attribute) == action[attribute]
            counts = scores.setdefault(attribute, [0, 0])
            counts[0] += correct
            counts[1] += 1
    if len(truth) >= 2:
        in_order = None not in matches and matches == sorted(matches)
        scores["order"] = [int(in_order), 1]
    scores["exact"] = [int([_key(a) for a in truth] == [_key(a) for a in detected]), 1]
    return {category: (correct, total) for category, (correct, total) in scores.items()}


def semantic_accuracy(
    pairs: Iterable[tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
) -> dict[str, Any]:
    """Accuracy per category, overall and by complexity, from (ground-truth actions, detected actions) pairs.

    Returns ``{"overall": {category: accuracy}, "by_complexity": {"1": {...}, "2": ..., "3": ...},
    "support": {"overall": {category: applicable facts}, "by_complexity": ...}, "motions": n}``. A category with
    no applicable fact in a group is absent from that group.
    """
    totals: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    motions = 0
    for truth, detected in pairs:
        motions += 1
        for category, (correct, applicable) in score_clip(truth, detected).items():
            for group in ("overall", str(len(truth))):
                totals[group][category][0] += correct
                totals[group][category][1] += applicable
    if motions == 0:
        raise ValueError("No motion to score.")

    def accuracies(group: str) -> dict[str, float]:
        return {c: totals[group][c][0] / totals[group][c][1] for c in CATEGORIES if c in totals[group]}

    def support(group: str) -> dict[str, int]:
        return {c: totals[group][c][1] for c in CATEGORIES if c in totals[group]}

    complexities = sorted((group for group in totals if group != "overall"), key=int)
    return {
        "motions": motions,
        "overall": accuracies("overall"),
        "by_complexity": {group: accuracies(group) for group in complexities},
        "support": {"overall": support("overall"), "by_complexity": {group: support(group) for group in complexities}},
    }


def flatten_accuracy(result: Mapping[str, Any], prefix: str = "semantic") -> dict[str, float]:
    """``{"semantic_count": ..., "semantic_count_2": ...}``: one scalar per category and complexity, for tables."""
    flat = {f"{prefix}_{category}": value for category, value in result["overall"].items()}
    for complexity, values in result["by_complexity"].items():
        flat.update({f"{prefix}_{category}_{complexity}": value for category, value in values.items()})
    return flat
