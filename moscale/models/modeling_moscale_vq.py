"""MoScale motion tokenizer: a 1D convolutional VQ-VAE with a multi-scale residual quantizer.

The encoder turns a motion clip (B, N, motion_dim) into latents (B, C, T) with T = N / 2**down_t. The quantizer
writes the latent as a sum over scales s in `config.scales` (coarse to fine): at scale s the residual is
area-downsampled to T // s steps, each step takes its nearest code from one shared codebook, and the chosen code
vectors are linearly upsampled back to T and subtracted from the residual. The decoder maps the accumulated
reconstruction `f_hat` (B, C, T) back to motion.

The computation reproduces the authors' HRVQVAE (github.com/zhiwei-zzz/MoScale) tensor for tensor; the places where
we differ on purpose are listed in docs/architecture.md.

Tensor names follow the legend in docs/architecture.md ("Tensor names").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from moscale.models.config_validation import (
    boolean,
    check_fields,
    integer,
    number,
    one_of,
    probability,
    sequence,
)
from moscale.models.loading import ExplainedLoadingMixin

PAD_ID = -1
"""Code id at positions beyond a sample's valid length."""


def is_valid_num_frames(num_frames, unit_length: int, min_frames: int, max_frames: int) -> bool:
    """The frame-length rule of every MoScale component: an integer multiple of the tokenizer's unit length (frames
    per latent step) within [min_frames, max_frames]."""
    return (
        isinstance(num_frames, numbers.Integral)
        and not isinstance(num_frames, bool)
        and num_frames % unit_length == 0
        and min_frames <= num_frames <= max_frames
    )


_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "leakyrelu": lambda: nn.LeakyReLU(0.1)}

_CONFIG_RULES = {
    "motion_dim": integer(at_least=1),
    "code_dim": integer(at_least=1),
    "num_codes": integer(at_least=1),
    "scales": sequence(integer(at_least=1)),
    "width": integer(at_least=1),
    "depth": integer(at_least=1),
    "down_t": integer(at_least=0),
    "dilation_growth_rate": integer(at_least=1),
    "activation": one_of(*_ACTIVATIONS),
    "use_attention": boolean(),
    "attention_heads": integer(at_least=1),
    "attention_ffn_ratio": integer(at_least=1),
    "resnet_dropout": probability(),
    "attention_dropout": probability(),
    "ema_decay": probability(),
    "code_sampling_temperature": number(at_least=0),
    "commit_loss_weight": number(at_least=0),
    "joint_position_loss_weight": number(at_least=0),
    "joint_position_dims": sequence(integer(at_least=0), length=2),
    "max_motion_length": integer(at_least=1),
}


