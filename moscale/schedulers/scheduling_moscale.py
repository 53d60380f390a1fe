"""MoScaleScheduler: the refinement schedule of [`MoScalePipeline`], and the tensor functions it is made of.

The scheduler owns everything the sampler decides without a model: how many mask-and-repredict steps each scale
gets, how many of the least confident tokens each step re-masks (a cosine schedule), the classifier-free guidance
ramp over scales and how it combines the two branches' logits, and the token draw (temperature, top-k, the authors'
top-p, one multinomial call). Its settings are a diffusers config, saved in a pipeline folder's `scheduler/`, so
swapping schedules means loading another scheduler config. The functions below it are pure (no state, no models)
and usable on their own; so are the editing masks that carry a frame mask to every scale.

Tensor names follow the legend in docs/architecture.md ("Tensor names").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from moscale.models.modeling_moscale import MASK_ID, MoScaleConfig

__all__ = [
    "MoScaleScheduler",
    "MoScaleSchedulerOutput",
    "cfg_weight",
    "edit_token_masks",
    "num_tokens_to_mask",
    "sample_tokens",
    "seam_blend_weights",
    "top_k_top_p_filter",
]

KEPT_CONFIDENCE = 1e5
"""Confidence of positions that must never be re-masked (padding, kept tokens, tokens settled by earlier steps)."""

_PAPER_MODEL = MoScaleConfig()
"""The paper's transformer config: its recorded sampling recipe gives the scheduler's defaults."""


@dataclass
class MoScaleSchedulerOutput(BaseOutput):
    """Output of [`MoScaleScheduler.step`].

    Args:
        prev_sample: (B, L) ids after the step: a drawn token at every masked position, the input id elsewhere.
        confidence: (B, L) probability of each drawn token under the guided logits (without temperature), and
            `KEPT_CONFIDENCE` where nothing was drawn, so that only this step's draws can be re-masked later.
        logits: (B, L, V) the guided logits the tokens were drawn from.
    """

    prev_sample: torch.LongTensor
    confidence: torch.Tensor
    logits: torch.Tensor


class MoScaleScheduler(SchedulerMixin, ConfigMixin):
    r"""The refinement schedule of MoScale's scale-by-scale sampler, as the authors' `MoScale.generate` runs it.

    Scale k gets `refinement_steps[k]` steps. Step s of n re-masks the round(cos(pi/2 * t) * pool) least confident
    positions (at least one), t = s / (n - 1), where the pool is the scale's token count (padding included, as the
    authors count it; kept editing tokens excluded). The transformer re-predicts them; with guidance the logits are
    (1 + tau) * cond - tau * uncond, tau = guidance_scale - guidance_decay * (k - 1); the tokens are drawn with
    temperature, top-k and the authors' top-p in one multinomial call per step.

    Settings given to `set_timesteps` (the pipeline's call arguments) override the config for one run; `None`
    keeps the config's value.

    Args:
        refinement_steps: refinement steps per scale, coarse to fine; its length must match the models' scales.
        guidance_scale: classifier-free guidance at scale 1 (0 turns guidance off: no unconditional branch).
        guidance_decay: decrease of the guidance per finer scale.
        top_k: keep the k most likely tokens (0 = off).
        top_p: keep the smallest set of most likely tokens whose mass stays within top_p, the token crossing the
            threshold excluded (0 or 1 = off).
        temperature: divides the logits before filtering and drawing (> 0).

    The defaults of the first three are the paper's recipe as `MoScaleConfig` records it (HumanML3D:
    (1, 2, 5, 10), guidance 5, decay 0.25); the filters default to the authors' top-p 0.9, top-k 0, temperature 1.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        refinement_steps: Sequence[int] = _PAPER_MODEL.sample_steps_per_scale,
        guidance_scale: float = _PAPER_MODEL.guidance_scale,
        guidance_decay: float = _PAPER_MODEL.guidance_decay,
        top_k: int = 0,
        top_p: float = 0.9,
        temperature: float = 1.0,
    ):
        self._check_settings(None, refinement_steps, guidance_scale, top_k, top_p, temperature)
        self.set_timesteps(len(refinement_steps))

    @classmethod
    def from_transformer_config(cls, config: MoScaleConfig) -> MoScaleScheduler:
        """The schedule a transformer config records (`sample_steps_per_scale`, `guidance_scale`, `guidance_decay`):
        what a pipeline folder saved without `scheduler/` samples with."""
        return cls(
            refinement_steps=config.sample_steps_per_scale,
            guidance_scale=config.guidance_scale,
            guidance_decay=config.guidance_decay,
        )

    # ------------------------------------------------------------------------------------------------- one run
    def set_timesteps(
        self,
        num_scales: int,
        refinement_steps: Sequence[int] | None = None,
        guidance_scale: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """Fix the settings of one sampling run (None = the config's) and the schedule times of every scale.

        A number may be any real scalar: a Python or NumPy number, or a 0-d array or tensor.
        """
        guidance_scale, top_k, top_p, temperature = map(_python_scalar, (guidance_scale, top_k, top_p, temperature))
        config = self.config
        refinement_steps = config.refinement_steps if refinement_steps is None else refinement_steps
        guidance_scale = config.guidance_scale if guidance_scale is None else guidance_scale
        top_k = config.top_k if top_k is None else top_k
        top_p = config.top_p if top_p is None else top_p
        temperature = config.temperature if temperature is None else temperature
        self._check_settings(num_scales, refinement_steps, guidance_scale, top_k, top_p, temperature)
        self.refinement_steps = tuple(int(n) for n in refinement_steps)
        self.guidance_scale = float(guidance_scale)
        self.top_k, self.top_p, self.temperature = int(top_k), float(top_p), float(temperature)
        self.timesteps = [torch.linspace(0, 1, n, device=device) for n in self.refinement_steps]

    @property
    def num_steps(self) -> int:
        """Refinement steps of the whole run (the pipeline's progress bar counts them)."""
        return sum(self.refinement_steps)

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 0

    def guidance_weight(self, scale_index: int) -> float:
        """tau of scale `scale_index` (see `cfg_weight`)."""
        return cfg_weight(self.guidance_scale, scale_index, self.config.guidance_decay)

    # ----------------------------------------------------------------------------------------------- one step
    @staticmethod
    def initial_confidence(fixed_BL: torch.BoolTensor) -> torch.Tensor:
        """Confidence before a scale's first step: 0 where tokens are to be drawn, `KEPT_CONFIDENCE` where fixed."""
        return torch.where(fixed_BL, KEPT_CONFIDENCE, 0.0)

    def remask(
        self,
        ids_BL: torch.LongTensor,
        confidence_BL: torch.Tensor,
        fixed_BL: torch.BoolTensor,
        pool_B: torch.Tensor,
        scale_index: int,
        step: int,
    ) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """Mask the least confident positions for `step` of scale `scale_index` -> (ids with MASK_ID there, mask).

        `pool_B` (float) is what the cosine count is taken of; fixed positions are never masked.
        """
        ranks_BL = confidence_BL.argsort(dim=1).argsort(dim=1)
        count_B = num_tokens_to_mask(self.timesteps[scale_index][step], pool_B)
        is_mask_BL = (ranks_BL < count_B[:, None]) & ~fixed_BL
        return torch.where(is_mask_BL, MASK_ID, ids_BL), is_mask_BL

    def step(
        self,
        model_output: torch.Tensor,
        scale_index: int,
        sample: torch.LongTensor,
        is_mask_BL: torch.BoolTensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> MoScaleSchedulerOutput | tuple:
        """Guide, draw and fill: transformer logits -> the ids after this refinement step.

        Args:
            model_output: (B, L, V) logits of the current scale, or (2B, L, V) with guidance (conditional rows
                first, then the same captions unconditioned).
            scale_index: k, for the guidance ramp.
            sample: (B, L) current ids (MASK_ID where `is_mask_BL`).
            is_mask_BL: (B, L) positions that take the drawn tokens.
            generator: one `torch.Generator` for the draw.
        """
        logits_BlV = model_output.float()
        if self.do_classifier_free_guidance:
            cond_BlV, uncond_BlV = logits_BlV.chunk(2)
            tau = self.guidance_weight(scale_index)
            logits_BlV = (1 + tau) * cond_BlV - tau * uncond_BlV
        drawn_BL = sample_tokens(logits_BlV, self.top_k, self.top_p, self.temperature, generator)
        ids_BL = torch.where(is_mask_BL, drawn_BL, sample)
        confidence_BL = logits_BlV.softmax(dim=-1).gather(2, drawn_BL[..., None])[..., 0]
        confidence_BL = confidence_BL.masked_fill(~is_mask_BL, KEPT_CONFIDENCE)
        if not return_dict:
            return ids_BL, confidence_BL, logits_BlV
        return MoScaleSchedulerOutput(prev_sample=ids_BL, confidence=confidence_BL, logits=logits_BlV)

    # ---------------------------------------------------------------------------------------------- validation
    @staticmethod
    def _check_settings(num_scales, refinement_steps, guidance_scale, top_k, top_p, temperature) -> None:
        if not (
            isinstance(guidance_scale, (int, float, np.integer, np.floating))
            and math.isfinite(guidance_scale)
            and guidance_scale >= 0
        ):
            raise ValueError(
                f"guidance_scale must be a finite number >= 0 (0 turns guidance off), got {guidance_scale}"
            )
        try:
            steps = tuple(refinement_steps)
        except TypeError:  # a bare int: reported below with the expected form
            steps = ()
        wrong_length = len(steps) != num_scales if num_scales is not None else not steps
        if wrong_length or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in steps):
            scales = f"{num_scales} scales" if num_scales is not None else "one entry per scale"
            raise ValueError(
                f"refinement_steps needs one integer >= 1 per scale ({scales}, e.g. (1, 2, 5, 10)), "
                f"got {refinement_steps}"
            )
        if not (isinstance(top_p, (int, float, np.integer, np.floating)) and 0.0 <= top_p <= 1.0):
            raise ValueError(f"top_p must be in [0, 1] (0 or 1 turns it off), got {top_p}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 turns it off), got {top_k}")
        if not (isinstance(temperature, (int, float, np.integer, np.floating)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}")


def _python_scalar(value):
    """A 0-d tensor or array as the Python number it holds; anything else as it is (and checked as it is)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        return value.item()
    return value


# --------------------------------------------------------------------------------------------- sampling on logits
def top_k_top_p_filter(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set filtered-out logits to -inf, as the authors' `sample_with_top_k_top_p_` does.

    top-k keeps the k largest logits (0 = off). top-p sorts the remaining tokens by probability and removes every
    token whose *inclusive* cumulative probability exceeds `top_p`, always keeping the most likely one; unlike
    transformers' `TopPLogitsWarper`, the token that crosses the threshold is dropped. `top_p` outside (0, 1)
    turns it off.
    """
    vocab = logits_BlV.shape[-1]
    keep_BlV = torch.isfinite(logits_BlV)
    if 0 < top_k < vocab:
        top_idx = logits_BlV.topk(top_k, dim=-1).indices
        keep_BlV = keep_BlV & torch.zeros_like(keep_BlV).scatter(-1, top_idx, True)
    if 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = logits_BlV.masked_fill(~keep_BlV, float("-inf")).sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_remove = cumulative > top_p
        sorted_remove[..., 0] = False
        remove_BlV = torch.zeros_like(sorted_remove).scatter(-1, sorted_idx, sorted_remove)
        keep_BlV = keep_BlV & ~remove_BlV
    return logits_BlV.masked_fill(~keep_BlV, float("-inf"))


def sample_tokens(
    logits_BlV: torch.Tensor,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """One token per position: temperature, then `top_k_top_p_filter`, then ONE multinomial call over all B * l rows.

    The single call over every position of the scale (masked or not) is what makes the random stream, and so the
    samples, identical to the authors' for the same generator state. Probabilities move to the generator's device
    (a generator on the logits' device keeps everything there).
    """
    batch, length, vocab = logits_BlV.shape
    filtered = top_k_top_p_filter(logits_BlV / max(float(temperature), 1e-8), top_k, top_p)
    probs = torch.nan_to_num(filtered.softmax(dim=-1), nan=0.0)
    probs = probs / probs.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    if generator is not None:
        probs = probs.to(generator.device)
    idx = torch.multinomial(probs.view(-1, vocab), num_samples=1, replacement=False, generator=generator)
    return idx.view(batch, length).to(logits_BlV.device)


def cfg_weight(guidance_scale: float, scale_index: int, decay: float = 0.25) -> float:
    """The authors' per-scale guidance tau = guidance_scale - decay * (scale_index - 1).

    Logits are `(1 + tau) * cond - tau * uncond`; with guidance_scale 5 the four scales use 5.25, 5.0, 4.75, 4.5.
    """
    return guidance_scale - decay * (scale_index - 1)


def num_tokens_to_mask(t: torch.Tensor, pool_B: torch.Tensor) -> torch.Tensor:
    """Tokens to (re-)mask at schedule time t in [0, 1]: round(cos(pi/2 * t) * pool), at least 1 (float, on device).

    The authors' pool is the scale's full length, padded positions included; in editing it also excludes kept
    positions, so that the schedule spreads over the tokens actually regenerated.
    """
    return torch.round(torch.cos(t * math.pi * 0.5) * pool_B).clamp(min=1)


# ------------------------------------------------------------------------------------------------ editing masks
def edit_token_masks(
    regenerate_BN: torch.Tensor, unit_length: int, latent_length: int, scales: Sequence[int]
) -> list[torch.BoolTensor]:
    """Per-frame regenerate mask (B, N) -> per-scale token masks [(B, T // s)], True where the token is regenerated.

    A latent step is regenerated when any of its `unit_length` frames is; a token of scale s is regenerated when its
    area-downsampling window touches any regenerated latent step (so coarse tokens straddling an edit border are
    resampled, never frozen across it). Frames beyond N count as kept (they are padding anyway).
    """
    batch, frames = regenerate_BN.shape
    padded_BN = F.pad(regenerate_BN.float(), (0, latent_length * unit_length - frames))
    latent_B1T = padded_BN.view(batch, 1, latent_length, unit_length).amax(dim=-1)
    return [F.interpolate(latent_B1T, size=latent_length // s, mode="area")[:, 0] > 0 for s in scales]


def seam_blend_weights(regenerate_BN: torch.Tensor, seam_frames: int) -> torch.Tensor:
    """(B, N) weight of the source motion in the output: 0 on regenerated frames, 1 on kept frames more than
    `seam_frames` away from any regenerated frame, and a linear ramp d / (seam_frames + 1) in between."""
    frames = regenerate_BN.shape[-1]
    idx = torch.arange(frames, device=regenerate_BN.device)
    gap_NN = (idx[:, None] - idx[None, :]).abs().float()
    distance_BN = torch.where(regenerate_BN[:, None, :], gap_NN[None], float("inf")).amin(dim=-1)
    return (distance_BN / (seam_frames + 1)).clamp(max=1.0)
