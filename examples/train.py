#!/usr/bin/env python
"""Stage 2: train the MoScale next-scale transformer (`MoScaleForTextToMotion`) on a trained tokenizer, then the
length estimator, and save a whole `MoScalePipeline` folder.

    accelerate launch examples/train.py --data_dir data/HumanML3D --vq_model models/vq_humanml3d \
        --text_encoder google/t5-v1_1-base --output_dir models/moscale_humanml3d
    python examples/train.py --preset cpu-small --data_dir data/procedural --vq_model models/vq_small \
        --output_dir models/moscale_small

Defaults are the paper's (the authors' `config/train_moscale.yaml`): a frozen google/t5-v1_1-base with 20 text
tokens, 16 layers of width 768, batch 64, AdamW (0.9, 0.98) with weight decay 0.05 (not on biases, norms and
embeddings), lr 3e-4 warmed up over 10 epochs from 0.5 % and cosine-decayed towards 1 % over 250 epochs, of
which 120 are trained; gradient clipping at 2. Each step encodes the batch with the tokenizer under the
hierarchical-refinement corruption (per scale a rate gamma ~ U[0, gamma_max] of the codes that build the next
scale's input become random codes; `--no_hierarchical_refinement`, `--gamma_max`), corrupts the tokens the
authors' way (`MoScaleForTextToMotion.prepare_training_inputs`) and drops 10 % of the captions for classifier-free
guidance.

Text: `--text_encoder` names any transformers encoder (a local folder or a hub id); it stays frozen and its
features are computed once per distinct caption and cached on disk. `--train_text_encoder` instead trains a
small T5 encoder from scratch together with the transformer (with `--tokenizer`, or with a tokenizer built from
the training captions). The transformer's `text_dim` follows the encoder's width.

The output folder is a `MoScalePipeline` (`MoScalePipeline.from_pretrained(output_dir)`): vq_model/,
transformer/, text_encoder/, tokenizer/, length_estimator/ (`--length_estimator_steps`, so that `num_frames`
can be omitted), the dataset's Mean/Std as the pipeline's statistics, and a model card. Beside it: checkpoints/
(`--resume_from_checkpoint latest`), logs/ (JSON lines, tensorboard), validation/ (generated beside ground-truth
GIFs), text_features/ (the cache) and training_summary.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import transformers
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from training_utils import (
    EpochShuffleSampler,
    SeededMotionDataset,
    TrainingInputError,
    TrainingState,
    add_common_arguments,
    check_common_arguments,
    folder_format,
    load_split,
    load_statistics,
    loggable_config,
    make_accelerator,
    parameter_groups,
    parse_args_with_presets,
    remove_incomplete_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
    shards_weights,
    warmup_cosine_lambda,
    whole_model,
)
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from moscale.models.modeling_length_estimator import MoScaleLengthEstimator, MoScaleLengthEstimatorConfig
from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQModel
from moscale.motion.data import MotionCollator, MotionTransform
from moscale.motion.render import render_animation
from moscale.pipelines.pipeline_moscale import MoScalePipeline
from moscale.pretrained.text_encoders import (
    PACKAGED_TEXT_ENCODERS,
    load_packaged_text_encoder,
    packaged_text_encoder_archive,
)

logger = logging.getLogger(__name__)

PAPER_TEXT_ENCODER = "google/t5-v1_1-base"
PAPER_HUMANML3D = {
    "dataset_format": "humanml3d",
    "train_batch_size": 64,
    "num_train_epochs": 120,
    "learning_rate": 3e-4,
    "lr_warmup_epochs": 10.0,
    "lr_schedule_epochs": 250.0,
    "lr_warmup_steps": None,
    "lr_schedule_steps": None,
    "adam_beta2": 0.98,
    "adam_weight_decay": 0.05,
    "max_grad_norm": 2.0,
    "max_text_length": 20,
    "hidden_size": 768,
    "num_layers": 16,
    "num_attention_heads": 8,
    "condition_dim": 384,
    "text_pool_head_dim": 128,
    "dropout": 0.1,
    "gamma_max": 0.6,
    "cond_drop_prob": 0.1,
    "refinement_steps": [1, 2, 5, 10],
    "guidance_scale": 5.0,
    "length_estimator_steps": 2000,
    "length_estimator_hidden_size": 256,
    "text_encoder_width": 256,
    "text_encoder_layers": 4,
    "text_encoder_heads": 4,
}
PRESETS = {
    "paper-humanml3d": PAPER_HUMANML3D,
    "paper-kit-ml": {
        **PAPER_HUMANML3D,
        "dataset_format": "kit-ml",
        "num_train_epochs": 60,
        "lr_schedule_epochs": 125.0,
        "guidance_scale": 3.0,
    },
    # A fixed budget of steps whatever the dataset size: about 50 minutes of one CPU thread, the length estimator
    # included (docs/training.md).
    "cpu-small": {
        **PAPER_HUMANML3D,
        "train_batch_size": 32,
        "max_train_steps": 3000,
        "lr_warmup_steps": 100,
        "lr_schedule_steps": 3000,
        "train_text_encoder": True,
        "text_encoder_width": 128,
        "text_encoder_layers": 2,
        "text_encoder_heads": 4,
        "max_text_length": 40,  # the longest procedural caption has 37 MiniLM tokens
        "hidden_size": 192,
        "num_layers": 4,
        "num_attention_heads": 4,
        "condition_dim": 128,
        "text_pool_head_dim": 64,
        "length_estimator_steps": 1500,
        "length_estimator_hidden_size": 128,
        "checkpointing_steps": 500,
        "validation_steps": 1000,
        "logging_steps": 25,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add_common_arguments(parser)
    parser.add_argument("--vq_model", type=Path, required=True, help="Folder of a trained MoScaleVQModel.")
    parser.add_argument(
        "--statistics_dir",
        type=Path,
        help="Folder whose Mean.npy/Std.npy normalise the motions (default: --data_dir). When the transformer trains "
        "on other data than the VQ did, pass the VQ's data folder: both models must see one normalisation.",
    )
    schedule = parser.add_argument_group("learning-rate schedule")
    schedule.add_argument("--lr_warmup_epochs", type=float, help="Linear warm-up from 0.5 %% of the lr.")
    schedule.add_argument(
        "--lr_schedule_epochs", type=float, help="Length of the cosine decay (the run may stop before its end)."
    )
    schedule.add_argument("--lr_warmup_steps", type=int, help="Warm-up in steps (wins over --lr_warmup_epochs).")
    schedule.add_argument("--lr_schedule_steps", type=int, help="Cosine length in steps (wins over the epochs).")
    text = parser.add_argument_group("text encoder")
    text.add_argument(
        "--text_encoder", help=f"Frozen transformers encoder: local folder or hub id (default {PAPER_TEXT_ENCODER})."
    )
    text.add_argument(
        "--text_encoder_package",
        choices=sorted(PACKAGED_TEXT_ENCODERS),
        help="Frozen encoder shipped as a Python package; the pipeline folder then names the package, not a copy.",
    )
    text.add_argument("--train_text_encoder", action="store_true", help="Train a small T5 encoder from scratch.")
    text.add_argument(
        "--tokenizer",
        help="Tokenizer folder or hub id (default: the encoder's; with --train_text_encoder, one built from the "
        "training captions).",
    )
    text.add_argument("--text_dim", type=int, default=None, help="Expected encoder width (checked; default: follow).")
    text.add_argument("--max_text_length", type=int, help="Text tokens per caption.")
    text.add_argument("--text_encoder_width", type=int, help="--train_text_encoder: d_model.")
    text.add_argument("--text_encoder_layers", type=int, help="--train_text_encoder: layers.")
    text.add_argument("--text_encoder_heads", type=int, help="--train_text_encoder: heads.")
    text.add_argument("--text_feature_batch_size", type=int, default=256, help="Captions per encoder call (cache).")
    model = parser.add_argument_group("transformer (MoScaleConfig)")
    model.add_argument("--pretrained_transformer", type=Path, default=None, help="Start from these weights.")
    model.add_argument("--hidden_size", type=int)
    model.add_argument("--num_layers", type=int)
    model.add_argument("--num_attention_heads", type=int)
    model.add_argument("--condition_dim", type=int)
    model.add_argument("--text_pool_head_dim", type=int)
    model.add_argument("--dropout", type=float)
    corruption = parser.add_argument_group("training corruption and sampling (ablations)")
    corruption.add_argument(
        "--no_hierarchical_refinement", action="store_true", help="Train on clean coarser scales (gamma_max = 0)."
    )
    corruption.add_argument("--gamma_max", type=float, help="Hierarchical refinement: gamma ~ U[0, gamma_max].")
    corruption.add_argument("--cond_drop_prob", type=float, help="Captions replaced by the unconditional rows.")
    corruption.add_argument(
        "--text_noise",
        type=float,
        default=0.0,
        help="Condition augmentation: Gaussian noise on every text token state, this fraction of the state's RMS "
        "(0: off), so that captions phrased unlike the training ones fall where the transformer has trained.",
    )
    corruption.add_argument(
        "--refinement_steps", type=int, nargs="+", help="Sampling steps per scale, saved in the transformer config."
    )
    corruption.add_argument("--guidance_scale", type=float, help="Default CFG scale saved in the transformer config.")
    length = parser.add_argument_group("length estimator")
    length.add_argument(
        "--length_estimator_steps", type=int, help="Its training steps after the transformer (0: none)."
    )
    length.add_argument("--length_estimator_hidden_size", type=int)
    parser.set_defaults(**PAPER_HUMANML3D)
    args = parse_args_with_presets(
        parser,
        PRESETS,
        argv,
        {
            "num_train_epochs": "max_train_steps",
            "lr_warmup_epochs": "lr_warmup_steps",
            "lr_schedule_epochs": "lr_schedule_steps",
        },
    )
    check_common_arguments(parser, args)
    if args.train_text_encoder and "--train_text_encoder" not in (argv if argv is not None else sys.argv):
        # A preset's jointly trained encoder gives way to an encoder named on the command line.
        args.train_text_encoder = not (args.text_encoder or args.text_encoder_package)
    chosen = [bool(args.text_encoder), bool(args.text_encoder_package), args.train_text_encoder]
    if sum(chosen) == 0:
        args.text_encoder = PAPER_TEXT_ENCODER
    elif sum(chosen) > 1:
        parser.error(
            "pass exactly one of --text_encoder PATH_OR_HUB_ID, --text_encoder_package NAME, --train_text_encoder"
        )
    if not 0 <= args.gamma_max <= 1:
        parser.error("--gamma_max must be in [0, 1]")
    if args.length_estimator_steps < 0:
        parser.error("--length_estimator_steps must be >= 0")
    if args.text_noise < 0:
        parser.error("--text_noise must be >= 0")
    return args


# ----------------------------------------------------------------------------------------------------------- text
def noisy_text_states(states_BSX: torch.Tensor, relative_std: float) -> torch.Tensor:
    """Each token state plus Gaussian noise of `relative_std` times that state's RMS (StackGAN's condition
    augmentation, per token): the transformer learns to read a neighbourhood of each training caption."""
    rms_BS1 = states_BSX.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return states_BSX + relative_std * rms_BS1 * torch.randn_like(states_BSX)


def caption_vocabulary_tokenizer(captions: list[str]) -> T5Tokenizer:
    """A T5 (unigram) tokenizer whose pieces are the training captions' words, plus single characters so that an
    unseen word is spelled out rather than lost."""
    words = Counter(word for caption in captions for word in re.findall(r"\w+", caption))
    chars = sorted({char for caption in captions for char in caption if not char.isspace()})
    total = sum(words.values())
    pieces = [("\u2581" + word, math.log(count / total)) for word, count in words.most_common()]
    floor = min(score for _, score in pieces) - 10.0
    pieces += [("\u2581", floor)] + [(char, floor - 1.0) for char in chars if ("\u2581" + char) not in dict(pieces)]
    return T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces], extra_ids=0)


def load_frozen_text_encoder(args: argparse.Namespace):
    """(encoder, tokenizer, identity) of `--text_encoder` (any transformers encoder; T5-family checkpoints load as
    their encoder-only class) or `--text_encoder_package`; `identity` names the weights for the feature cache."""
    if args.text_encoder_package:
        try:
            encoder, tokenizer = load_packaged_text_encoder(args.text_encoder_package)
        except (ModuleNotFoundError, OSError) as error:
            raise TrainingInputError(str(error)) from error
        archive = packaged_text_encoder_archive(args.text_encoder_package).stat()
        identity = [args.text_encoder_package, archive.st_size, archive.st_mtime_ns]
        return encoder.eval().requires_grad_(False), tokenizer, identity
    name = args.text_encoder
    try:
        config = AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or name)
    except (OSError, ValueError) as error:
        raise TrainingInputError(
            f"--text_encoder {name}: cannot load a transformers model and tokenizer from it ({error}). Pass a local "
            "folder holding config.json, the weights and the tokenizer files, or a hub id (online)."
        ) from error
    encoder_class = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
    loader = (
        getattr(transformers, encoder_class[config.model_type]) if config.model_type in encoder_class else AutoModel
    )
    weights = sorted(Path(name).glob("*.safetensors")) if Path(name).is_dir() else []
    identity = [name, [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]]
    return loader.from_pretrained(name).eval().requires_grad_(False), tokenizer, identity


def new_text_encoder(args: argparse.Namespace, tokenizer) -> T5EncoderModel:
    width, heads = args.text_encoder_width, args.text_encoder_heads
    if width % heads:
        raise TrainingInputError(f"--text_encoder_width {width} must be a multiple of --text_encoder_heads {heads}")
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=width // heads,
        d_ff=4 * width,
        num_layers=args.text_encoder_layers,
        num_heads=heads,
        dropout_rate=0.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config)


def encode_captions(text_encoder, tokenizer, captions: list[str], max_text_length: int, device):
    """Hidden states (N, max_text_length, width) and masks (N, max_text_length), tokenised as the pipeline does."""
    inputs = tokenizer(
        captions,
        max_length=max_text_length,
        padding="max_length",
        truncation=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    input_ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    return text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask


class TextFeatureBank:
    """Text-encoder features of every distinct caption, computed once: (N, max_text_length, width) states, masks."""

    def __init__(self, captions: list[str], states: np.ndarray, mask: np.ndarray):
        self.index = {caption: row for row, caption in enumerate(captions)}
        self.states = states
        self.mask = mask

    @classmethod
    @torch.no_grad()
    def compute(cls, text_encoder, tokenizer, captions, max_text_length, device, batch_size, folder=None):
        """Encode `captions` (sorted, deduplicated); into memory-mapped files in `folder` when given."""
        captions = sorted(set(captions))
        states = None
        masks = np.zeros((len(captions), max_text_length), dtype=bool)
        for start in tqdm(range(0, len(captions), batch_size), desc="text features", unit="batch"):
            chunk = captions[start : start + batch_size]
            states_BST, mask_BS = encode_captions(text_encoder, tokenizer, chunk, max_text_length, device)
            if states is None:
                shape = (len(captions), max_text_length, states_BST.shape[-1])
                states = (
                    np.zeros(shape, dtype=np.float32)
                    if folder is None
                    else np.lib.format.open_memmap(folder / "states.tmp.npy", mode="w+", dtype=np.float32, shape=shape)
                )
            states[start : start + len(chunk)] = states_BST.float().cpu().numpy()
            masks[start : start + len(chunk)] = mask_BS.bool().cpu().numpy()
        if folder is not None:
            states.flush()
            (folder / "states.tmp.npy").replace(folder / "states.npy")
            np.save(folder / "mask.npy", masks)  # written last: its presence marks a complete cache
        return cls(captions, states, masks)

    @classmethod
    def cached(
        cls, accelerator, text_encoder, tokenizer, identity, captions, max_text_length, cache_root: Path, batch_size
    ):
        """Features of a frozen encoder, computed by the main process once and kept on disk for every process and
        every later run with the same encoder (`identity`), tokenizer, text length and captions."""
        captions = sorted(set(captions))
        key_source = {
            # Not the config's `_name_or_path`: a packaged encoder is unpacked into a new temporary folder on every
            # load, which would change the key each run; `identity` names the weights instead.
            "encoder": {k: v for k, v in text_encoder.config.to_dict().items() if k != "_name_or_path"},
            "identity": identity,
            "tokenizer": [type(tokenizer).__name__, len(tokenizer)],
            "max_text_length": max_text_length,
            "captions": captions,
        }
        key = hashlib.sha256(json.dumps(key_source, sort_keys=True, default=str).encode()).hexdigest()[:24]
        folder = cache_root / key
        with accelerator.main_process_first():
            if accelerator.is_main_process and not (folder / "mask.npy").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                text_encoder.to(accelerator.device)
                cls.compute(text_encoder, tokenizer, captions, max_text_length, accelerator.device, batch_size, folder)
        return cls(captions, np.load(folder / "states.npy", mmap_mode="r"), np.load(folder / "mask.npy"))

    def lookup(self, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.index[caption] for caption in captions]
        states = torch.from_numpy(np.stack([self.states[row] for row in rows]))
        return states.to(device), torch.from_numpy(self.mask[rows]).long().to(device)


# ------------------------------------------------------------------------------------------------- model checks
def load_vq_model(path: Path, feature_dim: int, dataset_format: str) -> MoScaleVQModel:
    if not (Path(path) / "config.json").is_file():
        raise TrainingInputError(
            f"--vq_model {path}: no trained MoScaleVQModel there (config.json + model.safetensors). Train one first: "
            "python examples/train_vq.py --data_dir ... --output_dir ..."
        )
    vq_model = MoScaleVQModel.from_pretrained(path).eval().requires_grad_(False)
    if vq_model.config.motion_dim != feature_dim:
        raise TrainingInputError(
            f"the dataset ({dataset_format}) has {feature_dim} features per frame but the VQ at {path} was built for "
            f"motion_dim={vq_model.config.motion_dim}: train a VQ on this dataset with examples/train_vq.py, or pass "
            "the --dataset_format the VQ was trained on."
        )
    if not bool(vq_model.quantizer.initialized):
        raise TrainingInputError(f"the VQ at {path} has an uninitialised codebook: it was never trained")
    return vq_model


def check_transformer_matches(config: MoScaleConfig, vq_model: MoScaleVQModel, text_dim: int, source: str) -> None:
    vq = vq_model.config
    pairs = {
        "num_codes": (vq.num_codes, config.num_codes),
        "code_dim": (vq.code_dim, config.code_dim),
        "scales": (list(vq.scales), list(config.scales)),
        "max_motion_length": (vq.max_motion_length, config.max_motion_length),
        "unit_length": (vq.unit_length, config.unit_length),
    }
    wrong = {name: values for name, values in pairs.items() if values[0] != values[1]}
    if wrong:
        details = ", ".join(
            f"{name} {vq_value} (VQ) vs {tr_value} (transformer)" for name, (vq_value, tr_value) in wrong.items()
        )
        raise TrainingInputError(
            f"the VQ and the transformer of {source} disagree: {details}. A transformer only works with the "
            "tokenizer it was trained on: pass that VQ with --vq_model, or train a new transformer (no "
            "--pretrained_transformer)."
        )
    if config.text_dim != text_dim:
        raise TrainingInputError(
            f"the text encoder outputs {text_dim} features per token but {source} expects text_dim={config.text_dim}: "
            "use an encoder of that width, or drop --text_dim / --pretrained_transformer so that text_dim follows "
            "the encoder."
        )


def build_transformer(args, vq_model: MoScaleVQModel, text_dim: int, text_encoder_name: str) -> MoScaleForTextToMotion:
    perturb_rate = (0.0, 0.0) if args.no_hierarchical_refinement else (0.0, args.gamma_max)
    overrides = {
        "perturb_rate": perturb_rate,
        "cond_drop_prob": args.cond_drop_prob,
        "sample_steps_per_scale": tuple(args.refinement_steps),
        "guidance_scale": args.guidance_scale,
        "text_encoder_name": text_encoder_name,
    }
    if len(args.refinement_steps) != len(vq_model.config.scales):
        raise TrainingInputError(
            f"--refinement_steps needs one value per scale of the VQ ({len(vq_model.config.scales)}), "
            f"got {args.refinement_steps}"
        )
    if args.pretrained_transformer is not None:
        model = MoScaleForTextToMotion.from_pretrained(args.pretrained_transformer, **overrides)
        check_transformer_matches(
            model.config, vq_model, text_dim, f"--pretrained_transformer {args.pretrained_transformer}"
        )
        return model
    vq = vq_model.config
    config = MoScaleConfig(
        num_codes=vq.num_codes,
        code_dim=vq.code_dim,
        scales=tuple(vq.scales),
        max_motion_length=vq.max_motion_length,
        unit_length=vq.unit_length,
        condition_dim=args.condition_dim,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_attention_heads=args.num_attention_heads,
        text_dim=text_dim,
        max_text_length=args.max_text_length,
        text_pool_head_dim=args.text_pool_head_dim,
        dropout=args.dropout,
        **overrides,
    )
    if args.text_dim is not None:
        check_transformer_matches(
            MoScaleConfig(**{**config.to_dict(), "text_dim": args.text_dim}), vq_model, text_dim, "--text_dim"
        )
    return MoScaleForTextToMotion(config)


# ------------------------------------------------------------------------------------------------ length estimator
def length_range(vq_model: MoScaleVQModel, min_length: int) -> tuple[int, int]:
    """Shortest and longest lengths the pipeline accepts for this tokenizer and dataset."""
    unit, shortest = vq_model.config.unit_length, vq_model.config.unit_length * vq_model.config.scales[0]
    minimum = max(shortest, math.ceil(min_length / unit) * unit)
    return minimum, vq_model.config.max_motion_length


def train_length_estimator(args, features, captions, frames, text_dim: int, frame_range, unit_length: int, device):
    """Fit `MoScaleLengthEstimator` on (caption features, clip length) pairs; returns it and its last losses."""
    minimum, maximum = frame_range
    config = MoScaleLengthEstimatorConfig(
        text_dim=text_dim,
        hidden_size=args.length_estimator_hidden_size,
        unit_length=unit_length,
        min_num_frames=minimum,
        max_motion_length=maximum,
    )
    estimator = MoScaleLengthEstimator(config).to(device).train()
    targets = torch.tensor(frames).clamp(minimum, maximum)
    optimizer = torch.optim.AdamW(estimator.parameters(), lr=1e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    for _ in tqdm(range(args.length_estimator_steps), desc="length estimator", unit="step"):
        rows = torch.randint(0, len(captions), (min(256, len(captions)),), generator=generator).tolist()
        states, mask = features([captions[row] for row in rows])
        loss = estimator(states, mask, num_frames=targets[rows].to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return estimator.eval(), losses


# ----------------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validation_loss(transformer, vq_model, loader, text_features, max_batches: int, seed: int) -> dict[str, float]:
    """Masked-token loss and accuracy on validation clips, with fixed corruption draws (comparable across steps)."""
    transformer.eval()
    generator = torch.Generator(device=vq_model.device).manual_seed(seed)
    total_loss, correct, targets, batches = 0.0, 0, 0, 0
    for batch in loader:
        if batches == max_batches:
            break
        motions, lengths = batch["motions"].to(vq_model.device), batch["lengths"].to(vq_model.device)
        encoded = vq_model.encode(motions, lengths, perturb_rate=transformer.config.perturb_rate, generator=generator)
        inputs = transformer.prepare_training_inputs(encoded.codes, encoded.f_hat_per_scale, generator)
        inputs["drop_text"] = torch.zeros_like(inputs["drop_text"])
        states, mask = text_features(batch["captions"])
        out = transformer(**inputs, text_hidden_states=states, text_attention_mask=mask)
        labelled = inputs["labels"] >= 0
        total_loss += out.loss.item()
        correct += int((out.logits.argmax(-1) == inputs["labels"])[labelled].sum())
        targets += int(labelled.sum())
        batches += 1
    transformer.train()
    return {"val/loss": total_loss / max(batches, 1), "val/token_accuracy": correct / max(targets, 1)}


@torch.no_grad()
def render_samples(pipeline: MoScalePipeline, dataset, count: int, folder: Path, seed: int, fps: float) -> None:
    """Generated motions beside the ground truth of the first validation captions (their true lengths)."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    frames = [min(item["length"], pipeline.vq_model.config.max_motion_length) for item in items]
    frames = [max(n, pipeline.config.min_num_frames) for n in frames]
    out = pipeline(
        [item["caption"] for item in items],
        num_frames=frames,
        guidance_scale=pipeline.transformer.config.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    folder.mkdir(parents=True, exist_ok=True)
    mean, std = np.asarray(pipeline.config.motion_mean), np.asarray(pipeline.config.motion_std)
    for row, item in enumerate(items):
        truth = item["motion"][: item["length"]] * std + mean
        generated = out.features[row, : out.lengths[row]]
        render_animation(
            [truth, generated],
            folder / f"{row:02d}.gif",
            captions=[f"ground truth: {item['caption']}", "generated"],
            fps=fps,
            step=2,
            panel_size=2.6,
        )


# ----------------------------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = make_accelerator(args, "train")
    checkpoints_dir = args.output_dir / "checkpoints"
    resume_from = (
        resolve_resume_checkpoint(args.resume_from_checkpoint, checkpoints_dir) if args.resume_from_checkpoint else None
    )

    # --- inputs: every check that can fail runs before the first step
    data_format = folder_format(args.dataset_format)
    train_set = load_split(accelerator, args.data_dir, args.train_split, data_format, args.cache_dir)
    mean, std = load_statistics(args.statistics_dir or args.data_dir, data_format.feature_dim)
    validation_set = None
    if args.validation_split and (args.data_dir / f"{args.validation_split}.txt").is_file():
        validation_set = load_split(accelerator, args.data_dir, args.validation_split, data_format, args.cache_dir)
    elif args.validation_split:
        logger.warning("No %s.txt in %s: training without validation", args.validation_split, args.data_dir)
    vq_model = load_vq_model(args.vq_model, data_format.feature_dim, args.dataset_format).to(accelerator.device)
    captions = [c for captions in train_set["captions"] for c in captions]
    if validation_set is not None:
        captions += [c for captions in validation_set["captions"] for c in captions]

    set_seed(args.seed)  # the same initial weights on every process
    if args.train_text_encoder:
        tokenizer = (
            AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else caption_vocabulary_tokenizer(captions)
        )
        text_encoder = new_text_encoder(args, tokenizer)
        text_encoder_name = "T5 encoder trained with the transformer"
    else:
        text_encoder, tokenizer, identity = load_frozen_text_encoder(args)
        text_encoder_name = args.text_encoder or f"package {args.text_encoder_package}"
    with torch.no_grad():
        text_dim = encode_captions(text_encoder, tokenizer, captions[:1], args.max_text_length, "cpu")[0].shape[-1]
    transformer = build_transformer(args, vq_model, text_dim, text_encoder_name)
    max_text_length = transformer.config.max_text_length
    distinct = sorted(set(captions))
    too_long = [c for c, ids in zip(distinct, tokenizer(distinct).input_ids) if len(ids) > max_text_length]
    if too_long:  # the authors' setting truncates too (20 T5 tokens on HumanML3D), so this warns, not refuses
        logger.warning(
            "%d of %d distinct captions have more than %d text tokens; the transformer sees only their first %d "
            "(e.g. %r). Raise --max_text_length to keep them whole.",
            len(too_long), len(distinct), max_text_length, max_text_length, too_long[0],
        )  # fmt: skip

    bank = None
    if not args.train_text_encoder:
        bank = TextFeatureBank.cached(
            accelerator,
            text_encoder,
            tokenizer,
            identity,
            captions,
            max_text_length,
            (args.cache_dir or args.output_dir) / "text_features",
            args.text_feature_batch_size,
        )

    transform = MotionTransform(mean, std, unit_length=vq_model.config.unit_length)
    train_data = SeededMotionDataset(train_set, transform, seed=args.seed)
    sampler = EpochShuffleSampler(len(train_data), seed=args.seed)
    collate = MotionCollator(max_length=vq_model.config.max_motion_length)
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

    trained = [transformer] + ([text_encoder] if args.train_text_encoder else [])
    named = [(n, p) for model in trained for n, p in model.named_parameters()]
    # fused: one kernel over all parameters, several times faster per step than torch's default loop on CPU
    # (benchmarks/bench_training.py).
    optimizer = torch.optim.AdamW(
        parameter_groups(named, args.adam_weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        fused=True,
    )
    if args.train_text_encoder:
        transformer, text_encoder, optimizer, train_loader = accelerator.prepare(
            transformer, text_encoder, optimizer, train_loader
        )
    else:
        transformer, optimizer, train_loader = accelerator.prepare(transformer, optimizer, train_loader)
        text_encoder.to(accelerator.device)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    schedule_steps = args.lr_schedule_steps or round(args.lr_schedule_epochs * steps_per_epoch) or max_train_steps
    warmup_steps = args.lr_warmup_steps if args.lr_warmup_steps is not None else args.lr_warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(round(warmup_steps), schedule_steps))
    state = TrainingState()
    accelerator.register_for_checkpointing(scheduler, state)
    set_seed(args.seed, device_specific=True)  # different corruption, dropout and text dropout on every process

    remove_incomplete_checkpoints(accelerator, checkpoints_dir)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        logger.info("Resumed from %s at step %d", resume_from, state.global_step)
    accelerator.init_trackers("train", config=loggable_config(args))
    logger.info(
        "%d training items, %d distinct captions, text width %d, %d steps per epoch, %d steps, %d process(es)",
        len(train_data),
        len(set(captions)),
        text_dim,
        steps_per_epoch,
        max_train_steps,
        accelerator.num_processes,
    )

    def text_features(batch_captions: list[str], encoder=text_encoder) -> tuple[torch.Tensor, torch.Tensor]:
        if bank is not None:
            return bank.lookup(batch_captions, accelerator.device)
        return encode_captions(encoder, tokenizer, batch_captions, max_text_length, accelerator.device)

    frame_range = length_range(vq_model, data_format.min_length)

    def current_pipeline(transformer_model, encoder_model, length_estimator=None) -> MoScalePipeline:
        pipeline = MoScalePipeline(
            vq_model=vq_model,
            transformer=transformer_model,
            text_encoder=encoder_model,
            tokenizer=tokenizer,
            length_estimator=length_estimator,
            motion_mean=mean,
            motion_std=std,
            default_num_frames=int(np.clip(np.median(train_set["length"]) // 4 * 4, *frame_range)),
            min_num_frames=frame_range[0],
            text_encoder_package=args.text_encoder_package,
        )
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def run_validation() -> dict[str, float]:
        # Validation runs on the main process alone, which needs the whole model (not FSDP / ZeRO-3 shards).
        if validation_loader is None or not accelerator.is_main_process or shards_weights(accelerator):
            return {}
        unwrapped = accelerator.unwrap_model(transformer)
        encoder = accelerator.unwrap_model(text_encoder)
        encoder.eval()
        metrics = validation_loss(
            unwrapped,
            vq_model,
            validation_loader,
            lambda batch_captions: text_features(batch_captions, encoder),
            args.max_validation_batches,
            args.seed,
        )
        if args.num_validation_renders > 0:
            unwrapped.eval()
            folder = args.output_dir / "validation" / f"step_{state.global_step}"
            pipeline = current_pipeline(unwrapped, encoder)
            render_samples(
                pipeline, validation_loader.dataset, args.num_validation_renders, folder, args.seed, data_format.fps
            )
            unwrapped.train()
        encoder.train(args.train_text_encoder)
        accelerator.log(metrics, step=state.global_step)
        logger.info("step %d validation: %s", state.global_step, {k: round(v, 5) for k, v in metrics.items()})
        return metrics

    progress = tqdm(
        total=max_train_steps,
        initial=state.global_step,
        unit="step",
        desc="train",
        disable=not accelerator.is_local_main_process,
    )
    losses: list[float] = []
    window = 0.0
    start_time, start_cpu = time.time(), time.process_time()
    transformer.train()
    text_encoder.train(args.train_text_encoder)
    while state.global_step < max_train_steps:
        train_data.set_epoch(state.epoch)
        skip = state.batches_in_epoch
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        loader.set_epoch(state.epoch)  # accelerate's loaders pass their own epoch count on to the sampler
        for batch in loader:
            with accelerator.accumulate(*trained):
                with torch.no_grad():
                    encoded = vq_model.encode(
                        batch["motions"],
                        batch["lengths"],
                        perturb_rate=accelerator.unwrap_model(transformer).config.perturb_rate,
                    )
                inputs = accelerator.unwrap_model(transformer).prepare_training_inputs(
                    encoded.codes, encoded.f_hat_per_scale
                )
                states, mask = text_features(batch["captions"])
                if args.text_noise > 0:
                    states = noisy_text_states(states, args.text_noise)
                out = transformer(**inputs, text_hidden_states=states, text_attention_mask=mask)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_([p for _, p in named], args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            window += accelerator.gather(out.loss.detach()[None]).mean().item() / args.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.global_step += 1
            losses.append(window)
            progress.update(1)
            progress.set_postfix(loss=f"{window:.4f}")
            if state.global_step % args.logging_steps == 0:
                accelerator.log(
                    {"loss": window, "lr": scheduler.get_last_lr()[0], "epoch": state.epoch}, state.global_step
                )
            window = 0.0
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
    final_transformer = whole_model(accelerator, transformer)
    final_encoder = whole_model(accelerator, text_encoder) if args.train_text_encoder else text_encoder
    if accelerator.is_main_process:
        encoder = final_encoder.eval()
        length_estimator = None
        if args.length_estimator_steps > 0:
            if bank is None:  # a jointly trained encoder: its final features, computed once
                bank = TextFeatureBank.compute(
                    encoder, tokenizer, captions, max_text_length, accelerator.device, args.text_feature_batch_size
                )
            unit = vq_model.config.unit_length
            pairs = [(c, n // unit * unit) for cs, n in zip(train_set["captions"], train_set["length"]) for c in cs]
            length_estimator, length_losses = train_length_estimator(
                args,
                lambda batch_captions: bank.lookup(batch_captions, accelerator.device),
                [c for c, _ in pairs],
                [n for _, n in pairs],
                text_dim,
                frame_range,
                vq_model.config.unit_length,
                accelerator.device,
            )
            summary["length_estimator_final_loss"] = float(np.mean(length_losses[-50:]))
        pipeline = current_pipeline(final_transformer.eval(), encoder, length_estimator)
        pipeline.save_pretrained(args.output_dir)
        summary["losses"] = losses
        summary["final_loss"] = float(np.mean(losses[-50:])) if losses else None
        (args.output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
        if args.push_to_hub:
            pipeline.push_to_hub(args.hub_model_id or args.output_dir.name, token=args.hub_token)
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main(parse_args())
