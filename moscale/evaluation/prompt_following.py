"""Does a pipeline do what the text says? Detector agreement per category, on seen and on unseen phrasings.

    python -m moscale.evaluation.prompt_following --data_dir DIR [--model PATH_OR_HUB_ID] [--seed 0]

For each category (jump, squat and wave counts 1-4, turn direction, which hand waves, travel direction, the order of
2 and of 3 actions) the command generates `--samples_per_category` motions from two prompt sets and reads them back
with the procedural detectors (`moscale.synthetic.detect`):

- `test_split`: captions of the procedural dataset's test split (`DIR/test.txt` + `DIR/semantics.jsonl`), one per
  clip, generated at the clip's own length (`--split val`: the validation split's, `val_split`, on which sampling
  settings such as `--guidance_scale` are chosen without looking at the test split);
- `unseen`: phrasings written here that no caption template of `moscale.synthetic` produces (checked against every
  caption of the dataset), at the length the pipeline picks (its length estimator, else its default).

A sample agrees when the detected motion has the asked fact: the asked action's count, the turn's direction, the
waving hand, the travel direction, or (order categories) every asked action present in the asked order. Other
detected actions are ignored. Generated motions also get the generator's plausibility figures (bone lengths, foot
height above the floor, per-frame joint displacement, planted-foot sliding) so that a motion that "agrees" by
flailing is visible. Every category's agreement is also split by how many actions its prompts ask for, and the table
pools the counting categories that way: whether a count survives being one action of several. For the counting
categories it also says how the counts went wrong (`count_error`): one off, another action's count, or the action
missing.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moscale.evaluation.semantic_accuracy import _match, detect_actions, load_semantics, score_clip
from moscale.motion.representation import HUMANML3D, HUMANML3D_BONE_LENGTHS
from moscale.synthetic.body import TOE

COUNTED = ("jump", "squat", "wave")
COUNTS = (1, 2, 3, 4)
TRAVELLING = ("walk", "run", "side_step", "jump")
CATEGORIES = (
    *(f"{name}_count_{count}" for name in COUNTED for count in COUNTS),
    "turn_direction",
    "wave_hand",
    "travel_direction",
    "order_2",
    "order_3",
)
_NUMBER = {1: "one", 2: "two", 3: "three", 4: "four"}
_TIMES = {1: "a single time", 2: "two times", 3: "three times in a row", 4: "four times in a row"}


# ------------------------------------------------------------------------------------------------ what is judged
def judged_fact(category: str, actions: list[dict[str, Any]]) -> int | None:
    """Index of the asked action a category judges in a ground-truth action list (None: category does not apply).
    Order categories judge the whole list and return 0 when they apply."""
    if category.startswith("order_"):
        return 0 if len(actions) == int(category.split("_")[1]) else None
    for index, action in enumerate(actions):
        name = action["name"]
        if category == "turn_direction" and name == "turn":
            return index
        if category == "wave_hand" and name == "wave":
            return index
        if category == "travel_direction" and name in TRAVELLING and action.get("direction"):
            return index
        if "_count_" in category:
            counted, count = category.split("_count_")
            if name == counted and action.get("count") == int(count):
                return index
    return None


def agrees(category: str, truth: list[dict[str, Any]], detected: list[dict[str, Any]]) -> bool:
    """Whether the detected actions have the fact `category` asks of `truth`."""
    if category.startswith("order_"):
        return bool(score_clip(truth, detected)["order"][0])
    index = judged_fact(category, truth)
    match = _match(truth, detected)[index]
    if match is None:
        return False
    asked, found = truth[index], detected[match]
    if category == "turn_direction" or category == "travel_direction":
        return found.get("direction") == asked["direction"]
    if category == "wave_hand":
        return found.get("side") == asked["side"]
    return found.get("count") == asked["count"]


COUNT_ERRORS = ("right", "one off", "another action's count", "action missing", "other")


def count_error(category: str, truth: list[dict[str, Any]], detected: list[dict[str, Any]]) -> str:
    """How a counting category's sample went (one of `COUNT_ERRORS`): the asked count, one more or fewer, the count
    the caption asks of another of its actions (counts bound to the wrong action), the asked action not found at all,
    or another count. A count both one off and another action's is "another action's count"."""
    index = judged_fact(category, truth)
    match = _match(truth, detected)[index]
    if match is None:
        return "action missing"
    asked, found = truth[index]["count"], detected[match].get("count")
    if found == asked:
        return "right"
    if found in {action.get("count") or 1 for k, action in enumerate(truth) if k != index}:
        return "another action's count"
    return "one off" if found is not None and abs(found - asked) == 1 else "other"


