"""Pieces shared by `examples/train_vq.py` and `examples/train.py`.

* presets: named sets of argparse defaults (`--preset`), which explicit flags still override;
* data: a HumanML3D-layout split checked up front (clear errors before any step), read through a map-style dataset
  whose random crop and caption choice depend only on (seed, epoch, item), and a sampler whose order depends only
  on (seed, epoch), so that a resumed run sees exactly the batches an uninterrupted one would;
* checkpoints: written to a hidden temporary folder and renamed when complete, so that a run killed while saving
  never leaves a folder that `--resume_from_checkpoint latest` would pick;
* logging: a JSON-lines tracker (always on) next to tensorboard (where installed);
* learning-rate schedules of the paper's two stages.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, on_main_process
from accelerate.utils import DeepSpeedPlugin, DistributedType, ProjectConfiguration, is_tensorboard_available
from datasets import Dataset

from moscale.motion.data import (
    FOLDER_FORMATS,
    MotionDataError,
    MotionFolderFormat,
    MotionTransform,
    index_motion_folder,
    load_mean_std,
    load_motion_dataset,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"
_INCOMPLETE_PREFIX = ".incomplete_"
_NOT_GIVEN = object()


class TrainingInputError(ValueError):
    """Bad input found before training starts; the message names the problem and the fix."""


# ------------------------------------------------------------------------------------------------------- presets
def parse_args_with_presets(
    parser: argparse.ArgumentParser,
    presets: Mapping[str, Mapping[str, Any]],
    argv: list[str] | None,
    epoch_step_pairs: Mapping[str, str] = MappingProxyType({}),
) -> argparse.Namespace:
    """Parse `argv`; `--preset NAME` first replaces the parser's defaults by `presets[NAME]`.

    `epoch_step_pairs` maps an option counted in epochs to the option counted in steps that wins over it (for
    example `num_train_epochs` to `max_train_steps`). A preset may set the step option; an epoch option given on the
    command line then drops the preset's step value, so that the flag the user typed is the one that counts.
    """
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default=None,
        help="Named set of defaults (explicit flags still win): " + ", ".join(sorted(presets)) + ".",
    )
    known = {action.dest for action in parser._actions}
    for name, values in presets.items():
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"preset {name!r} sets unknown options {unknown}")
    chosen, _ = parser.parse_known_args(argv)
    if chosen.preset is None:
        return parser.parse_args(argv)
    paired = [name for pair in epoch_step_pairs.items() for name in pair]
    defaults = {name: parser.get_default(name) for name in paired} | dict(presets[chosen.preset])
    parser.set_defaults(**dict.fromkeys(paired, _NOT_GIVEN))
    given, _ = parser.parse_known_args(argv)
    for epochs_name, steps_name in epoch_step_pairs.items():
        if getattr(given, epochs_name) is not _NOT_GIVEN and getattr(given, steps_name) is _NOT_GIVEN:
            defaults[steps_name] = None
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, optimisation loop, checkpointing, logging and hub flags that both stages share."""
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", type=Path, required=True, help="HumanML3D-layout folder (see docs/data.md).")
    data.add_argument("--dataset_format", choices=sorted(FOLDER_FORMATS), default="humanml3d")
    data.add_argument("--train_split", default="train")
    data.add_argument("--validation_split", default="val", help="Split for validation ('' turns validation off).")
    data.add_argument("--cache_dir", type=Path, default=None, help="Arrow cache of the loaded motions.")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    loop = parser.add_argument_group("training loop")
    loop.add_argument("--output_dir", type=Path, required=True)
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--train_batch_size", type=int, help="Per device.")
    loop.add_argument("--gradient_accumulation_steps", type=int, default=1)
    loop.add_argument("--num_train_epochs", type=int)
    loop.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs.")
    loop.add_argument("--learning_rate", type=float, default=3e-4)
    loop.add_argument("--adam_beta1", type=float, default=0.9)
    loop.add_argument("--adam_beta2", type=float)
    loop.add_argument("--adam_weight_decay", type=float)
    loop.add_argument("--max_grad_norm", type=float, help="Gradient clipping (0 turns it off).")
    loop.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="Default: accelerate's.")

    saving = parser.add_argument_group("checkpoints, logging, validation, hub")
    saving.add_argument("--checkpointing_steps", type=int, default=1000)
    saving.add_argument("--checkpoints_total_limit", type=int, default=2, help="Complete checkpoints kept.")
    saving.add_argument(
        "--resume_from_checkpoint", default=None, help="'latest' (newest complete checkpoint) or a checkpoint folder."
    )
    saving.add_argument(
        "--report_to", default="tensorboard", help="accelerate tracker besides the JSON lines ('none' for only those)."
    )
    saving.add_argument("--logging_steps", type=int, default=10)
    saving.add_argument("--validation_steps", type=int, default=1000, help="Validate every N steps and at the end.")
    saving.add_argument("--max_validation_batches", type=int, default=8, help="Batches of the validation loss.")
    saving.add_argument("--num_validation_renders", type=int, default=2, help="GIFs per validation (0: none).")
    saving.add_argument("--push_to_hub", action="store_true")
    saving.add_argument("--hub_model_id", default=None, help="Repository id; default: the output folder's name.")
    saving.add_argument("--hub_token", default=None)


