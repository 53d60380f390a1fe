"""What a run of the protocol reports: ``results.md`` (our numbers beside the paper's, semantic accuracy) and the
environment recorded in ``results.json``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from moscale.evaluation.semantic_accuracy import CATEGORIES

# Table 1 of the paper (HumanML3D and KIT-ML test sets, T2M evaluator); Top-3 on HumanML3D is from its complexity
# table. Values the paper does not report are absent.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "humanml3d": {
        "top1": 0.540,
        "top3": 0.817,
        "fid": 0.046,
        "matching_score": 2.830,
        "diversity": 9.525,
        "multimodality": 0.873,
    },
    "kit-ml": {"top1": 0.442, "fid": 0.173, "matching_score": 2.717},
}

METRIC_NAMES = {
    "top1": "R-precision Top-1 ↑",
    "top2": "R-precision Top-2 ↑",
    "top3": "R-precision Top-3 ↑",
    "fid": "FID ↓",
    "matching_score": "MM-Dist ↓",
    "diversity": "Diversity →",
    "multimodality": "MultiModality ↑",
}


def markdown_table(summary: dict[str, dict[str, float]], dataset: str, evaluator: str, repeats: int) -> str:
    """Ours beside the paper's values (only for the T2M evaluator: other evaluators are not comparable)."""
    paper = PAPER_RESULTS.get(dataset, {}) if evaluator == "t2m" else {}
    paper_header = "Paper" if evaluator == "t2m" else "Paper (not comparable: other evaluator)"
    lines = [
        f"| Metric | {paper_header} | Ours (mean ± 95% CI, {repeats} repeats) | Real motions (ours) |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in METRIC_NAMES.items():
        if name not in summary:
            continue
        ours = summary[name]
        real = summary.get(f"real_{name}")
        real_text = f"{real['mean']:.3f} ± {real['ci95']:.3f}" if real else "-"
        paper_text = f"{paper[name]:.3f}" if name in paper else "-"
        lines.append(f"| {label} | {paper_text} | {ours['mean']:.3f} ± {ours['ci95']:.3f} | {real_text} |")
    return "\n".join(lines) + "\n"


def semantic_table(summary: dict[str, dict[str, float]]) -> str:
    """Semantic accuracy (%) per category, overall and by number of actions; real motions in parentheses."""
    complexities = sorted(
        {name.rsplit("_", 1)[1] for name in summary if name.startswith("semantic_") and name[-1].isdigit()}
    )
    header = ["Category", "All texts", *(f"{c} action{'s' if c != '1' else ''}" for c in complexities)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for category in CATEGORIES:
        if f"semantic_{category}" not in summary:
            continue
        cells = [category]
        for suffix in ["", *(f"_{c}" for c in complexities)]:
            ours, real = summary.get(f"semantic_{category}{suffix}"), summary.get(f"real_semantic_{category}{suffix}")
            cells.append("-" if ours is None else f"{100 * ours['mean']:.1f} ({100 * real['mean']:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def environment(accelerator: Accelerator, dtype: torch.dtype) -> dict[str, Any]:
    """What else can change the numbers: versions, device, precision settings, processes."""
    import accelerate
    import diffusers
    import scipy
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "dtype": str(dtype).removeprefix("torch."),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch_threads": torch.get_num_threads(),
    }


def write_report(output_dir: Path, results: dict[str, Any]) -> str:
    """Write ``results.json`` (everything) and ``results.md`` (the tables) in `output_dir`; returns the tables."""
    summary, repeats = results["summary"], results["settings"]["repeats"]
    table = markdown_table(summary, results["dataset_format"], results["evaluator"]["kind"], repeats)
    if results["semantics"] is not None:
        table += "\nSemantic accuracy, % (real motions, the detectors' ceiling, in parentheses):\n\n"
        table += semantic_table(summary)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "results.md").write_text(table)
    return table
