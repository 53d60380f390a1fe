"""Agreement of the semantic detectors with the procedural dataset's ground truth.

    python benchmarks/detector_agreement.py --num_clips 1000 --seed 0
    python benchmarks/detector_agreement.py --data_dir DIR         # a folder written by python -m moscale.synthetic
    python benchmarks/detector_agreement.py --num_clips 100 --jitter 0.005   # 5 mm of noise on every joint

Each clip goes through the same path as a written dataset: generated joints -> `features_from_joints` ->
`recover_from_ric` (the `new_joints` a model is trained on) -> `detect`. A clip agrees when the detected list of
actions equals the ground truth in order, name, direction, side, count and turn angle. The table also gives the
agreement per action, the false detections (an action detected that the clip does not contain), and the errors
of the measured travel distances and turn angles. `--jitter` adds Gaussian noise of that standard deviation
(metres, seeded by the clip) to every joint before detection, as a measurement would.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from moscale.synthetic import detect, make_example

KEY_FIELDS = ("name", "direction", "side", "count", "angle")


def _key(action: dict) -> tuple:
    return tuple(action.get(field) for field in KEY_FIELDS)


def _generated(task: tuple[int, int, float]) -> tuple[list[dict], dict]:
    seed, index, jitter = task
    example = make_example(seed, index)
    joints = example.joints
    if jitter > 0:
        joints = joints + np.random.default_rng([seed, index, 1]).normal(0.0, jitter, joints.shape)
    return example.semantics["actions"], detect(joints).to_dict()


def _from_folder(task: tuple[str, dict]) -> tuple[list[dict], dict]:
    folder, record = task
    joints = np.load(Path(folder) / "new_joints" / f"{record['id']}.npy")
    return record["actions"], detect(joints, fps=record["fps"]).to_dict()


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def summarize(results: list[tuple[list[dict], dict]]) -> dict:
    """Agreement figures from (ground-truth actions, detection) pairs."""
    exact = order = 0
    per_action, per_action_ok = Counter(), Counter()
    false_detections, missed = Counter(), Counter()
    distance_errors, turn_errors = [], []
    for truth, detection in results:
        detected = detection["actions"]
        exact += [_key(a) for a in truth] == [_key(a) for a in detected]
        same_order = [a["name"] for a in truth] == [a["name"] for a in detected]
        order += same_order
        truth_names = Counter(a["name"] for a in truth)
        detected_names = Counter(a["name"] for a in detected)
        false_detections.update(detected_names - truth_names)
        missed.update(truth_names - detected_names)
        for i, action in enumerate(truth):
            per_action[action["name"]] += 1
            match = same_order and _key(action) == _key(detected[i])
            per_action_ok[action["name"]] += match
            if same_order and action.get("distance", 0) > 0.2 and detected[i].get("distance") is not None:
                distance_errors.append(abs(detected[i]["distance"] - action["distance"]) / action["distance"])
            if same_order and action["name"] == "turn":
                sign = 1 if action["direction"] == "left" else -1
                turn_errors.append(abs(detected[i]["degrees"] - sign * action["angle"]))
    n = len(results)
    return {
        "clips": n,
        "exact": exact / n,
        "order": order / n,
        "per_action": {name: (per_action_ok[name], per_action[name]) for name in sorted(per_action)},
        "false_detections": dict(false_detections),
        "missed": dict(missed),
        "distance_relative_error_median": float(np.median(distance_errors)) if distance_errors else None,
        "distance_relative_error_p95": float(np.percentile(distance_errors, 95)) if distance_errors else None,
        "turn_error_degrees_median": float(np.median(turn_errors)) if turn_errors else None,
        "turn_error_degrees_max": float(np.max(turn_errors)) if turn_errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_clips", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", help="read new_joints/ and semantics.jsonl of a written dataset instead")
    parser.add_argument("--jitter", type=float, default=0.0, help="noise (metres) added to generated joints")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    if args.data_dir:
        lines = (Path(args.data_dir) / "semantics.jsonl").read_text(encoding="utf-8").splitlines()
        tasks, worker = [(args.data_dir, json.loads(line)) for line in lines], _from_folder
    else:
        tasks, worker = [(args.seed, index, args.jitter) for index in range(args.num_clips)], _generated
    with multiprocessing.get_context("fork").Pool(args.workers, _init_worker) as pool:
        results = list(tqdm(pool.imap(worker, tasks, chunksize=8), total=len(tasks), desc="detecting"))
    figures = summarize(results)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"clips: {figures['clips']}")
    print(f"exact agreement (order, names, directions, sides, counts, angles): {figures['exact']:.2%}")
    print(f"action order agreement: {figures['order']:.2%}")
    print("| action | agree | of |")
    print("| --- | --- | --- |")
    for name, (ok, total) in figures["per_action"].items():
        print(f"| {name} | {ok / total:.1%} | {total} |")
    print(f"false detections (absent action reported): {figures['false_detections'] or 'none'}")
    print(f"missed actions: {figures['missed'] or 'none'}")
    print(
        f"travel distance relative error: median {figures['distance_relative_error_median']:.3f}, "
        f"95th percentile {figures['distance_relative_error_p95']:.3f}"
    )
    print(
        f"turn angle error (degrees): median {figures['turn_error_degrees_median']:.1f}, "
        f"max {figures['turn_error_degrees_max']:.1f}"
    )


if __name__ == "__main__":
    main()
