"""Tensor functions of MoScale's sampler, used by [`MoScalePipeline`]: filtering and drawing tokens, the per-scale
guidance and re-masking schedules, and the editing masks carried from frames to every scale.

They are pure functions of their inputs (no models), so they can be tested and reused on their own.
Shape suffixes follow VAR: B batch, L tokens of one scale, V codebook size, T latent steps, N frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "cfg_weight",
    "edit_token_masks",
    "num_tokens_to_mask",
    "sample_tokens",
    "seam_blend_weights",
    "top_k_top_p_filter",
]


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
