"""Which classifier-free guidance scale should a pipeline sample with? Chosen on the validation split's captions.

    python -m moscale.evaluation.tune_guidance --data_dir DIR --model PIPELINE_FOLDER [--write]

For each of `--guidance_scales` the command prompts the validation split's captions exactly as
`moscale.evaluation.prompt_following --split val` does (same clips, same seeds) and scores the detector agreement per
category. The winner is the scale with the best mean agreement over categories; a tie goes to the lower scale, which
samples closer to the model's own distribution (and at 0 skips the unconditional pass). Neither the test split nor
the unseen phrasings are looked at, so what `prompt_following` reports on them afterwards is not tuned on.

`--write` makes the winner the folder's default: `guidance_scale` in its scheduler and transformer configs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moscale.evaluation.prompt_following import (
    CATEGORIES,
    add_clip_arguments,
    evaluate_prompt_following,
    test_split_prompts,
)

DEFAULT_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0)
CONFIGS_WITH_GUIDANCE = ("scheduler/scheduler_config.json", "transformer/config.json")


def mean_agreement(categories: dict[str, dict[str, Any]]) -> float:
    return sum(entry["agreement"] for entry in categories.values()) / len(categories)


def tune_guidance(
    pipe,
    data_dir: Path,
    guidance_scales: tuple[float, ...],
    samples_per_category: int = 20,
    seed: int = 0,
    batch_size: int = 32,
    categories: tuple[str, ...] = CATEGORIES,
) -> dict[str, Any]:
    """Per guidance scale, the validation split's agreement per category and its mean; `best` is the winner."""
    prompts = test_split_prompts(data_dir, samples_per_category, seed, categories, split="val")
    per_scale = {}
    for scale in guidance_scales:
        result = evaluate_prompt_following(
            pipe, {"val_split": prompts}, seed=seed, batch_size=batch_size, guidance_scale=scale
        )
        per_scale[scale] = result["sets"]["val_split"]
    best = max(sorted(guidance_scales), key=lambda scale: mean_agreement(per_scale[scale]["categories"]))
    return {
        "seed": seed,
        "samples_per_category": samples_per_category,
        "best": best,
        "mean_agreement": {scale: mean_agreement(entry["categories"]) for scale, entry in per_scale.items()},
        "scales": per_scale,
    }


def format_table(result: dict[str, Any]) -> str:
    scales = list(result["scales"])
    lines = [
        "| category | " + " | ".join(f"guidance {scale:g}" for scale in scales) + " |",
        "| --- |" + " --- |" * len(scales),
    ]
    evaluated = result["scales"][scales[0]]["categories"]
    for category in (c for c in CATEGORIES if c in evaluated):
        cells = [f"{100 * result['scales'][scale]['categories'][category]['agreement']:.0f}%" for scale in scales]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    means = [f"**{100 * result['mean_agreement'][scale]:.1f}%**" for scale in scales]
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


def write_default_guidance(pipeline_dir: Path, guidance_scale: float) -> list[Path]:
    """Set `guidance_scale` in the folder's scheduler and transformer configs; returns the files changed."""
    changed = []
    for name in CONFIGS_WITH_GUIDANCE:
        path = pipeline_dir / name
        if path.is_file():
            config = json.loads(path.read_text())
            config["guidance_scale"] = float(guidance_scale)
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            changed.append(path)
    if not changed:
        raise FileNotFoundError(
            f"{pipeline_dir} has neither of {list(CONFIGS_WITH_GUIDANCE)}: pass a pipeline folder written by "
            "save_pretrained"
        )
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moscale.evaluation.tune_guidance",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_clip_arguments(parser, samples_per_category=20)
    parser.add_argument("--model", required=True, help="the pipeline folder to tune")
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=list(DEFAULT_SCALES), metavar="SCALE")
    parser.add_argument("--output_dir", default=None, help="write result.json and table.md here")
    parser.add_argument("--write", action="store_true", help="make the best scale the pipeline folder's default")
    args = parser.parse_args(argv)
    if any(scale < 0 for scale in args.guidance_scales):
        parser.error("--guidance_scales must be >= 0 (0 turns guidance off)")

    from moscale import MoScalePipeline

    pipe = MoScalePipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    result = tune_guidance(
        pipe,
        Path(args.data_dir),
        tuple(dict.fromkeys(args.guidance_scales)),
        args.samples_per_category,
        args.seed,
        args.batch_size,
        tuple(args.categories),
    )
    table = format_table(result)
    print(table)
    print(f"best guidance scale on the validation split: {result['best']:g}")
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "table.md").write_text(table + "\n")
        print(f"wrote {out / 'result.json'} and {out / 'table.md'}")
    if args.write:
        for path in write_default_guidance(Path(args.model), result["best"]):
            print(f"guidance_scale {result['best']:g} written to {path}")


if __name__ == "__main__":
    main()
