#!/usr/bin/env python
"""Train the contrastive text-motion evaluator (`moscale.evaluation.contrastive_evaluator`) on a HumanML3D-layout folder.

Use it for data that has no standard T2M evaluator (the procedural dataset, your own motions): the trained
evaluator's co-embeddings feed the usual metrics
(`examples/evaluate.py --evaluator contrastive --evaluator_path <output_dir>`).

    accelerate launch examples/train_evaluator.py --data_dir data/MyMotions --output_dir evaluators/my_eval \
        --max_train_steps 20000

The folder needs ``new_joint_vecs/``, ``texts/``, ``train.txt`` (and ``val.txt`` for the retrieval check at the
end) and ``Mean.npy``/``Std.npy``, which become the evaluator's normalisation statistics. At the end the script
saves the model with ``save_pretrained`` (safetensors) and, when a validation split exists, writes its retrieval
R-precision (galleries of 32, as in the standard protocol) with the loss curve to ``training_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from moscale.evaluation.contrastive_evaluator import (
    ContrastiveEvaluatorConfig,
    ContrastiveEvaluatorModel,
    build_vocabulary,
)
from moscale.evaluation.metrics import PROTOCOL_BATCH_SIZE, matching_score, r_precision
from moscale.motion.data import (
    FOLDER_FORMATS,
    MotionCollator,
    MotionTransform,
    TransformedMotionDataset,
    load_mean_std,
    load_motion_dataset,
)

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="HumanML3D-layout folder.")
    parser.add_argument("--dataset_format", choices=sorted(FOLDER_FORMATS), default="humanml3d")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--validation_split", default="val", help="Split for the final retrieval check ('' skips).")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--cache_dir", type=Path, default=None, help="Arrow cache of the loaded motions.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--num_train_epochs", type=int, default=100)
    parser.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs.")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--lr_scheduler", default="cosine")
    parser.add_argument("--lr_warmup_steps", type=int, default=500, help="At most a tenth of the steps.")
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    parser.add_argument("--report_to", default=None, help="Tracker for accelerate (tensorboard, wandb, ...).")
    parser.add_argument("--logging_steps", type=int, default=50)
    model = parser.add_argument_group("model")
    model.add_argument("--hidden_size", type=int, default=256)
    model.add_argument("--num_layers", type=int, default=4)
    model.add_argument("--num_heads", type=int, default=4)
    model.add_argument("--embedding_dim", type=int, default=256)
    model.add_argument("--dropout", type=float, default=0.1)
    model.add_argument("--max_text_length", type=int, default=40)
    model.add_argument("--vocabulary_min_count", type=int, default=1)
    args = parser.parse_args(argv)
    for name in ("train_batch_size", "num_train_epochs", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        parser.error("--max_train_steps must be >= 1")
    return args


class TrainingState:
    """The step counter, saved and restored with the accelerate checkpoints."""

    def __init__(self) -> None:
        self.global_step = 0

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.global_step = int(state["global_step"])


@torch.no_grad()
def retrieval_scores(model: ContrastiveEvaluatorModel, dataset, batch_size: int = PROTOCOL_BATCH_SIZE) -> dict:
    """R-precision and MM-Dist of the first caption and the whole (unit-cropped) motion of each item."""
    usable = len(dataset) // batch_size * batch_size
    if usable == 0:
        raise ValueError(f"The validation split has {len(dataset)} items, fewer than one gallery of {batch_size}.")
    feature_dim = model.config.feature_dim
    transform = MotionTransform(np.zeros(feature_dim), np.ones(feature_dim), random_crop=False, random_caption=False)
    loader = DataLoader(
        TransformedMotionDataset(dataset.select(range(usable)), transform),
        batch_size=batch_size,
        collate_fn=MotionCollator(),
    )
    model.eval()
    text, motion = [], []
    for batch in loader:
        text_BE, motion_BE = model.get_co_embeddings(batch["captions"], batch["motions"], batch["lengths"])
        text.append(text_BE.cpu().numpy())
        motion.append(motion_BE.cpu().numpy())
    text_NE, motion_NE = np.concatenate(text), np.concatenate(motion)
    top = r_precision(text_NE, motion_NE, batch_size)
    return {
        "items": usable,
        "gallery_size": batch_size,
        "r_precision_top1": float(top[0]),
        "r_precision_top2": float(top[1]),
        "r_precision_top3": float(top[2]),
        "matching_score": float(matching_score(text_NE, motion_NE, batch_size)),
    }


def main(args: argparse.Namespace) -> dict:
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(args.output_dir),
            automatic_checkpoint_naming=True,
            total_limit=args.checkpoints_total_limit,
        ),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(args.seed)

    folder_format = FOLDER_FORMATS[args.dataset_format]
    with accelerator.main_process_first():
        train_set = load_motion_dataset(args.data_dir, args.train_split, folder_format, cache_dir=args.cache_dir)
    mean, std = load_mean_std(args.data_dir, folder_format.feature_dim)

    config = ContrastiveEvaluatorConfig(
        feature_dim=folder_format.feature_dim,
        vocabulary=build_vocabulary(
            (caption for captions in train_set["captions"] for caption in captions), args.vocabulary_min_count
        ),
        max_text_length=args.max_text_length,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        embedding_dim=args.embedding_dim,
        dropout=args.dropout,
    )
    model = ContrastiveEvaluatorModel(config)
    model.set_feature_statistics(mean, std)

    # The evaluator normalises motions itself, so the loader hands over raw features (identity statistics).
    transform = MotionTransform(np.zeros(folder_format.feature_dim), np.ones(folder_format.feature_dim), seed=args.seed)
    train_loader = DataLoader(
        TransformedMotionDataset(train_set, transform),
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=len(train_set) >= args.train_batch_size,
        num_workers=args.dataloader_num_workers,
        collate_fn=MotionCollator(),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    # After `prepare`, each process sees 1/num_processes of the batches.
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=min(args.lr_warmup_steps, max_train_steps // 10) * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)

    if args.resume_from_checkpoint:
        checkpoint = None if args.resume_from_checkpoint == "latest" else args.resume_from_checkpoint
        accelerator.load_state(checkpoint)
        # accelerate does not advance its automatic checkpoint numbering on resume: continue after the newest one.
        existing = [int(path.name.split("_")[-1]) for path in (args.output_dir / "checkpoints").glob("checkpoint_*")]
        accelerator.project_configuration.iteration = max(existing, default=-1) + 1
        logger.info("Resumed from %s at step %d", checkpoint or "the latest checkpoint", state.global_step)
    if accelerator.is_main_process:
        accelerator.init_trackers("train_evaluator", config={k: str(v) for k, v in vars(args).items()})

    tokenize = accelerator.unwrap_model(model).tokenize
    progress = tqdm(
        total=max_train_steps, initial=state.global_step, disable=not accelerator.is_local_main_process, desc="steps"
    )
    skip_batches = state.global_step % len(train_loader)
    losses: list[float] = []
    while state.global_step < max_train_steps:
        model.train()
        loader = accelerator.skip_first_batches(train_loader, skip_batches) if skip_batches else train_loader
        skip_batches = 0
        for batch in loader:
            tokens = tokenize(batch["captions"])
            output = model(tokens["input_ids"], tokens["attention_mask"], batch["motions"], batch["lengths"])
            accelerator.backward(output.loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            state.global_step += 1
            progress.update(1)
            loss = accelerator.gather(output.loss.detach()[None]).mean().item()
            losses.append(loss)
            progress.set_postfix(loss=f"{loss:.4f}")
            if state.global_step % args.logging_steps == 0:
                accelerator.log({"loss": loss, "lr": scheduler.get_last_lr()[0]}, step=state.global_step)
            if state.global_step % args.checkpointing_steps == 0:
                accelerator.save_state()
            if state.global_step >= max_train_steps:
                break
    progress.close()

    accelerator.wait_for_everyone()
    summary: dict = {"steps": state.global_step, "losses": losses}
    if accelerator.is_main_process:
        evaluator = accelerator.unwrap_model(model)
        evaluator.save_pretrained(args.output_dir)
        if args.validation_split and (args.data_dir / f"{args.validation_split}.txt").is_file():
            val_set = load_motion_dataset(args.data_dir, args.validation_split, folder_format, cache_dir=args.cache_dir)
            summary["validation"] = retrieval_scores(evaluator, val_set)
            logger.info("Validation retrieval: %s", summary["validation"])
        (args.output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main(parse_args())