def check_common_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("train_batch_size", "num_train_epochs", "gradient_accumulation_steps", "checkpointing_steps"):
        if getattr(args, name) is None or getattr(args, name) < 1:
            parser.error(f"--{name} must be an integer >= 1")
    for name in ("max_train_steps", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    for name in ("logging_steps", "validation_steps", "max_validation_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")


# ---------------------------------------------------------------------------------------------------------- data
def folder_format(name: str) -> MotionFolderFormat:
    return FOLDER_FORMATS[name]


def load_split(
    accelerator: Accelerator, data_dir: Path, split: str, format: MotionFolderFormat, cache_dir: Path | None
) -> Dataset:
    """One split as raw items, with the problems a user can fix reported before anything is built."""
    data_dir = Path(data_dir)
    layout = "new_joint_vecs/<id>.npy, texts/<id>.txt, <split>.txt, Mean.npy and Std.npy"
    if not data_dir.is_dir():
        raise TrainingInputError(
            f"--data_dir {data_dir} does not exist. Pass a HumanML3D-layout folder ({layout}); "
            "`python -m moscale.synthetic` or `moscale bvh build-dataset` write one."
        )
    if not any(data_dir.iterdir()):
        raise TrainingInputError(f"--data_dir {data_dir} is empty. It needs a HumanML3D-layout dataset ({layout}).")
    if not (data_dir / f"{split}.txt").is_file():
        raise TrainingInputError(
            f"{data_dir} has no {split}.txt: list the motion ids of the {split!r} split there, one per line, or "
            "name another split with --train_split / --validation_split."
        )
    try:
        with accelerator.main_process_first():
            return load_motion_dataset(data_dir, split, format, cache_dir=cache_dir)
    except MotionDataError as error:
        try:
            report = index_motion_folder(data_dir, split, format, missing_files="skip").report
        except MotionDataError:
            report = None
        if report is not None and report.items == 0:
            raise TrainingInputError(
                f"split {split!r} of {data_dir} has no usable clip ({report.summary()}). Clips must have "
                f"{format.min_length} to {format.max_length - 1} frames; add such motions to {split}.txt, or name "
                "another split with --train_split / --validation_split (--validation_split '' trains without "
                "validation)."
            ) from error
        raise TrainingInputError(
            f"{error}. Fix or remove that motion, or pass the --dataset_format of this folder "
            f"({', '.join(f'{name}: {spec.feature_dim} features' for name, spec in FOLDER_FORMATS.items())})."
        ) from error


def load_statistics(data_dir: Path, feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        return load_mean_std(data_dir, feature_dim)
    except (FileNotFoundError, MotionDataError) as error:
        raise TrainingInputError(
            f"{error}. Models train on features normalised by the dataset's Mean.npy/Std.npy ({feature_dim} values "
            "each); compute them over the training motions and save them in the dataset folder."
        ) from error


class SeededMotionDataset(torch.utils.data.Dataset):
    """Raw items -> normalised, cropped items whose random crop and caption depend only on (seed, epoch, index).

    The crop follows `MotionTransform` (a multiple of the unit length, one unit shorter with probability 1/3, a
    random start) and the caption is drawn uniformly; `random=False` keeps the first frames and the first caption.
    """

    def __init__(self, dataset: Dataset, transform: MotionTransform, seed: int, random: bool = True):
        self.rows = dataset.with_format("numpy", columns=["motion"], output_all_columns=True)
        self.transform = transform
        self.seed = seed
        self.random = random
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        rows = self.rows[indices]
        items = []
        for row, index in enumerate(indices):
            motion, captions = rows["motion"][row], rows["captions"][row]
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if self.random:
                length = self.transform.crop_length(len(motion), rng)
                start = int(rng.integers(0, len(motion) - length + 1))
                caption = captions[int(rng.integers(len(captions)))]
            else:
                length = len(motion) // self.transform.unit_length * self.transform.unit_length
                start, caption = 0, captions[0]
            items.append(
                {
                    "id": rows["id"][row],
                    "motion": self.transform.normalize(motion[start : start + length]),
                    "length": length,
                    "caption": caption,
                }
            )
        return items

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A permutation of the items drawn from (seed, epoch) alone: every process and every resumed run agrees."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())


class TrainingState:
    """Where the loop stands; saved in every checkpoint and restored on resume."""

    def __init__(self) -> None:
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])