# ----------------------------------------------------------------------------------------------- prompt sets
def test_split_prompts(
    dataset_dir: Path, samples: int, seed: int, categories: tuple[str, ...] = CATEGORIES, split: str = "test"
) -> dict[str, list[dict[str, Any]]]:
    """Per category, `samples` clips of `split` it applies to (its id, first caption, ground-truth actions and length).
    When the split has fewer fitting clips, clips repeat (each repetition is a new sample of the pipeline).
    Clips are drawn for every category in `CATEGORIES` order, so a subset of categories gets the clips a full run
    gets."""
    semantics = load_semantics(dataset_dir)
    split_file = dataset_dir / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"{split_file} not found: pass a folder written by `python -m moscale.synthetic` and one of its splits "
            "(train, val, test)"
        )
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}: choose from {list(CATEGORIES)}")
    prompts = {}
    for category in CATEGORIES:
        fitting = [i for i in ids if i in semantics and judged_fact(category, semantics[i]["actions"]) is not None]
        if not fitting:
            if category not in categories:
                continue
            raise ValueError(f"no test clip of {dataset_dir} fits category {category!r}: write a larger dataset")
        chosen = rng.choice(fitting, size=samples, replace=len(fitting) < samples)
        if category not in categories:
            continue
        prompts[category] = [
            {
                "clip_id": str(i),
                "prompt": semantics[i]["captions"][0],
                "actions": semantics[i]["actions"],
                "num_frames": int(semantics[i]["num_frames"]),
            }
            for i in chosen
        ]
    return {category: prompts[category] for category in categories}


def _counted_phrasings(name: str, count: int) -> list[str]:
    n, times = _NUMBER[count], _TIMES[count]
    plural = count > 1
    return {
        "jump": [
            f"an athlete springs up into the air {times}",
            f"a kid bounces up and down {times}",
            f"a person performs {n} vertical jump{'s' * plural}",
            f"someone leaps straight up {times}",
        ],
        "squat": [
            f"a person crouches down {times}",
            f"someone does {n} knee bend{'s' * plural}",
            f"an athlete dips into a low crouch {times}",
            f"a man lowers his hips and stands back up {times}",
        ],
        "wave": [
            f"a person waves hello {times} using the right hand",
            f"someone greets a friend by waving the left hand {times}",
            f"a woman shakes her right hand in the air {times}",
            f"a man signals with his left hand, waving {times}",
        ],
    }[name]


def _unseen_templates() -> dict[str, list[tuple[str, list[dict[str, Any]]]]]:
    """Category -> [(phrasing, asked actions)]; only the judged fact of each action is given."""
    sets: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for name in COUNTED:
        for count in COUNTS:
            sides = ["right", "left", "right", "left"]
            sets[f"{name}_count_{count}"] = [
                (text, [{"name": name, "count": count, **({"side": sides[i]} if name == "wave" else {})}])
                for i, text in enumerate(_counted_phrasings(name, count))
            ]
    sets["turn_direction"] = (
        [(f"a person spins to the {d}", [{"name": "turn", "direction": d}]) for d in ("left", "right")]
        + [(f"someone pivots {d} on the spot", [{"name": "turn", "direction": d}]) for d in ("left", "right")]
        + [
            (f"a dancer rotates her body towards the {d}", [{"name": "turn", "direction": d}])
            for d in ("left", "right")
        ]
    )
    sets["wave_hand"] = [
        (f"a person greets someone with a {d}-handed wave", [{"name": "wave", "side": d}]) for d in ("left", "right")
    ] + [(f"someone says goodbye, waving the {d} hand", [{"name": "wave", "side": d}]) for d in ("left", "right")]
    sets["travel_direction"] = [
        ("a person strolls ahead a few paces", [{"name": "walk", "direction": "forward"}]),
        ("someone backs up a few paces", [{"name": "walk", "direction": "backward"}]),
        ("a man sprints ahead", [{"name": "run", "direction": "forward"}]),
        ("a woman slides sideways towards the left", [{"name": "side_step", "direction": "left"}]),
        ("a woman slides sideways towards the right", [{"name": "side_step", "direction": "right"}]),
        ("a kid bounds forward", [{"name": "jump", "direction": "forward"}]),
    ]
    squat, turn_left = {"name": "squat"}, {"name": "turn", "direction": "left"}
    wave_right, jump = {"name": "wave", "side": "right"}, {"name": "jump"}
    walk = {"name": "walk", "direction": "forward"}
    sets["order_2"] = [
        ("first a person crouches down, afterwards they spin to the left", [squat, turn_left]),
        ("a man waves hello with his right hand; after that he springs up into the air", [wave_right, jump]),
        ("someone strolls ahead, and once there crouches down", [walk, squat]),
        ("a person springs up into the air followed by a spin to the left", [jump, turn_left]),
    ]
    sets["order_3"] = [
        ("first a person strolls ahead, next crouches down, finally spins to the left", [walk, squat, turn_left]),
        (
            "a man waves hello with his right hand, after that crouches down, and at the end springs up",
            [wave_right, squat, jump],
        ),
        (
            "someone spins to the left, after that strolls ahead, and lastly waves hello with the right hand",
            [turn_left, walk, wave_right],
        ),
    ]
    return sets


