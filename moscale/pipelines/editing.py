"""Editing and long motions for [`MoScalePipeline`]: what is kept of a source motion, and chained continuation.

An edit is sampling with some tokens fixed. `prepare_edit` checks the editing arguments of the pipeline's call,
encodes the source on the target's frames and returns an `EditPlan`: per scale which tokens are kept, the source's
encoder latent those tokens are taken from, and how the decoded result blends back into the source near the edit.
During the scale loop `EditPlan.kept_tokens` gives each scale's kept tokens: the codes of the residual the scales
sampled so far leave of the source's latent (the VQ's own residual step), so that where no coarser token changed
they are the source's own codes and near an edit they absorb the change.

`generate_long` chains continuations into one motion longer than the model's window.

Tensor names follow the legend in docs/architecture.md ("Tensor names").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from moscale.models.modeling_moscale_vq import MoScaleVQModel, is_valid_num_frames
from moscale.schedulers.scheduling_moscale import edit_token_masks, seam_blend_weights

if TYPE_CHECKING:
    from moscale.pipelines.pipeline_moscale import MoScalePipeline, MoScalePipelineOutput

__all__ = ["EditPlan", "generate_long", "prepare_edit"]


@dataclass
class EditPlan:
    """What an edit keeps.

    Args:
        latent_BCT: the source's encoder latent on the target canvas.
        keep_masks: per scale, (B, L) True where the token is kept.
        source_BND: the source on the target frames, in the pipeline's output space.
        blend_BN: weight of the source in the output per frame (1 far from the edit, 0 on regenerated frames).
    """

    latent_BCT: torch.Tensor
    keep_masks: list[torch.BoolTensor]
    source_BND: torch.Tensor
    blend_BN: torch.Tensor

    def kept_tokens(
        self,
        vq_model: MoScaleVQModel,
        residual_BCT: torch.Tensor,
        token_lengths_B: torch.Tensor,
        scale_index: int,
        valid_BL: torch.BoolTensor,
    ) -> tuple[torch.BoolTensor, torch.LongTensor]:
        """(B, L) positions of scale `scale_index` that keep a source token, and those tokens (B, L).

        `residual_BCT` is the source latent minus the contributions of the scales sampled so far.
        """
        source_ids_BL = vq_model.quantizer.residual_codes(residual_BCT, token_lengths_B, scale_index)
        return self.keep_masks[scale_index] & valid_BL, source_ids_BL

    def paste(self, features_BND: torch.Tensor) -> torch.Tensor:
        """Decoded features -> the source on kept frames, blended into the generated motion near the edit."""
        blend_BN1 = self.blend_BN[..., None]
        return blend_BN1 * self.source_BND + (1 - blend_BN1) * features_BND


# ---------------------------------------------------------------------------------------------------- preparation
def prepare_edit(
    pipe: MoScalePipeline,
    source_motion,
    edit_mask,
    edit_spans,
    source_start: int,
    frame_lengths: list[int],
    repeats: int,
    seam_frames: int | None,
    device: torch.device,
) -> EditPlan:
    """Check the editing arguments of `MoScalePipeline.__call__` and encode the source on the target canvas.

    `frame_lengths` are the target lengths of the whole (prompt-major) batch, `repeats` its motions per prompt.
    """
    vq_cfg = pipe.vq_model.config
    batch, num_prompts, max_frames = len(frame_lengths), len(frame_lengths) // repeats, max(frame_lengths)
    source_BND = _check_source(source_motion, num_prompts, vq_cfg.motion_dim, device)
    source_BND = source_BND.repeat_interleave(repeats, dim=0) if source_BND.shape[0] > 1 else source_BND
    if not isinstance(source_start, (int, np.integer)) or source_start < 0:
        raise ValueError(
            f"source_start must be an integer >= 0 (the target frame of the source's first frame), got {source_start}"
        )
    frame_idx = torch.arange(max_frames, device=device)
    lengths_B = torch.tensor(frame_lengths, device=device)
    inside_BN = frame_idx[None] < lengths_B[:, None]
    source_stop = source_start + source_BND.shape[1]
    covered_N = (frame_idx >= source_start) & (frame_idx < source_stop)

    if edit_mask is not None and edit_spans is not None:
        raise ValueError("pass edit_mask or edit_spans, not both")
    if edit_mask is not None:
        regenerate_BN = _check_edit_mask(edit_mask, num_prompts, max_frames, device)
        regenerate_BN = regenerate_BN.repeat_interleave(repeats, 0) if regenerate_BN.shape[0] > 1 else regenerate_BN
    elif edit_spans is not None:
        regenerate_BN = spans_to_mask(edit_spans, max_frames, pipe.fps, device)[None]
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
    normalized_BND[:, source_start:stop] = pipe.normalize(canvas_BND[:, source_start:stop])
    latent_BCT = pipe.vq_model.encode_latent(normalized_BND.to(pipe.vq_model.dtype), lengths_B)

    scale_masks = edit_token_masks(regenerate_BN, vq_cfg.unit_length, vq_cfg.latent_length, vq_cfg.scales)
    seam = round(0.5 * pipe.fps) if seam_frames is None else int(seam_frames)
    if seam < 0:
        raise ValueError(f"seam_frames must be >= 0, got {seam_frames}")
    return EditPlan(
        latent_BCT=latent_BCT,
        keep_masks=[~regenerate for regenerate in scale_masks],
        source_BND=canvas_BND[:, :max_frames],
        blend_BN=seam_blend_weights(regenerate_BN, seam),
    )


def source_num_frames(pipe: MoScalePipeline, source_motion, source_start: int) -> int:
    """The target length an edit takes when `num_frames` is omitted: where the source ends."""
    extent = source_start + np.shape(source_motion)[-2]
    vq_cfg = pipe.vq_model.config
    if not is_valid_num_frames(extent, vq_cfg.unit_length, pipe.config.min_num_frames, vq_cfg.max_motion_length):
        raise ValueError(
            f"the source ends at frame {extent}, which is not a valid num_frames: pass num_frames explicitly "
            f"(a multiple of {vq_cfg.unit_length} between {pipe.config.min_num_frames} and "
            f"{vq_cfg.max_motion_length})"
        )
    return extent


def _check_source(source_motion, num_prompts: int, motion_dim: int, device: torch.device) -> torch.Tensor:
    """Source features as a float32 (1 or num_prompts, frames, D) tensor on `device`."""
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


def _check_edit_mask(edit_mask, num_prompts: int, frames: int, device: torch.device) -> torch.BoolTensor:
    """edit_mask as a (1 or num_prompts, frames) bool tensor; True = regenerate."""
    mask = torch.as_tensor(edit_mask if torch.is_tensor(edit_mask) else np.asarray(edit_mask)).to(device)
    mask = mask[None] if mask.ndim == 1 else mask
    if mask.ndim != 2 or mask.shape[-1] != frames or mask.shape[0] not in (1, num_prompts):
        raise ValueError(
            f"edit_mask must have one entry per target frame: shape ({frames},) or ({num_prompts}, {frames}) "
            f"for num_frames={frames}, got {tuple(mask.shape)}"
        )
    # Cast to bool, 0.3 would mean "regenerate": only a mask that is boolean already, or all 0 and 1, is one.
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        others = mask[(mask != 0) & (mask != 1)].unique()[:4].tolist()
        raise ValueError(
            f"edit_mask must be booleans (True = regenerate the frame) or 0/1 values, got {mask.dtype} values such "
            f"as {others}; threshold it yourself, e.g. edit_mask > 0.5"
        )
    return mask.bool()


def _is_pair(span) -> bool:
    return isinstance(span, Sequence) and not isinstance(span, str) and len(span) == 2


def spans_to_mask(spans, frames: int, fps: float, device) -> torch.BoolTensor:
    """[(start_s, end_s or None), ...] in seconds -> (frames,) regenerate mask."""
    mask = torch.zeros(frames, dtype=torch.bool, device=device)
    duration = frames / fps
    spans = spans.tolist() if isinstance(spans, np.ndarray) else spans
    if isinstance(spans, str) or not isinstance(spans, Sequence) or not all(map(_is_pair, spans)):
        raise ValueError(
            "edit_spans must be a list of (start_seconds, end_seconds or None) pairs, e.g. [(1.0, 2.5)] for one "
            f"span, got {spans!r}"
        )
    for span in spans:
        start, end = float(span[0]), duration if span[1] is None else float(span[1])
        if not 0 <= start < end <= duration + 1e-6:
            raise ValueError(f"edit span {span} must satisfy 0 <= start < end <= {duration:g} s (the target length)")
        mask[round(start * fps) : round(end * fps)] = True
    return mask


# --------------------------------------------------------------------------------------------------- long motions
def generate_long(
    pipe: MoScalePipeline,
    prompts: Sequence[str],
    num_frames: int | Sequence[int],
    overlap_frames: int = 40,
    generator: torch.Generator | None = None,
    **kwargs,
) -> MoScalePipelineOutput:
    """See [`MoScalePipeline.generate_long`]."""
    from moscale.pipelines.pipeline_moscale import MoScalePipelineOutput, prompts_as_list

    prompts = prompts_as_list(prompts, "prompts")
    if not prompts:
        raise ValueError("prompts is empty: pass one caption per segment")
    frames = [num_frames] * len(prompts) if isinstance(num_frames, (int, np.integer)) else list(num_frames)
    if len(frames) != len(prompts):
        raise ValueError(f"num_frames has {len(frames)} entries for {len(prompts)} segments")
    unit, window = pipe.vq_model.config.unit_length, pipe.vq_model.config.max_motion_length
    own_keys = ("prompt", "prompt_embeds", "prompt_attention_mask", "num_frames", "source_motion", "edit_mask")
    for key in own_keys + ("edit_spans", "source_start", "output_type"):
        if key in kwargs:
            raise ValueError(f"generate_long sets {key} itself; pass prompts, num_frames and overlap_frames")
    if not is_valid_num_frames(overlap_frames, unit, unit, window - unit):
        raise ValueError(f"overlap_frames must be a positive multiple of {unit} below {window}, got {overlap_frames}")
    for i, n in enumerate(frames[1:], start=1):
        if not is_valid_num_frames(n, unit, unit, window - overlap_frames):
            raise ValueError(
                f"segment {i} has {n} frames: use a positive multiple of {unit} with overlap_frames + frames <= "
                f"{window} (overlap_frames={overlap_frames})"
            )
    kwargs.setdefault("num_motions_per_prompt", 1)
    if kwargs["num_motions_per_prompt"] != 1:
        raise ValueError("generate_long makes one motion: num_motions_per_prompt must be 1")

    first = pipe(prompts[0], num_frames=frames[0], generator=generator, **kwargs)
    motion_ND = first.features[0, : frames[0]]
    for prompt, n in zip(prompts[1:], frames[1:]):
        if motion_ND.shape[0] < overlap_frames:
            raise ValueError(f"the motion so far has {motion_ND.shape[0]} frames, fewer than overlap_frames")
        out = pipe(
            prompt,
            num_frames=overlap_frames + n,
            source_motion=motion_ND[-overlap_frames:],
            generator=generator,
            **kwargs,
        )
        motion_ND = torch.cat([motion_ND[:-overlap_frames], out.features[0, : overlap_frames + n]])
    lengths_B = torch.tensor([motion_ND.shape[0]], device=motion_ND.device)
    features_BND = motion_ND[None]
    joints = pipe.features_to_joints(features_BND, lengths_B)
    return MoScalePipelineOutput(features=features_BND, joints=joints, lengths=lengths_B, tokens=None)