# --------------------------------------------------------------------------------------------------- checkpoints
def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (a folder only gets its final name once fully written)."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def save_checkpoint(accelerator: Accelerator, checkpoints_dir: Path, step: int, total_limit: int | None) -> Path:
    """`accelerator.save_state` into a temporary folder, then an atomic rename to `checkpoint_<step>`; older complete
    checkpoints beyond `total_limit` are removed only after the new one is in place."""
    final = checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"
    temporary = checkpoints_dir / f"{_INCOMPLETE_PREFIX}{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # a resumed run repeating a step it had saved before
            shutil.rmtree(final)
        os.replace(temporary, final)
        if total_limit is not None:
            for old in complete_checkpoints(checkpoints_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_resume_checkpoint(spec: str, checkpoints_dir: Path) -> Path:
    """'latest' -> the newest complete checkpoint; a path -> that folder, checked to hold an accelerate state."""
    if spec == "latest":
        found = complete_checkpoints(checkpoints_dir)
        if not found:
            raise TrainingInputError(
                f"--resume_from_checkpoint latest: {checkpoints_dir} holds no complete checkpoint. Start without "
                "--resume_from_checkpoint, or pass the --output_dir of the run to resume."
            )
        return found[-1]
    path = Path(spec)
    if not path.is_dir() or not any(path.glob("random_states_*.pkl")):
        raise TrainingInputError(
            f"--resume_from_checkpoint {spec}: not a checkpoint folder (no accelerate state in it). Pass 'latest' "
            f"or one of the {CHECKPOINT_PREFIX}<step> folders in {checkpoints_dir}."
        )
    return path


def remove_incomplete_checkpoints(accelerator: Accelerator, checkpoints_dir: Path) -> None:
    """Folders left by a run killed while saving: never loaded, removed before new saves."""
    if accelerator.is_main_process and checkpoints_dir.is_dir():
        for path in checkpoints_dir.glob(f"{_INCOMPLETE_PREFIX}*"):
            logger.warning("Removing %s, a checkpoint that was never completed", path)
            shutil.rmtree(path)
    accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------------------- accelerator
def make_accelerator(args: argparse.Namespace, run_name: str) -> Accelerator:
    """The run's `Accelerator`. Without a GPU (or other accelerator) it is built for the CPU, which is what makes
    `torchrun --nproc_per_node N` start N cooperating CPU processes (gloo) instead of N independent runs."""
    accelerator = Accelerator(
        cpu=not torch.accelerator.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers(args, run_name),
        project_config=ProjectConfiguration(
            project_dir=str(args.output_dir), logging_dir=str(args.output_dir / "logs")
        ),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise RuntimeError(
            f"the launcher started {launched} processes but accelerate sees {accelerator.num_processes}: each would "
            "train alone. Launch with torchrun or `accelerate launch` with a matching config."
        )
    check_whole_weights_can_be_saved(accelerator.state.deepspeed_plugin)
    return accelerator


def check_whole_weights_can_be_saved(deepspeed_plugin: DeepSpeedPlugin | None) -> None:
    """Under ZeRO-3 accelerate gives the main process whole weights to save only if DeepSpeed was told to gather
    them; otherwise the final save would fail after the whole run, so refuse before the first step."""
    if deepspeed_plugin is None:
        return
    zero = deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        raise TrainingInputError(
            "DeepSpeed ZeRO-3 shards the weights, and this config does not let the final save_pretrained gather "
            "them. Add `zero3_save_16bit_model: true` under deepspeed_config in the accelerate config file (or "
            "`stage3_gather_16bit_weights_on_model_save: true` under zero_optimization in a DeepSpeed JSON file)."
        )


def shards_weights(accelerator: Accelerator) -> bool:
    """FSDP and DeepSpeed ZeRO-3 leave each process a shard of the weights (DDP and ZeRO-2 keep whole copies)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return (
        accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3
    )


def whole_model(accelerator: Accelerator, prepared: torch.nn.Module) -> torch.nn.Module | None:
    """The trained model with all of its weights, on the main process (None elsewhere); call it on every process.

    The unwrapped model itself, or, when processes hold shards, a copy loaded from the gathered state dict.
    """
    if not shards_weights(accelerator):
        return accelerator.unwrap_model(prepared) if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(prepared)  # a collective: every process takes part
    if not accelerator.is_main_process:
        return None
    return model_from_state_dict(accelerator.unwrap_model(prepared), state_dict)


def model_from_state_dict(sharded: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A new model of `sharded`'s own class and config holding the gathered `state_dict`.

    FSDP2 gives a sharded module a class of its own (`FSDP<Class>`, a subclass of `FSDPModule`): the model saved is
    of the class it was built as. Every key must be there (strict), so that no weight is left at its initial value.
    """
    from torch.distributed.fsdp import FSDPModule  # here: torch builds without distributed support lack it

    model_class = next(c for c in type(sharded).__mro__ if not issubclass(c, FSDPModule))
    model = model_class(sharded.config)
    model.load_state_dict(state_dict)
    return model


# ------------------------------------------------------------------------------------------------------- logging
class JSONLinesTracker(GeneralTracker):
    """An accelerate tracker writing one JSON object per `log` call to `<logging_dir>/<run_name>.jsonl`."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / f"{run_name}.jsonl"
        self._file = None

    @on_main_process
    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    @property
    def tracker(self):
        return self._file

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        self._write({"config": values, "time": time.time()})

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self._write({"step": step, **values, "time": time.time()})

    def _write(self, record: dict) -> None:
        if self._file is None:
            self.start()
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    @on_main_process
    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def trackers(args: argparse.Namespace, run_name: str) -> list:
    chosen: list = [JSONLinesTracker(run_name, args.output_dir / "logs")]
    report_to = (args.report_to or "none").lower()
    if report_to == "tensorboard" and not is_tensorboard_available():
        logger.warning("tensorboard is not installed: logging to JSON lines only")
    elif report_to not in ("none", ""):
        chosen.append(report_to)
    return chosen


def loggable_config(args: argparse.Namespace) -> dict[str, str | int | float | bool]:
    """Flags as the scalar types every tracker accepts."""
    return {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in vars(args).items()
        if key != "hub_token"
    }


# --------------------------------------------------------------------------------------------------- schedules
def warmup_multistep_lambda(warmup_steps: int, milestones: list[int], gamma: float) -> Callable[[int], float]:
    """The paper's VQ schedule: linear warm-up, then x`gamma` at each milestone step."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / (warmup_steps + 1)) if warmup_steps > 0 else 1.0
        return warm * gamma ** sum(step >= milestone for milestone in milestones)

    return factor


def warmup_cosine_lambda(
    warmup_steps: int, schedule_steps: int, warmup_start: float = 0.005, final: float = 0.01
) -> Callable[[int], float]:
    """The paper's transformer schedule: linear warm-up from `warmup_start`, then a half cosine from 1 down to
    `final` at `schedule_steps` (which may lie beyond the last step: the authors stop at 120 of 250 epochs)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start + (1 - warmup_start) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, schedule_steps - 1 - warmup_steps))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """The authors' rule: no decay on biases, norms, embeddings, learned tokens and queries."""
    return param.ndim <= 1 or name.endswith("bias") or any(k in name for k in ("embedding", "norm", "query", "shared"))


def parameter_groups(named_parameters, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (plain if no_weight_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