HELD_OUT_WORDS = (
    "springs", "bounces", "vertical", "straight up", "crouch", "knee bend", "dips", "lowers", "hello", "greets",
    "goodbye", "shakes", "signals", "-handed", "spin", "pivots", "body", "strolls", "paces", "backs up", "sprints",
    "slides", "bounds", "first", "afterwards", "after that", "followed by", "finally", "lastly", "at the end",
    "in a row",
)  # fmt: skip
"""Words of the unseen phrasings that no caption template of `moscale.synthetic` contains (a test enumerates the
templates): every unseen prompt has at least one, so a model follows it only as far as its text encoder carries
the meaning over from the words it was trained on."""


def unseen_prompts(samples: int, training_captions: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Per category, `samples` prompts cycling through the written phrasings; none may be a dataset caption."""
    prompts = {}
    for category, templates in _unseen_templates().items():
        for text, _ in templates:
            if text in training_captions:
                raise AssertionError(f"the unseen phrasing {text!r} is a caption of the dataset")
        prompts[category] = [
            {
                "prompt": templates[i % len(templates)][0],
                "actions": templates[i % len(templates)][1],
                "num_frames": None,
            }
            for i in range(samples)
        ]
    return prompts


# ----------------------------------------------------------------------------------------------- plausibility
CONTACT_HEIGHT_M = 0.02  # a toe this close to the floor counts as planted


def motion_plausibility(joints_TJ3: np.ndarray, fps: float = HUMANML3D.fps) -> dict[str, float]:
    """Generator-style checks that need no ground truth: bone length error (m), the lowest joint relative to the
    floor the feet stand on (m), the largest per-frame displacement of any joint (m), and foot sliding: the 95th
    percentile of how far a toe moves sideways in one frame while it stays within 2 cm of that floor (m; 0 when
    no toe touches it)."""
    parents = np.array(HUMANML3D.parents)
    lengths = np.linalg.norm(joints_TJ3[:, 1:] - joints_TJ3[:, parents[1:]], axis=-1)
    floor = np.percentile(joints_TJ3[:, TOE, 1], 5)
    touching_TF = joints_TJ3[:, TOE, 1] - floor < CONTACT_HEIGHT_M
    planted_TF = touching_TF[:-1] & touching_TF[1:]
    slide_TF = np.linalg.norm(np.diff(joints_TJ3[:, TOE][..., [0, 2]], axis=0), axis=-1)
    return {
        "bone_length_error_m": float(np.abs(lengths - HUMANML3D_BONE_LENGTHS[1:]).max()),
        "lowest_joint_below_floor_m": float(max(0.0, floor - joints_TJ3[..., 1].min())),
        "max_joint_step_m": float(np.linalg.norm(np.diff(joints_TJ3, axis=0), axis=-1).max()),
        "foot_slide_m": float(np.percentile(slide_TF[planted_TF], 95)) if planted_TF.any() else 0.0,
    }


PLAUSIBILITY_LIMITS = {
    "bone_length_error_m": 0.05,
    "lowest_joint_below_floor_m": 0.05,
    "max_joint_step_m": 0.5,
    "foot_slide_m": 0.025,
}
"""Per-motion limits: 5 cm of bone-length drift, 5 cm below the feet's floor, 0.5 m per frame (the fastest joint
of the real HumanML3D clips we have, a tennis swing), and 2.5 cm per frame of planted-toe sliding (0.5 m/s at 20 fps;
the procedural test clips' own figure is at most 1.7 cm, measured on 600 of them)."""


# ------------------------------------------------------------------------------------------------- the run
def valid_num_frames(pipe, clip_frames: int) -> int:
    """A clip's own length made a valid `num_frames` of `pipe` (clips longer than its window end early)."""
    unit, longest = pipe.vq_model.config.unit_length, pipe.vq_model.config.max_motion_length
    return min(max(clip_frames - clip_frames % unit, pipe.config.min_num_frames), longest)


def sample_generator(seed: int, category: str, start: int) -> torch.Generator:
    """The generator of the batch starting at item `start` of `category`: the same whichever other categories run,
    and shared by `stage_ceilings`, whose plain generation must equal this module's."""
    return torch.Generator().manual_seed(seed * 100_003 + CATEGORIES.index(category) * 1009 + start)


def evaluate_prompt_following(
    pipe,
    prompt_sets: dict[str, dict[str, list[dict[str, Any]]]],
    seed: int = 0,
    batch_size: int = 32,
    **sampling_kwargs,
) -> dict[str, Any]:
    """Generate every prompt of every set and category, detect, and count agreement and plausibility."""
    fps = pipe.fps
    result: dict[str, Any] = {"seed": seed, "sets": {}}
    for set_name, categories in prompt_sets.items():
        per_category, failures = {}, defaultdict(list)
        plausible = defaultdict(int)
        total = 0
        for category, items in categories.items():
            agreed = 0
            by_num_actions: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # actions in the prompt -> agreed, all
            count_errors: dict[str, int] = defaultdict(int)
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                frames = [item["num_frames"] for item in batch]
                if None not in frames:
                    frames = [valid_num_frames(pipe, n) for n in frames]
                generator = sample_generator(seed, category, start)
                kwargs = dict(sampling_kwargs)
                if None not in frames:
                    kwargs["num_frames"] = frames
                out = pipe([item["prompt"] for item in batch], generator=generator, output_type="np", **kwargs)
                for item, joints, length in zip(batch, out.joints, out.lengths):
                    joints = joints[: int(length)]
                    detected = detect_actions(joints, fps=fps)
                    ok = agrees(category, item["actions"], detected)
                    agreed += ok
                    by_num_actions[len(item["actions"])][0] += ok
                    by_num_actions[len(item["actions"])][1] += 1
                    if "_count_" in category:
                        count_errors[count_error(category, item["actions"], detected)] += 1
                    if not ok and len(failures[category]) < 3:
                        failures[category].append({"prompt": item["prompt"], "detected": detected})
                    figures = motion_plausibility(joints, fps)
                    for name, limit in PLAUSIBILITY_LIMITS.items():
                        plausible[name] += figures[name] <= limit
                    total += 1
            per_category[category] = {
                "agreement": agreed / len(items),
                "samples": len(items),
                "by_num_actions": {
                    str(n): {"agreement": ok / count, "samples": count}
                    for n, (ok, count) in sorted(by_num_actions.items())
                },
            }
            if count_errors:
                per_category[category]["count_errors"] = {name: count_errors[name] for name in COUNT_ERRORS}
        result["sets"][set_name] = {
            "categories": per_category,
            "min_agreement": min(v["agreement"] for v in per_category.values()),
            "plausible_fraction": {name: count / total for name, count in plausible.items()},
            "failure_examples": dict(failures),
        }
    return result


def format_table(result: dict[str, Any]) -> str:
    sets = list(result["sets"])
    lines = ["| category | " + " | ".join(sets) + " |", "| --- |" + " --- |" * len(sets)]
    evaluated = {category for entry in result["sets"].values() for category in entry["categories"]}
    for category in (c for c in CATEGORIES if c in evaluated):
        cells = []
        for name in sets:
            entry = result["sets"][name]["categories"].get(category)
            cells.append("-" if entry is None else f"{100 * entry['agreement']:.0f}% (n={entry['samples']})")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    for check in PLAUSIBILITY_LIMITS:
        cells = [f"{100 * result['sets'][name]['plausible_fraction'][check]:.0f}%" for name in sets]
        lines.append(f"| plausible: {check} <= {PLAUSIBILITY_LIMITS[check]} | " + " | ".join(cells) + " |")
    for num_actions, cells in counts_by_num_actions(result).items():
        lines.append(f"| counts, in prompts of {num_actions} action(s) | " + " | ".join(cells) + " |")
    for name, cells in pooled_count_errors(result).items():
        lines.append(f"| counts: {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pooled_count_errors(result: dict[str, Any]) -> dict[str, list[str]]:
    """Table cells (one per prompt set): the share of each `count_error` outcome over the counting categories."""
    pooled: dict[str, list[str]] = {name: [] for name in COUNT_ERRORS}
    for entry in result["sets"].values():
        totals: dict[str, int] = defaultdict(int)
        for figures in entry["categories"].values():
            for name, count in figures.get("count_errors", {}).items():
                totals[name] += count
        samples = sum(totals.values())
        for name in COUNT_ERRORS:
            pooled[name].append(f"{100 * totals[name] / samples:.0f}% (n={samples})" if samples else "-")
    return pooled if any(cell != "-" for cells in pooled.values() for cell in cells) else {}


def counts_by_num_actions(result: dict[str, Any]) -> dict[str, list[str]]:
    """Table cells (one per prompt set) of the counting categories pooled by how many actions their prompts ask for:
    whether a count survives being one action of several."""
    pooled: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for set_name, entry in result["sets"].items():
        for category, figures in entry["categories"].items():
            if "_count_" not in category:
                continue
            for num_actions, part in figures.get("by_num_actions", {}).items():
                pooled[num_actions][set_name][0] += round(part["agreement"] * part["samples"])
                pooled[num_actions][set_name][1] += part["samples"]
    return {
        num_actions: [
            f"{100 * per_set[name][0] / per_set[name][1]:.0f}% (n={per_set[name][1]})" if name in per_set else "-"
            for name in result["sets"]
        ]
        for num_actions, per_set in sorted(pooled.items())
    }


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_clip_arguments(parser: argparse.ArgumentParser, samples_per_category: int) -> None:
    """The flags that pick the clips a command prompts and how it batches them: the procedural folder, the samples
    per category, the categories, the seed and the batch size."""
    parser.add_argument("--data_dir", required=True, help="a procedural dataset folder (python -m moscale.synthetic)")
    parser.add_argument("--samples_per_category", type=_at_least_one, default=samples_per_category)
    parser.add_argument(
        "--categories",
        nargs="+",
        choices=CATEGORIES,
        default=CATEGORIES,
        metavar="CATEGORY",
        help=f"default: all of {', '.join(CATEGORIES)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=_at_least_one, default=32)


def add_prompt_arguments(parser: argparse.ArgumentParser, samples_per_category: int) -> None:
    """The flags of the commands that prompt a pipeline with a procedural split's captions: the clips
    (`add_clip_arguments`), the model, the split, and the sampling settings."""
    add_clip_arguments(parser, samples_per_category)
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled pipeline)")
    parser.add_argument(
        "--split",
        default="test",
        help="split whose captions are prompted (train, val, test; default test; val to tune sampling settings)",
    )
    group = parser.add_argument_group("sampling (default: the pipeline's)")
    group.add_argument("--guidance_scale", type=float, default=None)
    group.add_argument("--refinement_steps", type=int, nargs="+", default=None, help="steps per scale, e.g. 1 2 5 10")
    group.add_argument("--temperature", type=float, default=None)
    group.add_argument("--top_p", type=float, default=None)
    group.add_argument("--top_k", type=int, default=None)


def sampling_settings(args: argparse.Namespace) -> dict[str, Any]:
    names = ("guidance_scale", "refinement_steps", "temperature", "top_p", "top_k")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moscale.evaluation.prompt_following",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_prompt_arguments(parser, samples_per_category=20)
    parser.add_argument(
        "--split_only",
        action="store_true",
        help="prompt the split's captions only, not the unseen phrasings (half the time: for tuning on val)",
    )
    parser.add_argument("--output_dir", default=None, help="write result.json and table.md here")
    args = parser.parse_args(argv)

    from moscale import MoScalePipeline
    from moscale.pretrained import bundled_pipeline_path

    dataset_dir = Path(args.data_dir)
    pipe = MoScalePipeline.from_pretrained(args.model or bundled_pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    captions = {c for record in load_semantics(dataset_dir).values() for c in record["captions"]}
    categories = tuple(args.categories)
    prompt_sets = {
        f"{args.split}_split": test_split_prompts(
            dataset_dir, args.samples_per_category, args.seed, categories, split=args.split
        )
    }
    if not args.split_only:
        unseen = unseen_prompts(args.samples_per_category, captions)
        prompt_sets["unseen"] = {category: unseen[category] for category in categories}
    settings = sampling_settings(args)
    result = evaluate_prompt_following(pipe, prompt_sets, seed=args.seed, batch_size=args.batch_size, **settings)
    result["model"] = str(args.model or "bundled")
    result["sampling"] = settings
    table = format_table(result)
    print(table)
    for name, entry in result["sets"].items():
        print(f"{name}: lowest category agreement {100 * entry['min_agreement']:.0f}%")
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        (out / "table.md").write_text(table + "\n")
        print(f"wrote {out / 'result.json'} and {out / 'table.md'}")


if __name__ == "__main__":
    main()