class MoScaleVQConfig(PreTrainedConfig):
    r"""Configuration of [`MoScaleVQModel`]. Defaults are the paper's HumanML3D tokenizer.

    Args:
        motion_dim: features per frame (263 for HumanML3D, 251 for KIT-ML).
        code_dim: width C of latents and codebook vectors.
        num_codes: codebook size V (shared by all scales).
        scales: temporal downsampling factor of each quantizer scale, coarse to fine; the finest must be 1.
        width: channel width of the convolutional encoder/decoder.
        depth: residual blocks per resolution.
        down_t: number of stride-2 downsampling stages; a latent step covers 2**down_t frames.
        dilation_growth_rate: dilation of residual block j is growth**(depth-1-j).
        activation: "relu", "silu", "gelu" or "leakyrelu".
        use_attention: add a gated self-attention block after every resolution stage.
        attention_heads: heads of those attention blocks (width / heads must be even, for rotary embeddings).
        attention_ffn_ratio: hidden size of the attention blocks' feed-forward, relative to width.
        resnet_dropout: dropout inside residual blocks (training only).
        attention_dropout: dropout on attention weights and feed-forward outputs (training only).
        ema_decay: EMA decay of the codebook statistics during training.
        code_sampling_temperature: training-time code choice draws argmax(-distance / temperature + Gumbel
            noise); 0 gives plain nearest-code search. Evaluation always uses nearest codes.
        commit_loss_weight: weight of the commitment loss in `loss`.
        joint_position_loss_weight: weight of the extra smooth-L1 term on `joint_position_dims`.
        joint_position_dims: (start, stop) feature slice of root-relative joint positions (4:67 for HumanML3D).
        max_motion_length: frames of a full clip; latents have max_motion_length // 2**down_t steps.
    """

    model_type = "moscale_vq"

    def __init__(
        self,
        motion_dim: int = 263,
        code_dim: int = 512,
        num_codes: int = 512,
        scales: Sequence[int] = (8, 4, 2, 1),
        width: int = 512,
        depth: int = 3,
        down_t: int = 2,
        dilation_growth_rate: int = 3,
        activation: str = "relu",
        use_attention: bool = True,
        attention_heads: int = 8,
        attention_ffn_ratio: int = 4,
        resnet_dropout: float = 0.2,
        attention_dropout: float = 0.1,
        ema_decay: float = 0.99,
        code_sampling_temperature: float = 0.5,
        commit_loss_weight: float = 0.02,
        joint_position_loss_weight: float = 0.5,
        joint_position_dims: Sequence[int] = (4, 67),
        max_motion_length: int = 196,
        **kwargs,
    ):
        check_fields(type(self).__name__, locals(), _CONFIG_RULES)
        scales = tuple(int(s) for s in scales)
        if not scales or scales[-1] != 1 or any(a <= b for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be strictly decreasing positive integers ending in 1, got {scales}")
        if use_attention and (width % attention_heads or (width // attention_heads) % 2):
            raise ValueError(
                f"width ({width}) must split into {attention_heads} attention heads of even size "
                "(rotary embeddings rotate pairs); choose a width that is a multiple of 2 * attention_heads"
            )
        if not joint_position_dims[0] < joint_position_dims[1] <= motion_dim:
            raise ValueError(f"joint_position_dims must be (start, stop) within motion_dim, got {joint_position_dims}")
        if max_motion_length % (2**down_t):
            raise ValueError(f"max_motion_length ({max_motion_length}) must be a multiple of 2**down_t ({2**down_t})")
        self.motion_dim = motion_dim
        self.code_dim = code_dim
        self.num_codes = num_codes
        self.scales = scales
        self.width = width
        self.depth = depth
        self.down_t = down_t
        self.dilation_growth_rate = dilation_growth_rate
        self.activation = activation
        self.use_attention = use_attention
        self.attention_heads = attention_heads
        self.attention_ffn_ratio = attention_ffn_ratio
        self.resnet_dropout = resnet_dropout
        self.attention_dropout = attention_dropout
        self.ema_decay = ema_decay
        self.code_sampling_temperature = code_sampling_temperature
        self.commit_loss_weight = commit_loss_weight
        self.joint_position_loss_weight = joint_position_loss_weight
        self.joint_position_dims = tuple(int(d) for d in joint_position_dims)
        self.max_motion_length = max_motion_length
        super().__init__(**kwargs)

    @property
    def unit_length(self) -> int:
        """Frames per latent step."""
        return 2**self.down_t

    @property
    def latent_length(self) -> int:
        """Latent steps T of a full-length clip."""
        return self.max_motion_length // self.unit_length

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """Tokens per scale for a full-length clip, e.g. (6, 12, 24, 49)."""
        return tuple(self.latent_length // s for s in self.scales)


@dataclass
class MoScaleVQEncoderOutput(ModelOutput):
    """Output of [`MoScaleVQModel.encode`] and [`MoScaleVQModel.quantize`].

    Args:
        codes: one (B, T // s) LongTensor per scale, coarse to fine; PAD_ID (-1) beyond the valid length.
        f_hat_per_scale: one (B, C, T) tensor per scale: the accumulated reconstruction after that scale.
        latent: (B, C, T) encoder output.
    """

    codes: tuple[torch.LongTensor, ...] | None = None
    f_hat_per_scale: tuple[torch.FloatTensor, ...] | None = None
    latent: torch.FloatTensor | None = None


@dataclass
class MoScaleVQOutput(ModelOutput):
    """Output of the training forward of [`MoScaleVQModel`].

    Args:
        loss: reconstruction + commit_loss_weight * commit + joint_position_loss_weight * joint term.
        reconstruction: (B, N, D) decoded motion.
        reconstruction_loss: smooth-L1 over valid frames and all features.
        commit_loss: mean over scales of the squared latent error (see docs/architecture.md for its scaling).
        joint_position_loss: smooth-L1 over valid frames on `config.joint_position_dims`.
        perplexity: exp entropy of the code usage in this batch.
        codes: (B, T // s) code ids per scale (PAD_ID beyond the valid length).
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commit_loss: torch.FloatTensor | None = None
    joint_position_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codes: tuple[torch.LongTensor, ...] | None = None


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.BoolTensor:
    """(B,) lengths -> (B, max_len) mask, True at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


class ResidualConvBlock(nn.Module):
    """Pre-activation residual block: x + conv2(act(conv1(act(x)))) with a dilated kernel-3 conv1."""

    def __init__(self, width: int, dilation: int, activation: str, dropout: float):
        super().__init__()
        self.act1 = _ACTIVATIONS[activation]()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.act2 = _ACTIVATIONS[activation]()
        self.conv2 = nn.Conv1d(width, width, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_BWT: torch.Tensor) -> torch.Tensor:
        return x_BWT + self.dropout(self.conv2(self.act2(self.conv1(self.act1(x_BWT)))))


class ResidualConvStack(nn.Sequential):
    def __init__(self, config: MoScaleVQConfig):
        # Dilations run from the largest down to 1, in the encoder as in the decoder.
        dilations = [config.dilation_growth_rate ** (config.depth - 1 - j) for j in range(config.depth)]
        super().__init__(
            *[ResidualConvBlock(config.width, d, config.activation, config.resnet_dropout) for d in dilations]
        )


def rotate_half_rope(x_BHTd: torch.Tensor) -> torch.Tensor:
    """Rotary embedding at positions 0..T-1, pairing dim i with dim i + d/2 (the "rotate half" layout)."""
    head_dim, length = x_BHTd.shape[-1], x_BHTd.shape[-2]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=x_BHTd.device).float() / head_dim))
    freqs_Td = torch.outer(torch.arange(length, device=x_BHTd.device).float(), inv_freq)
    angles_Td = torch.cat([freqs_Td, freqs_Td], dim=-1)
    first, second = x_BHTd.chunk(2, dim=-1)
    cos, sin = angles_Td.cos().to(x_BHTd.dtype), angles_Td.sin().to(x_BHTd.dtype)
    return x_BHTd * cos + torch.cat([-second, first], dim=-1) * sin


class GatedAttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions, a sigmoid gate per head, then a GELU FFN.

    Padded keys (position >= length) are masked; padded queries are still computed (their outputs are ignored
    downstream).
    """

    def __init__(self, config: MoScaleVQConfig):
        super().__init__()
        width = config.width
        self.num_heads = config.attention_heads
        self.norm1 = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.gate_proj = nn.Linear(width, self.num_heads)
        self.out_proj = nn.Linear(width, width)
        self.weights_dropout = nn.Dropout(config.attention_dropout)
        self.norm2 = nn.LayerNorm(width)
        hidden = width * config.attention_ffn_ratio
        self.ffn = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(config.attention_dropout),
            nn.Linear(hidden, width),
            nn.Dropout(config.attention_dropout),
        )

    def forward(self, x_BWT: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        x_BTW = x_BWT.transpose(1, 2)
        batch, length, width = x_BTW.shape
        normed_BTW = self.norm1(x_BTW)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)

        q_BHTd = rotate_half_rope(heads(self.q_proj(normed_BTW)))
        k_BHTd = rotate_half_rope(heads(self.k_proj(normed_BTW)))
        v_BHTd = heads(self.v_proj(normed_BTW))
        key_mask_B11T = lengths_to_mask(lengths_B, length)[:, None, None, :]
        # Explicit softmax + dropout module (not SDPA) so training draws the same dropout masks as the authors' code.
        scores_BHTT = (q_BHTd @ k_BHTd.transpose(-2, -1)) * q_BHTd.shape[-1] ** -0.5
        weights_BHTT = self.weights_dropout(scores_BHTT.masked_fill(~key_mask_B11T, float("-inf")).softmax(dim=-1))
        attn_BHTd = weights_BHTT @ v_BHTd
        attn_BHTd = attn_BHTd * torch.sigmoid(self.gate_proj(normed_BTW)).transpose(1, 2)[..., None]
        x_BTW = x_BTW + self.out_proj(attn_BHTd.transpose(1, 2).reshape(batch, length, width))
        x_BTW = x_BTW + self.ffn(self.norm2(x_BTW))
        return x_BTW.transpose(1, 2)


class EncoderStage(nn.Module):
    def __init__(self, config: MoScaleVQConfig):
        super().__init__()
        self.downsample = nn.Conv1d(config.width, config.width, kernel_size=4, stride=2, padding=1)
        self.resnet = ResidualConvStack(config)
        self.attention = GatedAttentionBlock(config) if config.use_attention else None

    def forward(self, x_BWT: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        x_BWT = self.resnet(self.downsample(x_BWT))
        return self.attention(x_BWT, lengths_B) if self.attention is not None else x_BWT


class DecoderStage(nn.Module):
    def __init__(self, config: MoScaleVQConfig):
        super().__init__()
        self.resnet = ResidualConvStack(config)
        self.conv = nn.Conv1d(config.width, config.width, 3, padding=1)
        self.attention = GatedAttentionBlock(config) if config.use_attention else None

    def forward(self, x_BWT: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        x_BWT = self.conv(F.interpolate(self.resnet(x_BWT), scale_factor=2, mode="nearest"))
        return self.attention(x_BWT, lengths_B) if self.attention is not None else x_BWT


class MoScaleVQEncoder(nn.Module):
    def __init__(self, config: MoScaleVQConfig):
        super().__init__()
        self.conv_in = nn.Conv1d(config.motion_dim, config.width, 3, padding=1)
        self.act_in = nn.ReLU()
        self.stages = nn.ModuleList([EncoderStage(config) for _ in range(config.down_t)])
        self.conv_out = nn.Conv1d(config.width, config.code_dim, 3, padding=1)

    def forward(self, motion_BDN: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        x_BWT = self.act_in(self.conv_in(motion_BDN))
        for stage in self.stages:
            lengths_B = lengths_B // 2
            x_BWT = stage(x_BWT, lengths_B)
        return self.conv_out(x_BWT)


class MoScaleVQDecoder(nn.Module):
    def __init__(self, config: MoScaleVQConfig):
        super().__init__()
        self.conv_in = nn.Conv1d(config.code_dim, config.width, 3, padding=1)
        self.act_in = nn.ReLU()
        self.stages = nn.ModuleList([DecoderStage(config) for _ in range(config.down_t)])
        self.conv_mid = nn.Conv1d(config.width, config.width, 3, padding=1)
        self.act_out = nn.ReLU()
        self.conv_out = nn.Conv1d(config.width, config.motion_dim, 3, padding=1)

    def forward(self, f_hat_BCT: torch.Tensor, token_lengths_B: torch.Tensor) -> torch.Tensor:
        x_BWT = self.act_in(self.conv_in(f_hat_BCT))
        lengths_B = token_lengths_B
        for stage in self.stages:
            lengths_B = lengths_B * 2
            x_BWT = stage(x_BWT, lengths_B)
        return self.conv_out(self.act_out(self.conv_mid(x_BWT)))


class MultiScaleQuantizer(nn.Module):
    """Shared-codebook residual quantizer over temporal scales, with EMA codebook learning.

    Buffers (all persistent, so `from_pretrained` restores them): `codebook` (V, C), the EMA statistics
    `code_sum` (V, C) and `code_count` (V,), and `initialized` (0 until the first training batch has seeded the
    codebook from encoder outputs).
    """

    def __init__(self, config: MoScaleVQConfig):
        super().__init__()
        self.scales = config.scales
        self.num_codes = config.num_codes
        self.ema_decay = config.ema_decay
        self.register_buffer("codebook", torch.zeros(config.num_codes, config.code_dim))
        self.register_buffer("code_sum", torch.zeros(config.num_codes, config.code_dim))
        self.register_buffer("code_count", torch.ones(config.num_codes))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))

    def nearest_codes(self, x_RC: torch.Tensor, temperature: float = 0.0) -> torch.LongTensor:
        """Nearest codebook entry of each row; with temperature > 0, a Gumbel-perturbed choice (training)."""
        codebook_VC = self.codebook
        # Same expansion and order as the authors, so near-ties resolve identically.
        distance_RV = x_RC.pow(2).sum(-1, keepdim=True) - 2 * x_RC @ codebook_VC.t() + codebook_VC.pow(2).sum(-1)[None]
        scores_RV = -distance_RV
        if temperature > 0:
            uniform = torch.rand_like(scores_RV)
            gumbel = -torch.log((-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20))
            scores_RV = scores_RV / temperature + gumbel
        return scores_RV.argmax(dim=-1)

    def lookup(self, idx_BL: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, C, L) code vectors, zero at PAD_ID."""
        vectors_BLC = F.embedding(idx_BL.clamp(min=0), self.codebook) * (idx_BL >= 0)[..., None]
        return vectors_BLC.transpose(1, 2)

    def scale_contribution(self, idx_BL: torch.Tensor, latent_length: int) -> torch.Tensor:
        """(B, L) ids of one scale -> their (B, C, T) contribution to f_hat (linear upsampling)."""
        return F.interpolate(self.lookup(idx_BL), size=latent_length, mode="linear")

    @staticmethod
    def downsample(x_BCT: torch.Tensor, size: int) -> torch.Tensor:
        return x_BCT if x_BCT.shape[-1] == size else F.interpolate(x_BCT, size=size, mode="area")

    def perturb(
        self,
        idx_BL: torch.Tensor,
        valid_BL: torch.Tensor,
        rate_range: Sequence[float],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Replace a random fraction r ~ U(rate_range) of valid ids by a different random id."""
        low, high = float(rate_range[0]), float(rate_range[1])
        device = idx_BL.device
        rate = low + (high - low) * torch.rand((), generator=generator, device=device)
        replace_BL = (torch.rand(idx_BL.shape, generator=generator, device=device) < rate) & valid_BL
        offset_BL = torch.randint(0, self.num_codes - 1, idx_BL.shape, generator=generator, device=device)
        # Drawing from V-1 values and skipping the true id makes the replacement always a different code.
        different_BL = offset_BL + (offset_BL >= idx_BL).long()
        return torch.where(replace_BL, different_BL, idx_BL)

    def residual_codes(
        self, residual_BCT: torch.Tensor, token_lengths_B: torch.Tensor, scale_index: int, temperature: float = 0.0
    ) -> torch.LongTensor:
        """One step of the residual loop: the residual (B, C, T) -> its codes (B, T // s) at scale `scale_index`.

        Latent steps beyond `token_lengths_B` are zeroed, the residual is area-downsampled to the scale's length and
        each step takes its nearest code (`temperature` > 0: a Gumbel-perturbed choice); PAD_ID beyond the lengths.
        """
        return self._residual_codes(residual_BCT, token_lengths_B, scale_index, temperature)[0]

    def _residual_codes(
        self,
        residual_BCT: torch.Tensor,
        token_lengths_B: torch.Tensor,
        scale_index: int,
        temperature: float = 0.0,
        seed_codebook: bool = False,
    ) -> tuple[torch.LongTensor, torch.Tensor, torch.BoolTensor]:
        """`residual_codes`, plus what training needs: the downsampled residual rows (B * L, C), their validity
        (B, L), and (with `seed_codebook`) the codebook seeded from the valid rows when it is still empty."""
        batch, code_dim, latent_length = residual_BCT.shape
        scale = self.scales[scale_index]
        residual_BCT = residual_BCT * lengths_to_mask(token_lengths_B, latent_length)[:, None]
        rest_BCL = self.downsample(residual_BCT, latent_length // scale)
        valid_BL = lengths_to_mask(token_lengths_B // scale, rest_BCL.shape[-1])
        rest_RC = rest_BCL.transpose(1, 2).reshape(-1, code_dim)
        if seed_codebook and not bool(self.initialized):
            self._seed_codebook(rest_RC[valid_BL.reshape(-1)].detach())
        idx_BL = self.nearest_codes(rest_RC, temperature).view(batch, -1).masked_fill(~valid_BL, PAD_ID)
        return idx_BL, rest_RC, valid_BL

    def residual_loop(
        self,
        latent_BCT: torch.Tensor,
        token_lengths_B: torch.Tensor,
        temperature: float = 0.0,
        perturb_rate: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        seed_codebook: bool = False,
    ) -> tuple[tuple[torch.LongTensor, ...], tuple[torch.Tensor, ...], torch.Tensor, torch.LongTensor]:
        """The residual quantisation of a latent (B, C, T), scale by scale, coarse to fine.

        Each scale takes the codes of what the coarser scales left (`residual_codes`), then subtracts their linearly
        upsampled vectors. With `perturb_rate=(low, high)` the subtracted vectors come from corrupted codes
        (`perturb`); the returned codes stay clean.

        Returns:
            codes: one (B, T // s) LongTensor per scale (PAD_ID beyond the lengths);
            f_hat_per_scale: the accumulated reconstruction (B, C, T) after each scale;
            rest_RC, idx_R: every scale's valid downsampled residual rows and their chosen codes (for the EMA).
        """
        residual_BCT = latent_BCT.clone()
        f_hat_BCT = torch.zeros_like(latent_BCT)
        codes, f_hats, rests, chosen = [], [], [], []
        for k in range(len(self.scales)):
            idx_BL, rest_RC, valid_BL = self._residual_codes(
                residual_BCT, token_lengths_B, k, temperature, seed_codebook and k == 0
            )
            used_BL = idx_BL
            if perturb_rate is not None and perturb_rate[1] > 0:
                used_BL = self.perturb(idx_BL, valid_BL, perturb_rate, generator)
            up_BCT = self.scale_contribution(used_BL, latent_BCT.shape[-1])
            residual_BCT = residual_BCT - up_BCT
            f_hat_BCT = f_hat_BCT + up_BCT
            codes.append(idx_BL)
            f_hats.append(f_hat_BCT)
            rests.append(rest_RC[valid_BL.reshape(-1)])
            chosen.append(idx_BL[valid_BL])
        return tuple(codes), tuple(f_hats), torch.cat(rests), torch.cat(chosen)

    def quantize(
        self,
        latent_BCT: torch.Tensor,
        token_lengths_B: torch.Tensor,
        perturb_rate: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> MoScaleVQEncoderOutput:
        """Deterministic multi-scale quantization (nearest codes), optionally with hierarchical-refinement noise.

        With `perturb_rate=(low, high)`, each scale replaces a fraction r ~ U(low, high) of its valid codes by random
        different codes before building f_hat; the returned `codes` stay clean. The next scales therefore see (and
        their labels correct) the corrupted reconstruction, as in the authors' transformer training.
        """
        codes, f_hats, _, _ = self.residual_loop(
            latent_BCT, token_lengths_B, perturb_rate=perturb_rate, generator=generator
        )
        return MoScaleVQEncoderOutput(codes=codes, f_hat_per_scale=f_hats, latent=latent_BCT)

    @torch.no_grad()
    def _random_rows(self, x_RC: torch.Tensor) -> torch.Tensor:
        """V rows taken from x in order, tiled with small noise when x has fewer than V rows."""
        n_rows, code_dim = x_RC.shape
        if n_rows < self.num_codes:
            repeats = math.ceil(self.num_codes / n_rows)
            tiled = x_RC.repeat(repeats, 1)
            x_RC = tiled + torch.randn_like(tiled) * (0.01 / math.sqrt(code_dim))
        return x_RC[: self.num_codes]

    @torch.no_grad()
    def _seed_codebook(self, x_RC: torch.Tensor) -> None:
        self.codebook.copy_(self._random_rows(x_RC))
        self.code_sum.copy_(self.codebook)
        self.code_count.fill_(1.0)
        self.initialized.fill_(1)

    @torch.no_grad()
    def _ema_update(self, x_RC: torch.Tensor, idx_R: torch.Tensor) -> None:
        """EMA of per-code sums and counts; codes whose EMA count fell below 1 are reset to batch vectors."""
        onehot_VR = F.one_hot(idx_R, self.num_codes).to(x_RC.dtype).t()
        replacement_VC = self._random_rows(x_RC)
        sums_VC, counts_V = onehot_VR @ x_RC, onehot_VR.sum(-1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Data-parallel training: the statistics of every process's batch, as one large batch would give, and
            # rank 0's replacement rows, so that every process keeps the same codebook.
            torch.distributed.all_reduce(sums_VC)
            torch.distributed.all_reduce(counts_V)
            torch.distributed.broadcast(replacement_VC, src=0)
        self.code_sum.mul_(self.ema_decay).add_((1 - self.ema_decay) * sums_VC)
        self.code_count.mul_(self.ema_decay).add_((1 - self.ema_decay) * counts_V)
        updated_VC = self.code_sum / self.code_count[:, None]
        # Dead-code reset only when the batch has enough vectors to draw replacements from (authors' rule: > 5K).
        if x_RC.shape[0] > 5 * self.num_codes:
            alive_V1 = (self.code_count >= 1.0)[:, None].to(x_RC.dtype)
            updated_VC = alive_V1 * updated_VC + (1 - alive_V1) * replacement_VC
        self.codebook.copy_(updated_VC)

    def forward_train(
        self, latent_BCT: torch.Tensor, token_lengths_B: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.LongTensor, ...]]:
        """Training/eval quantization for the VQ-VAE loss: returns (straight-through f_hat, commit, perplexity, codes).

        In training mode the codebook is seeded from the first batch, codes are drawn with Gumbel noise at
        `temperature`, and the codebook follows an EMA of its assigned vectors with dead-code reset.
        """
        latent_length = latent_BCT.shape[-1]
        codes, f_hats, rest_RC, idx_R = self.residual_loop(
            latent_BCT, token_lengths_B, temperature if self.training else 0.0, seed_codebook=self.training
        )
        full_valid_B1T = lengths_to_mask(token_lengths_B, latent_length)[:, None]
        commit = latent_BCT.new_zeros(())
        for f_hat_BCT in f_hats:
            # The authors divide by (valid steps * T) rather than (valid steps * C): kept for identical loss values.
            commit = commit + ((latent_BCT - f_hat_BCT.detach()).pow(2) * full_valid_B1T).sum() / (
                full_valid_B1T.sum() * latent_length
            )
        rest_RC = rest_RC.detach()
        if self.training:
            self._ema_update(rest_RC, idx_R)
        counts_V = torch.bincount(idx_R, minlength=self.num_codes).to(latent_BCT.dtype)
        prob_V = counts_V / counts_V.sum()
        perplexity = torch.exp(-(prob_V * torch.log(prob_V + 1e-7)).sum())
        straight_through_BCT = latent_BCT + (f_hats[-1] - latent_BCT).detach()
        return straight_through_BCT, commit / len(self.scales), perplexity, codes


class MoScaleVQPreTrainedModel(ExplainedLoadingMixin, PreTrainedModel):
    config_class = MoScaleVQConfig
    base_model_prefix = "moscale_vq"
    main_input_name = "motion"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The authors initialise every conv and linear layer with Xavier-normal weights and zero biases.
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            init.xavier_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MultiScaleQuantizer):
            init.zeros_(module.codebook)
            init.zeros_(module.code_sum)
            init.ones_(module.code_count)
            init.zeros_(module.initialized)


class MoScaleVQModel(MoScaleVQPreTrainedModel):
    """Multi-scale residual VQ-VAE for motion (the MoScale tokenizer).

    - `encode(motion, lengths)`: motion (B, N, D) -> per-scale code ids, f_hat after each scale, latent.
    - `decode(codes_or_f_hat, lengths)`: per-scale ids (list of (B, T // s)) or f_hat (B, C, T) -> motion (B, N, D).
    - `forward(motion, lengths)`: training step (reconstruction, losses, EMA codebook update in train mode).
    - `scale_contribution` / `next_scale_input`: the pieces a next-scale sampler needs between scales.

    `lengths` are frame counts (B,); latent steps are lengths // 2**down_t and scale s has (lengths // 2**down_t)
    // s valid tokens. Frames beyond a length are not masked at the encoder input (as the authors do), so pass the
    padded clip exactly as trained.
    """

    def __init__(self, config: MoScaleVQConfig):
        super().__init__(config)
        self.encoder = MoScaleVQEncoder(config)
        self.quantizer = MultiScaleQuantizer(config)
        self.decoder = MoScaleVQDecoder(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------- validation helpers
    def _check_motion(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.LongTensor:
        if motion.ndim != 3 or motion.shape[-1] != self.config.motion_dim:
            raise ValueError(
                f"motion must have shape (batch, frames, {self.config.motion_dim}), got {tuple(motion.shape)}"
            )
        if motion.shape[1] % self.config.unit_length:
            raise ValueError(
                f"motion has {motion.shape[1]} frames; pad it to a multiple of {self.config.unit_length} frames"
            )
        return self._check_lengths(lengths, motion.shape[0], motion.shape[1], self.config.unit_length, "frames")

    @staticmethod
    def _check_lengths(lengths, batch: int, max_len: int, min_len: int, unit: str) -> torch.LongTensor:
        lengths = torch.as_tensor(lengths).long()
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if bool((lengths < min_len).any()) or bool((lengths > max_len).any()):
            raise ValueError(f"lengths must be between {min_len} and {max_len} {unit}, got {lengths.tolist()}")
        return lengths

    def _token_lengths(self, frame_lengths: torch.LongTensor) -> torch.LongTensor:
        return frame_lengths // self.config.unit_length

    # ------------------------------------------------------------------------------------------------- public API
    def encode_latent(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder only: motion (B, N, D) and frame lengths (B,) -> latent (B, C, N // 2**down_t).

        The convolutions read the frames beyond each length as they are, as the authors' encoder does (their outputs
        depend on it), so pad with zeros in the model's normalised space, as training does: raw zeros, normalised,
        are far from zero and change the last latents (on the bundled tokenizer, enough to lose most wave counts).
        """
        lengths = self._check_motion(motion, lengths).to(motion.device)
        return self.encoder(motion.transpose(1, 2).to(self.dtype), lengths)

    def quantize(
        self,
        latent: torch.Tensor,
        token_lengths: torch.Tensor,
        perturb_rate: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> MoScaleVQEncoderOutput:
        """Latent (B, C, T) and token lengths (B,) -> codes and f_hat per scale (see `MultiScaleQuantizer.quantize`)."""
        if latent.ndim != 3 or latent.shape[1] != self.config.code_dim:
            raise ValueError(f"latent must have shape (batch, {self.config.code_dim}, T), got {tuple(latent.shape)}")
        token_lengths = self._check_lengths(token_lengths, latent.shape[0], latent.shape[-1], 1, "latent steps")
        return self.quantizer.quantize(latent, token_lengths.to(latent.device), perturb_rate, generator)

    def encode(
        self,
        motion: torch.Tensor,
        lengths: torch.Tensor,
        perturb_rate: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> MoScaleVQEncoderOutput:
        """Motion (B, N, D) and frame lengths (B,) -> per-scale codes (PAD_ID = -1 beyond the valid length).

        `perturb_rate=(low, high)` turns on the hierarchical-refinement corruption used to train the transformer
        (codes stay clean; f_hat is built from corrupted codes). Leave it None for tokenizing.
        """
        latent_BCT = self.encode_latent(motion, lengths)
        token_lengths = self._token_lengths(torch.as_tensor(lengths).long().to(motion.device))
        return self.quantizer.quantize(latent_BCT, token_lengths, perturb_rate, generator)

    def codes_to_f_hat(self, codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-scale ids, coarse to fine, -> f_hat (B, C, T): the sum of every scale's upsampled code vectors."""
        return self.codes_to_f_hat_per_scale(codes)[-1]

    def codes_to_f_hat_per_scale(self, codes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Per-scale ids, coarse to fine, -> the accumulated f_hat (B, C, T) after each scale."""
        if len(codes) != len(self.config.scales):
            raise ValueError(f"expected codes for {len(self.config.scales)} scales, got {len(codes)}")
        latent_length = codes[-1].shape[-1] * self.config.scales[-1]
        for idx, scale in zip(codes, self.config.scales):
            if idx.ndim != 2 or idx.shape[-1] != latent_length // scale:
                raise ValueError(
                    f"codes of scale {scale} must have shape (batch, {latent_length // scale}), got {tuple(idx.shape)}"
                )
            if bool((idx >= self.config.num_codes).any()) or bool((idx < PAD_ID).any()):
                raise ValueError(f"code ids must be in [-1, {self.config.num_codes - 1}] (-1 = PAD)")
        f_hats, f_hat_BCT = [], 0
        for idx_BL in codes:
            f_hat_BCT = f_hat_BCT + self.scale_contribution(idx_BL, latent_length)
            f_hats.append(f_hat_BCT)
        return tuple(f_hats)

    def scale_contribution(self, idx_BL: torch.Tensor, latent_length: int | None = None) -> torch.Tensor:
        """One scale's ids (B, L) -> their (B, C, T) contribution to f_hat (PAD_ID positions contribute zero)."""
        return self.quantizer.scale_contribution(idx_BL, latent_length or self.config.latent_length)

    def next_scale_input(self, f_hat: torch.Tensor, scale_index: int) -> torch.Tensor:
        """f_hat (B, C, T) area-downsampled to the length of scale `scale_index`: the transformer's input there."""
        return self.quantizer.downsample(f_hat, f_hat.shape[-1] // self.config.scales[scale_index])

    def decode(self, codes_or_f_hat: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """Per-scale code ids or f_hat (B, C, T), with frame lengths (B,) -> motion (B, T * 2**down_t, D).

        f_hat is zeroed beyond each sample's latent length first (on a copy). Output frames beyond a length are
        not zeroed.
        """
        if isinstance(codes_or_f_hat, torch.Tensor) and codes_or_f_hat.is_floating_point():
            f_hat_BCT = codes_or_f_hat
            if f_hat_BCT.ndim != 3 or f_hat_BCT.shape[1] != self.config.code_dim:
                raise ValueError(
                    f"f_hat must have shape (batch, {self.config.code_dim}, T), got {tuple(f_hat_BCT.shape)}"
                )
        else:
            f_hat_BCT = self.codes_to_f_hat(codes_or_f_hat)
        batch, _, latent_length = f_hat_BCT.shape
        lengths = self._check_lengths(
            lengths, batch, latent_length * self.config.unit_length, self.config.unit_length, "frames"
        ).to(f_hat_BCT.device)
        token_lengths = self._token_lengths(lengths)
        f_hat_BCT = f_hat_BCT * lengths_to_mask(token_lengths, latent_length)[:, None]
        return self.decoder(f_hat_BCT, token_lengths).transpose(1, 2)

    def forward(self, motion: torch.Tensor, lengths: torch.Tensor, return_dict: bool | None = None):
        """Training step: reconstruct `motion` and compute the tokenizer losses (masked to valid frames).

        In train mode this also seeds the codebook on the first call and updates it by EMA; eval mode leaves the
        codebook untouched and uses nearest codes.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        lengths = self._check_motion(motion, lengths).to(motion.device)
        latent_BCT = self.encoder(motion.transpose(1, 2).to(self.dtype), lengths)
        token_lengths = self._token_lengths(lengths)
        f_hat_BCT, commit, perplexity, codes = self.quantizer.forward_train(
            latent_BCT, token_lengths, self.config.code_sampling_temperature
        )
        f_hat_BCT = f_hat_BCT * lengths_to_mask(token_lengths, latent_BCT.shape[-1])[:, None]
        reconstruction = self.decoder(f_hat_BCT, token_lengths).transpose(1, 2)

        valid_BN1 = lengths_to_mask(lengths, motion.shape[1])[..., None].to(reconstruction.dtype)
        target = motion.to(reconstruction.dtype)

        def masked_smooth_l1(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            return (F.smooth_l1_loss(pred, ref, reduction="none") * valid_BN1).sum() / (valid_BN1.sum() * ref.shape[-1])

        start, stop = self.config.joint_position_dims
        reconstruction_loss = masked_smooth_l1(reconstruction, target)
        joint_position_loss = masked_smooth_l1(reconstruction[..., start:stop], target[..., start:stop])
        loss = (
            reconstruction_loss
            + self.config.commit_loss_weight * commit
            + self.config.joint_position_loss_weight * joint_position_loss
        )
        output = MoScaleVQOutput(
            loss=loss,
            reconstruction=reconstruction,
            reconstruction_loss=reconstruction_loss,
            commit_loss=commit,
            joint_position_loss=joint_position_loss,
            perplexity=perplexity,
            codes=codes,
        )
        return output if return_dict else output.to_tuple()


AutoConfig.register(MoScaleVQConfig.model_type, MoScaleVQConfig, exist_ok=True)
AutoModel.register(MoScaleVQConfig, MoScaleVQModel, exist_ok=True)
