"""Does sampling with a bfloat16 transformer change what the bundled pipeline generates? Tokens and semantics.

    python benchmarks/bf16_quality.py --data_dir DIR [--samples_per_category 20] [--seeds 0 1]

DIR is a procedural dataset (python -m moscale.synthetic). For each seed the prompt-following evaluation
(`moscale.evaluation.prompt_following`: detector agreement per category, on test-split captions and on unseen
phrasings) runs twice on the same prompts and random streams: float32, and with the transformer cast to bfloat16
(`pipe.transformer.to(torch.bfloat16)`; the tokenizer stays float32). The noise to compare the bf16 change with is
the change between two float32 seeds, and the binomial standard error of an agreement share. The token agreement
is measured on the test-split captions of the first seed: the share of identical tokens per scale and of samples
identical at every scale (sampling is chaotic: one different draw changes everything after it).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from moscale import MoScalePipeline
from moscale.evaluation.prompt_following import evaluate_prompt_following, test_split_prompts, unseen_prompts
from moscale.evaluation.semantic_accuracy import load_semantics
from moscale.pretrained import bundled_pipeline_path


def mean_agreement(result: dict, set_name: str) -> tuple[float, int]:
    """Agreement over every sample of a prompt set, and the number of samples."""
    categories = result["sets"][set_name]["categories"].values()
    samples = sum(c["samples"] for c in categories)
    return sum(c["agreement"] * c["samples"] for c in categories) / samples, samples


def token_agreement(pipe: MoScalePipeline, low: MoScalePipeline, prompts: list[dict], batch_size: int) -> dict:
    same_tokens = [0] * len(pipe.vq_model.config.scales)
    valid_tokens = [0] * len(same_tokens)
    same_samples = 0
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        texts = [item["prompt"] for item in batch]
        outs = [
            p(texts, generator=torch.Generator().manual_seed(start), output_type="latent").tokens for p in (pipe, low)
        ]
        identical = torch.ones(len(batch), dtype=torch.bool)
        for k, (a, b) in enumerate(zip(*outs)):
            valid = a >= 0
            same_tokens[k] += int(((a == b) & valid).sum())
            valid_tokens[k] += int(valid.sum())
            identical &= ((a == b) | ~valid).all(dim=1)
        same_samples += int(identical.sum())
    return {
        "per_scale": [s / v for s, v in zip(same_tokens, valid_tokens)],
        "identical_samples": same_samples / len(prompts),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--model", default=None, help="pipeline folder (default: the bundled pipeline)")
    parser.add_argument("--samples_per_category", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    pipe = MoScalePipeline.from_pretrained(args.model or bundled_pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    low = MoScalePipeline.from_pretrained(args.model or bundled_pipeline_path())
    low.transformer.to(torch.bfloat16)
    low.set_progress_bar_config(disable=True)
    captions = {c for record in load_semantics(args.data_dir).values() for c in record["captions"]}

    report = {"seeds": {}}
    with torch.no_grad():
        for seed in args.seeds:
            prompt_sets = {
                "test_split": test_split_prompts(args.data_dir, args.samples_per_category, seed),
                "unseen": unseen_prompts(args.samples_per_category, captions),
            }
            results = {
                name: evaluate_prompt_following(p, prompt_sets, seed=seed, batch_size=args.batch_size)
                for name, p in (("fp32", pipe), ("bf16", low))
            }
            report["seeds"][seed] = {
                name: {s: mean_agreement(result, s)[0] for s in prompt_sets} for name, result in results.items()
            }
            report["seeds"][seed]["categories"] = {
                name: {s: {c: v["agreement"] for c, v in r["sets"][s]["categories"].items()} for s in prompt_sets}
                for name, r in results.items()
            }
            if seed == args.seeds[0]:
                items = [item for items in prompt_sets["test_split"].values() for item in items]
                report["tokens"] = token_agreement(pipe, low, items, args.batch_size)
                report["samples_per_set"] = {s: mean_agreement(results["fp32"], s)[1] for s in prompt_sets}

    print("agreement with the asked fact, all categories pooled (fp32 / bf16):")
    for seed, entry in report["seeds"].items():
        for set_name, samples in report["samples_per_set"].items():
            fp32, bf16 = entry["fp32"][set_name], entry["bf16"][set_name]
            error = math.sqrt(fp32 * (1 - fp32) / samples)
            print(f"  seed {seed} {set_name:<10s} {fp32:.3f} / {bf16:.3f}  (bf16 - fp32 {bf16 - fp32:+.3f}; "
                  f"binomial standard error {error:.3f}, n={samples})")  # fmt: skip
    if len(args.seeds) > 1:
        first, second = (report["seeds"][s]["fp32"] for s in args.seeds[:2])
        for set_name in report["samples_per_set"]:
            print(f"  fp32 seed {args.seeds[1]} - seed {args.seeds[0]} ({set_name}): "
                  f"{second[set_name] - first[set_name]:+.3f}")  # fmt: skip
    tokens = report["tokens"]
    per_scale = "/".join(f"{a:.3f}" for a in tokens["per_scale"])
    print(f"token agreement bf16 vs fp32 (test-split captions, seed {args.seeds[0]}): per scale {per_scale}, "
          f"identical samples {tokens['identical_samples']:.2f}")  # fmt: skip
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
