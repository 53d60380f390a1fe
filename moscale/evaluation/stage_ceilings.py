"""Which stage loses what a caption asks? Detector agreement of the data, the tokenizer, and sampling from each scale.

    python -m moscale.evaluation.stage_ceilings --data_dir DIR [--model PATH_OR_HUB_ID] [--split test]

For the clips that `moscale.evaluation.prompt_following` prompts (same categories, same draw of clips per seed), the
procedural detectors judge, per category:

- `data`: the clip itself (100 % unless a detector misreads the generator);
- `latent`: the encoder's continuous latent of the clip, decoded without quantisation (what the autoencoder keeps);
- `tokenizer`: the clip's own codes, decoded by the pipeline: the most that any generation can follow;
- `from scale k`: the pipeline's generation for the clip's caption and length with the clip's own codes forced on
  scales 0 .. k-1, so that the transformer samples scale k and the finer ones. `from scale 0` is plain generation.

Reading across a row tells where a fact is decided: a count that `from scale 3` keeps and `from scale 2` loses is
lost when scale 2 is sampled; a count the tokenizer already loses needs a better tokenizer, not a better
transformer, and one the latent keeps but the codes lose needs more or better codes. Every `from scale k` column
draws with the same generator seeds, so columns differ by the forced codes only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moscale.evaluation.prompt_following import (
    CATEGORIES,
    add_prompt_arguments,
    agrees,
    sample_generator,
    sampling_settings,
    test_split_prompts,
    valid_num_frames,
)
from moscale.evaluation.semantic_accuracy import detect_actions


def stage_agreement(
    pipe,
    dataset_dir: Path,
    split: str = "test",
    samples: int = 40,
    seed: int = 0,
    batch_size: int = 32,
    categories: tuple[str, ...] = CATEGORIES,
    sample: bool = True,
    **sampling_kwargs,
) -> dict[str, dict[str, float]]:
    """Per category, the share of clips whose fact survives each stage: {"data", "latent", "tokenizer", "from_scale_k"}.
    `sample=False` judges the data, the latent and the tokenizer only (no transformer call)."""
    num_scales = len(pipe.vq_model.config.scales) if sample else 0
    prompts = test_split_prompts(Path(dataset_dir), samples, seed, categories=categories, split=split)
    table: dict[str, dict[str, float]] = {}
    for category, items in prompts.items():
        agreed = {"data": 0, "latent": 0, "tokenizer": 0, **{f"from_scale_{k}": 0 for k in range(num_scales)}}
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            lengths_B = torch.tensor([valid_num_frames(pipe, item["num_frames"]) for item in batch])
            clips_BND, normalized_BND = _load_clips(
                pipe, Path(dataset_dir), [item["clip_id"] for item in batch], lengths_B
            )
            with torch.no_grad():
                encoded = pipe.vq_model.encode(normalized_BND, lengths_B)
                codes = encoded.codes
                frames = int(lengths_B.max())
                latent_BND = pipe.denormalize(pipe.vq_model.decode(encoded.latent, lengths_B))[:, :frames]
                joints = {
                    "data": pipe.features_to_joints(clips_BND[:, :frames], lengths_B),
                    "latent": pipe.features_to_joints(latent_BND, lengths_B),
                    "tokenizer": pipe.features_to_joints(pipe.decode_tokens(codes, lengths_B), lengths_B),
                }

            for forced in range(num_scales):
                generator = sample_generator(seed, category, start)
                prompts_B = [item["prompt"] for item in batch]
                out = generate_with_forced_codes(
                    pipe, prompts_B, lengths_B, codes, forced, generator, **sampling_kwargs
                )
                joints[f"from_scale_{forced}"] = out.joints
            for stage, joints_BNJ3 in joints.items():
                for item, motion, length in zip(batch, joints_BNJ3.numpy(), lengths_B.tolist()):
                    agreed[stage] += agrees(category, item["actions"], detect_actions(motion[:length], fps=pipe.fps))
        table[category] = {stage: count / len(items) for stage, count in agreed.items()}
    return table


def _load_clips(pipe, dataset_dir: Path, clip_ids: list[str], lengths_B: torch.Tensor):
    """Raw features (B, window, D) and the same in the model's space, both zero beyond each length (as in training)."""
    window, motion_dim = pipe.vq_model.config.max_motion_length, pipe.vq_model.config.motion_dim
    clips_BND, normalized_BND = torch.zeros(2, len(clip_ids), window, motion_dim)
    for b, (clip_id, length) in enumerate(zip(clip_ids, lengths_B.tolist())):
        features = np.load(dataset_dir / "new_joint_vecs" / f"{clip_id}.npy")[:length]
        clips_BND[b, :length] = torch.as_tensor(features, dtype=torch.float32)
        normalized_BND[b, :length] = pipe.normalize(clips_BND[b, :length])
    return clips_BND, normalized_BND


def generate_with_forced_codes(pipe, prompts, lengths_B, codes, num_forced: int, generator, **sampling_kwargs):
    """`pipe(prompts)` at `lengths_B` frames, with `codes[k]` replacing the sampled tokens of scales k < num_forced."""

    def force_codes(pipe, step, scale_index, outputs):
        return {"tokens": codes[scale_index]} if scale_index < num_forced else None

    return pipe(
        prompts, num_frames=lengths_B.tolist(), generator=generator, callback_on_step_end=force_codes, **sampling_kwargs
    )


def format_table(table: dict[str, dict[str, float]]) -> str:
    stages = list(next(iter(table.values())))
    lines = ["| category | " + " | ".join(s.replace("_", " ") for s in stages) + " |"]
    lines.append("| --- |" + " --- |" * len(stages))
    for category, row in table.items():
        lines.append(f"| {category} | " + " | ".join(f"{100 * row[s]:.0f}%" for s in stages) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moscale.evaluation.stage_ceilings",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_prompt_arguments(parser, samples_per_category=40)
    parser.add_argument(
        "--vq_model",
        default=None,
        help="judge this tokenizer folder instead of the pipeline's (data, latent and tokenizer columns: the pipeline's "
        "transformer was trained on other codes); it must use the pipeline's motion statistics",
    )
    parser.add_argument("--output_dir", default=None, help="write result.json and table.md here")
    args = parser.parse_args(argv)

    from moscale import MoScalePipeline, MoScaleVQModel
    from moscale.pretrained import bundled_pipeline_path

    pipe = MoScalePipeline.from_pretrained(args.model or bundled_pipeline_path())
    if args.vq_model:
        pipe.vq_model = MoScaleVQModel.from_pretrained(args.vq_model).eval()
    pipe.set_progress_bar_config(disable=True)
    if not pipe.has_motion_statistics:
        raise ValueError(f"{args.model}: the pipeline has no motion statistics, so its motions have no joints to judge")
    table = stage_agreement(
        pipe,
        Path(args.data_dir),
        args.split,
        args.samples_per_category,
        args.seed,
        args.batch_size,
        tuple(args.categories),
        sample=args.vq_model is None,
        **sampling_settings(args),
    )
    text = format_table(table)
    print(text)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = {"model": str(args.model or "bundled"), "vq_model": args.vq_model}
        result.update(split=args.split, seed=args.seed, sampling=sampling_settings(args))
        result["samples_per_category"] = args.samples_per_category
        result["categories"] = table
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "table.md").write_text(text + "\n")
        print(f"wrote {out / 'result.json'} and {out / 'table.md'}")


if __name__ == "__main__":
    main()
