#!/usr/bin/env python
"""Stage 1: train the MoScale motion tokenizer (`MoScaleVQModel`) on a HumanML3D-layout folder.

    accelerate launch examples/train_vq.py --data_dir data/HumanML3D --output_dir models/vq_humanml3d
    python examples/train_vq.py --preset cpu-small --data_dir data/procedural --output_dir models/vq_small

Defaults are the paper's (the authors' `config/train_hrvqvae.yaml`): batch 256, 1000 epochs, AdamW (0.9, 0.99)
without weight decay, lr 3e-4 with a 2000-step linear warm-up and x0.3 at epochs 300 and 700, gradient clipping at
0.5; the loss is smooth-L1 reconstruction + 0.02 x commitment + 0.5 x smooth-L1 on the root-relative joint
positions, with an EMA codebook (`MoScaleVQModel.forward`). Clips are padded to the model's full length (196
frames), as the sampler sees them. `--preset` picks another set of defaults (see PRESETS).

The output folder receives the model (`save_pretrained`: `MoScaleVQModel.from_pretrained(output_dir)`), the
checkpoints (`checkpoints/checkpoint_<step>`, `--resume_from_checkpoint latest`), the logs (`logs/*.jsonl`,
tensorboard), validation GIFs (ground truth beside reconstruction, `validation/step_<n>/`) and
`training_summary.json`. Then train the transformer: `examples/train.py --vq_model <output_dir>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from training_utils import (
    EpochShuffleSampler,
    SeededMotionDataset,
    TrainingState,
    add_common_arguments,
    check_common_arguments,
    folder_format,
    load_split,
    load_statistics,
    loggable_config,
    make_accelerator,
    parse_args_with_presets,
    remove_incomplete_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
    shards_weights,
    warmup_multistep_lambda,
    whole_model,
)

from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from moscale.motion.data import MAX_MOTION_LENGTH, MotionCollator, MotionTransform
from moscale.motion.render import render_animation
from moscale.motion.representation import recover_from_ric

logger = logging.getLogger(__name__)

LOGGED_TERMS = ("loss", "reconstruction_loss", "commit_loss", "joint_position_loss", "perplexity")
PAPER_HUMANML3D = {
    "dataset_format": "humanml3d",
    "train_batch_size": 256,
    "num_train_epochs": 1000,
    "learning_rate": 3e-4,
    "lr_warmup_steps": 2000,
    "lr_decay_epochs": [300, 700],
    "lr_decay_steps": None,
    "lr_decay_factor": 0.3,
    "adam_beta2": 0.99,
    "adam_weight_decay": 0.0,
    "max_grad_norm": 0.5,
    "code_dim": 512,
    "num_codes": 512,
    "scales": [8, 4, 2, 1],
    "width": 512,
    "depth": 3,
    "down_t": 2,
    "attention_heads": 8,
    "no_attention": False,
}
PRESETS = {
    "paper-humanml3d": PAPER_HUMANML3D,
    # The authors publish no KIT-ML tokenizer recipe; their HumanML3D one on the 251-feature KIT-ML skeleton.
    "paper-kit-ml": {**PAPER_HUMANML3D, "dataset_format": "kit-ml"},
    # A fixed budget of steps whatever the dataset size: about 25 minutes of one CPU thread (docs/training.md).
    "cpu-small": {
        **PAPER_HUMANML3D,
        "train_batch_size": 32,
        "max_train_steps": 2000,
        "lr_warmup_steps": 200,
        "lr_decay_steps": [1250, 1750],
        "code_dim": 64,
        "num_codes": 256,
        "width": 96,
        "depth": 2,
        "attention_heads": 4,
        "checkpointing_steps": 500,
        "validation_steps": 500,
        "logging_steps": 25,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add_common_arguments(parser)
    schedule = parser.add_argument_group("learning-rate schedule")
    schedule.add_argument("--lr_warmup_steps", type=int, help="Linear warm-up steps.")
    schedule.add_argument("--lr_decay_epochs", type=int, nargs="*", help="Epochs where the lr is multiplied.")
    schedule.add_argument("--lr_decay_steps", type=int, nargs="*", help="Steps where the lr is multiplied (wins).")
    schedule.add_argument("--lr_decay_factor", type=float, help="Factor applied at each --lr_decay_epochs.")
    model = parser.add_argument_group("model (MoScaleVQConfig)")
    model.add_argument("--code_dim", type=int)
    model.add_argument("--num_codes", type=int)
    model.add_argument("--scales", type=int, nargs="+", help="Temporal downsampling per scale, coarse to fine.")
    model.add_argument("--width", type=int)
    model.add_argument("--depth", type=int)
    model.add_argument("--down_t", type=int)
    model.add_argument("--attention_heads", type=int)
    model.add_argument("--no_attention", action="store_true", default=None, help="No attention blocks.")
    parser.set_defaults(**PAPER_HUMANML3D)
    args = parse_args_with_presets(
        parser, PRESETS, argv, {"num_train_epochs": "max_train_steps", "lr_decay_epochs": "lr_decay_steps"}
    )
    check_common_arguments(parser, args)
    if args.lr_warmup_steps < 0:
        parser.error("--lr_warmup_steps must be >= 0")
    return args


def build_model(args: argparse.Namespace, feature_dim: int, position_dims: slice) -> MoScaleVQModel:
    config = MoScaleVQConfig(
        motion_dim=feature_dim,
        code_dim=args.code_dim,
        num_codes=args.num_codes,
        scales=tuple(args.scales),
        width=args.width,
        depth=args.depth,
        down_t=args.down_t,
        use_attention=not args.no_attention,
        attention_heads=args.attention_heads,
        joint_position_dims=(position_dims.start, position_dims.stop),
        max_motion_length=MAX_MOTION_LENGTH,
    )
    return MoScaleVQModel(config)


@torch.no_grad()
def validate(model, loader, mean, std, joints_num: int, max_batches: int) -> dict[str, float]:
    """Losses in eval mode (nearest codes, codebook untouched) and the joint position error in metres."""
    model.eval()
    mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    totals = {"reconstruction_loss": 0.0, "joint_position_loss": 0.0, "commit_loss": 0.0}
    error_sum, frames, batches = 0.0, 0, 0
    for batch in loader:
        if batches == max_batches:
            break
        out = model(batch["motions"], batch["lengths"])
        for key in totals:
            totals[key] += getattr(out, key).item()
        mask_BN = batch["mask"].to(out.reconstruction.device)
        joints_pred = recover_from_ric(out.reconstruction.float().cpu() * std_t + mean_t, joints_num)
        joints_true = recover_from_ric(batch["motions"].float().cpu() * std_t + mean_t, joints_num)
        error_BN = (joints_pred - joints_true).norm(dim=-1).mean(dim=-1)
        error_sum += error_BN[mask_BN.cpu()].sum().item()
        frames += int(mask_BN.sum())
        batches += 1
    model.train()
    metrics = {f"val/{key}": value / max(batches, 1) for key, value in totals.items()}
    metrics["val/joint_error_m"] = error_sum / max(frames, 1)
    return metrics


@torch.no_grad()
def render_reconstructions(model, dataset, mean, std, count: int, folder: Path, fps: float) -> list[Path]:
    model.eval()
    collate = MotionCollator(max_length=model.config.max_motion_length)
    batch = collate([dataset[i] for i in range(min(count, len(dataset)))])
    device = next(model.parameters()).device
    recon = model(batch["motions"].to(device), batch["lengths"].to(device)).reconstruction.float().cpu()
    model.train()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for row, length in enumerate(batch["lengths"].tolist()):
        truth, predicted = (x[row, :length].numpy() * std + mean for x in (batch["motions"], recon))
        path = folder / f"{row:02d}.gif"
        render_animation(
            [truth, predicted], path, captions=["ground truth", "reconstruction"], fps=fps, step=2, panel_size=2.6
        )
        paths.append(path)
    return paths


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = make_accelerator(args, "train_vq")
    checkpoints_dir = args.output_dir / "checkpoints"
    resume_from = (
        resolve_resume_checkpoint(args.resume_from_checkpoint, checkpoints_dir) if args.resume_from_checkpoint else None
    )

    # --- data: every check that can fail runs before the model is built
    data_format = folder_format(args.dataset_format)
    skeleton = data_format.skeleton
    train_set = load_split(accelerator, args.data_dir, args.train_split, data_format, args.cache_dir)
    mean, std = load_statistics(args.data_dir, data_format.feature_dim)
    validation_set = None
    if args.validation_split and (args.data_dir / f"{args.validation_split}.txt").is_file():
        validation_set = load_split(accelerator, args.data_dir, args.validation_split, data_format, args.cache_dir)
    elif args.validation_split:
        logger.warning("No %s.txt in %s: training without validation", args.validation_split, args.data_dir)

    set_seed(args.seed)  # the same initial weights on every process
    model = build_model(args, data_format.feature_dim, skeleton.feature_groups[3])
    transform = MotionTransform(mean, std, unit_length=model.config.unit_length)
    train_data = SeededMotionDataset(train_set, transform, seed=args.seed)
    sampler = EpochShuffleSampler(len(train_data), seed=args.seed)
    collate = MotionCollator(max_length=model.config.max_motion_length)
    train_loader = DataLoader(
        train_data,
        batch_size=args.train_batch_size,
        sampler=sampler,
        drop_last=len(train_data) >= args.train_batch_size,
        num_workers=args.dataloader_num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),  # keeps the loader's seed draws off the global RNG
    )
    validation_loader = None
    if validation_set is not None:
        validation_data = SeededMotionDataset(validation_set, transform, seed=args.seed, random=False)
        validation_loader = DataLoader(validation_data, batch_size=args.train_batch_size, collate_fn=collate)

    optimizer = torch.optim.AdamW(  # fused: faster per step than torch's default loop (benchmarks/bench_training.py)
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        fused=True,
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    if args.lr_decay_steps is not None:
        milestones = list(args.lr_decay_steps)
    else:
        milestones = [epoch * steps_per_epoch for epoch in args.lr_decay_epochs or []]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_multistep_lambda(args.lr_warmup_steps, milestones, args.lr_decay_factor)
    )
    state = TrainingState()
    accelerator.register_for_checkpointing(scheduler, state)
    set_seed(args.seed, device_specific=True)  # different code sampling and dropout on every process

    remove_incomplete_checkpoints(accelerator, checkpoints_dir)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        logger.info("Resumed from %s at step %d", resume_from, state.global_step)
    accelerator.init_trackers("train_vq", config=loggable_config(args))
    logger.info(
        "%d training items, %d steps per epoch, %d steps, %d process(es)",
        len(train_data),
        steps_per_epoch,
        max_train_steps,
        accelerator.num_processes,
    )

    def run_validation() -> dict[str, float]:
        # Validation runs on the main process alone, which needs the whole model (not FSDP / ZeRO-3 shards).
        if validation_loader is None or not accelerator.is_main_process or shards_weights(accelerator):
            return {}
        unwrapped = accelerator.unwrap_model(model)
        metrics = validate(unwrapped, validation_loader, mean, std, skeleton.joints_num, args.max_validation_batches)
        if args.num_validation_renders > 0:
            folder = args.output_dir / "validation" / f"step_{state.global_step}"
            render_reconstructions(
                unwrapped, validation_loader.dataset, mean, std, args.num_validation_renders, folder, skeleton.fps
            )
        accelerator.log(metrics, step=state.global_step)
        logger.info("step %d validation: %s", state.global_step, {k: round(v, 5) for k, v in metrics.items()})
        return metrics

    progress = tqdm(
        total=max_train_steps,
        initial=state.global_step,
        unit="step",
        desc="train_vq",
        disable=not accelerator.is_local_main_process,
    )
    losses: list[float] = []
    window: dict[str, float] = {}
    start_time, start_cpu = time.time(), time.process_time()
    model.train()
    while state.global_step < max_train_steps:
        train_data.set_epoch(state.epoch)
        skip = state.batches_in_epoch
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        loader.set_epoch(state.epoch)  # accelerate's loaders pass their own epoch count on to the sampler
        for batch in loader:
            with accelerator.accumulate(model):
                out = model(batch["motions"], batch["lengths"])
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            terms = torch.stack([out.loss, out.reconstruction_loss, out.commit_loss, out.joint_position_loss])
            values = [*accelerator.gather(terms.detach()[None]).mean(0).tolist(), out.perplexity.item()]
            for key, value in zip(LOGGED_TERMS, values):
                window[key] = window.get(key, 0.0) + value / args.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.global_step += 1
            losses.append(window["loss"])
            progress.update(1)
            progress.set_postfix(loss=f"{window['loss']:.4f}", rec=f"{window['reconstruction_loss']:.4f}")
            if state.global_step % args.logging_steps == 0:
                accelerator.log({**window, "lr": scheduler.get_last_lr()[0], "epoch": state.epoch}, state.global_step)
            window = {}
            if state.global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, checkpoints_dir, state.global_step, args.checkpoints_total_limit)
            if state.global_step % args.validation_steps == 0 and state.global_step < max_train_steps:
                run_validation()
            if state.global_step >= max_train_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    progress.close()

    accelerator.wait_for_everyone()
    summary: dict = {
        "steps": state.global_step,
        "train_seconds": round(time.time() - start_time, 1),
        # CPU time of this process (all threads): less affected than wall time by other programs on a shared machine.
        "train_cpu_seconds": round(time.process_time() - start_cpu, 1),
    }
    summary["validation"] = run_validation()
    vq_model = whole_model(accelerator, model)
    if accelerator.is_main_process:
        vq_model.save_pretrained(args.output_dir)
        summary["losses"] = losses
        summary["final_loss"] = losses[-1] if losses else None
        (args.output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
        if args.push_to_hub:
            vq_model.push_to_hub(args.hub_model_id or args.output_dir.name, token=args.hub_token)
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main(parse_args())
