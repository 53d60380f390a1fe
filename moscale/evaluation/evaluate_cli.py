"""`moscale evaluate`: the paper's evaluation protocol (`moscale.evaluation.protocol`) for a MoScale pipeline on a
HumanML3D-layout test split.

    moscale evaluate --model path/to/pipeline --data_dir data/HumanML3D \
        --evaluator t2m --evaluator_path checkpoint_dir --glove_path glove --output_dir eval/moscale

It is expensive, so it runs unchanged on several processes (`torchrun --nproc_per_node N examples/evaluate.py ...`
or `accelerate launch examples/evaluate.py ...`), with the same numbers on any number of processes.

Evaluators (`--evaluator`): ``t2m``, the standard T2M evaluator, whose numbers compare with the paper's tables, or
``contrastive``, a model trained with `examples/train_evaluator.py` (see `moscale.evaluation.co_embedders`).
With ``--semantics`` (a procedural dataset's ``semantics.jsonl``) the semantic accuracy per category and text
complexity is reported beside the same figure for the real motions (the detectors' ceiling).

Outputs in --output_dir: ``results.json`` (settings, environment, every repeat, mean and interval) and
``results.md`` (a Markdown table with the paper's values beside ours).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from moscale.evaluation.co_embedders import load_co_embedder
from moscale.evaluation.generation import allow_evaluation_lengths, load_pipeline, pipeline_generator
from moscale.evaluation.metrics import PROTOCOL_BATCH_SIZE
from moscale.evaluation.protocol import (
    DEFAULT_GUIDANCE,
    ProtocolSettings,
    evaluate_repeat,
    generation_jobs,
    summarize,
)
from moscale.evaluation.report import PAPER_RESULTS, environment, write_report
from moscale.evaluation.semantic_accuracy import load_semantics
from moscale.motion.data import FOLDER_FORMATS, load_motion_dataset

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="moscale evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        help="A MoScalePipeline folder or Hub id, or the output folder of moscale.models.convert_original_checkpoint.",
    )
    parser.add_argument(
        "--text_encoder", help="Converted checkpoints only: T5 encoder + tokenizer (default: the one they name)."
    )
    parser.add_argument("--data_dir", type=Path, required=True, help="HumanML3D-layout folder.")
    parser.add_argument("--dataset_format", choices=sorted(FOLDER_FORMATS), default="humanml3d")
    parser.add_argument("--split", default="test")
    parser.add_argument("--evaluator", choices=["t2m", "contrastive"], default="t2m")
    parser.add_argument(
        "--evaluator_path", help="t2m: finest.tar or its checkpoint folder; contrastive: a model folder."
    )
    parser.add_argument("--glove_path", help="t2m only: the folder with our_vab_{data.npy,words.pkl,idx.pkl}.")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--cache_dir", type=Path, default=None, help="Arrow cache of the loaded motions.")
    parser.add_argument("--seed", type=int, default=10010, help="The authors' evaluation seed.")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=PROTOCOL_BATCH_SIZE, help="R-precision gallery size.")
    parser.add_argument("--guidance_scale", type=float, default=None, help="Default: 5 (HumanML3D), 3 (KIT-ML).")
    parser.add_argument(
        "--refinement_steps",
        type=int,
        nargs="+",
        default=None,
        help="Steps per scale, coarse to fine (default: the pipeline scheduler's, (1, 2, 5, 10) for the paper's model).",
    )
    parser.add_argument("--no_multimodality", action="store_true", help="Skip the 30-generation MultiModality runs.")
    parser.add_argument("--multimodality_batches", type=int, default=3)
    parser.add_argument("--multimodality_generations", type=int, default=30)
    parser.add_argument("--generated_padding", choices=["decoder", "zeros"], default="decoder")
    parser.add_argument(
        "--semantics", type=Path, help="A procedural dataset's semantics.jsonl: adds semantic accuracy."
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="Weights and activations of every component; T5 v1.1 encoders are known to overflow in float16, "
        "prefer bfloat16 for half precision.",
    )
    parser.add_argument(
        "--tf32",
        choices=["default", "on", "off"],
        default="default",
        help="TF32 on Ampere+ GPUs for matmuls and convolutions; 'default' keeps PyTorch's defaults (matmuls off, "
        "cuDNN convolutions on), as the authors ran. The flags in effect are recorded.",
    )
    parser.add_argument("--cpu", action="store_true", help="Run on CPU even when a GPU is present.")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict[str, Any]:
    accelerator = Accelerator(cpu=args.cpu)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.tf32 != "default":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    dtype = getattr(torch, args.dtype)
    guidance = args.guidance_scale if args.guidance_scale is not None else DEFAULT_GUIDANCE[args.dataset_format]
    with accelerator.main_process_first():
        rows = load_motion_dataset(args.data_dir, args.split, args.dataset_format, cache_dir=args.cache_dir)
    rows = rows.with_format("numpy", columns=["motion"], output_all_columns=True)
    pipeline = load_pipeline(args.model, dtype, args.dataset_format, args.text_encoder).to(accelerator.device)
    pipeline.set_progress_bar_config(disable=True)
    allow_evaluation_lengths(pipeline, int(min(rows["length"])))
    settings = ProtocolSettings(
        seed=args.seed,
        repeats=args.repeats,
        batch_size=args.batch_size,
        guidance_scale=guidance,
        refinement_steps=None if args.refinement_steps is None else tuple(args.refinement_steps),
        multimodality=not args.no_multimodality,
        multimodality_batches=args.multimodality_batches,
        multimodality_generations=args.multimodality_generations,
        generated_padding=args.generated_padding,
    )

    embed = load_co_embedder(
        args.evaluator, args.evaluator_path, args.glove_path, args.dataset_format, accelerator.device
    )
    generate = pipeline_generator(pipeline, settings)

    semantics = None
    if args.semantics is not None:
        if args.dataset_format != "humanml3d":
            raise ValueError("--semantics needs HumanML3D-skeleton motions (the detectors read 22 joints).")
        semantics = load_semantics(args.semantics)
    fps = FOLDER_FORMATS[args.dataset_format].fps
    num_batches = len(rows) // settings.batch_size
    jobs_per_repeat = len(generation_jobs(num_batches, settings))
    local_jobs = math.ceil(jobs_per_repeat / accelerator.num_processes)
    progress = tqdm(
        total=settings.repeats * local_jobs,
        desc=f"generation batches (process 0 of {accelerator.num_processes})",
        disable=not accelerator.is_local_main_process,
    )
    started = time.time()
    repeats = []
    for repeat in range(settings.repeats):
        repeats.append(evaluate_repeat(rows, settings, repeat, embed, generate, progress, semantics, fps))
        logger.info("repeat %d: %s", repeat, {k: round(v, 4) for k, v in repeats[-1].items()})
    progress.close()

    summary = summarize(repeats)
    results = {
        "pipeline": str(args.model),
        "data_dir": str(args.data_dir),
        "split": args.split,
        "dataset_format": args.dataset_format,
        "evaluator": {"kind": args.evaluator, "path": args.evaluator_path, "glove_path": args.glove_path},
        "semantics": None if args.semantics is None else str(args.semantics),
        "items": len(rows),
        "items_evaluated_per_repeat": num_batches * settings.batch_size,
        # None in the settings means the pipeline's own schedule: record which one that is.
        "settings": {
            **asdict(settings),
            "refinement_steps": settings.refinement_steps or tuple(pipeline.scheduler.config.refinement_steps),
        },
        "environment": environment(accelerator, dtype),
        "arguments": {
            name: value if isinstance(value, (int, float, bool, type(None))) else str(value)
            for name, value in vars(args).items()
        },
        "seconds": time.time() - started,
        "summary": summary,
        "repeats": repeats,
        "paper": PAPER_RESULTS.get(args.dataset_format, {}) if args.evaluator == "t2m" else {},
    }
    if accelerator.is_main_process:
        print(write_report(args.output_dir, results))
    accelerator.wait_for_everyone()
    return results


def command_line(argv: list[str] | None = None) -> dict[str, Any]:
    """`moscale evaluate ...` (and `examples/evaluate.py ...` for torchrun / accelerate launch)."""
    return main(parse_args(argv))


if __name__ == "__main__":
    command_line()
