"""MoScale next-scale transformer: text-conditioned masked prediction of multi-scale motion tokens.

The token sequence concatenates the scales of the tokenizer, coarse to fine (6 + 12 + 24 + 49 = 91 tokens for the
paper's (8, 4, 2, 1) scales on 196 frames). Position i of scale k sees:

* a continuous input: for scale 0 one of `first_l` start tokens pooled from the text, for later scales the
  tokenizer's f_hat after scale k-1 area-downsampled to scale k's length (`prev_scale_features`);
* a token input: the embedding of its current id (a code, [MASK] = -2 or [PAD] = -1).

Both are projected, concatenated and mapped to the block width; a learned level embedding, learned start
positions and scale-normalised interleaved RoPE give positions. Blocks are AdaLN self-attention blocks (the condition
is the max over the start tokens) with a block-causal mask (a position sees its own and coarser scales) and an
ungated cross-attention to the text. The computation reproduces the authors' MoScale (github.com/zhiwei-zzz/MoScale)
tensor for tensor; knowing differences are listed in docs/architecture.md.

Tensor names follow the legend in docs/architecture.md ("Tensor names").
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from moscale.models.config_validation import (
    check_fields,
    integer,
    number,
    optional,
    probability,
    sequence,
    string,
)
from moscale.models.loading import ExplainedLoadingMixin
from moscale.models.modeling_moscale_vq import PAD_ID

MASK_ID = -2
"""Token id of a masked position (to be predicted)."""

_CONFIG_RULES = {
    "num_codes": integer(at_least=1),
    "code_dim": integer(at_least=1),
    "condition_dim": integer(at_least=1),
    "hidden_size": integer(at_least=1),
    "num_layers": integer(at_least=1),
    "num_attention_heads": integer(at_least=1),
    "mlp_ratio": number(above=0),
    "text_dim": integer(at_least=1),
    "max_text_length": integer(at_least=1),
    "text_pool_head_dim": integer(at_least=1),
    "scales": sequence(integer(at_least=1)),
    "max_motion_length": integer(at_least=1),
    "unit_length": integer(at_least=1),
    "dropout": probability(),
    "attention_dropout": probability(),
    "drop_path_rate": optional(probability()),
    "norm_eps": number(above=0),
    "rope_theta": number(above=0),
    "cond_drop_prob": probability(),
    "bert_replace_prob": probability(),
    "bert_mask_prob": probability(),
    "mask_augment_range": sequence(probability(), length=2),
    "perturb_rate": sequence(probability(), length=2),
    "guidance_scale": number(),
    "guidance_decay": number(),
    "sample_steps_per_scale": sequence(integer(at_least=1)),
    "text_encoder_name": string(),
}


class MoScaleConfig(PreTrainedConfig):
    r"""Configuration of [`MoScaleForTextToMotion`]. Defaults are the paper's HumanML3D model.

    Args:
        num_codes: tokenizer codebook size V (the output vocabulary).
        code_dim: tokenizer code width C (token embeddings and f_hat features).
        condition_dim: width A of the text condition, start tokens and input projections (`latent_dim` in the
            authors' YAML). Must be a multiple of `text_pool_head_dim`.
        hidden_size: width E of the transformer blocks (`head_latent_dim` in the authors' YAML).
        num_layers: number of blocks.
        num_attention_heads: heads of the self- and cross-attention of the blocks.
        mlp_ratio: FFN hidden size relative to `hidden_size`.
        text_dim: width X of the text encoder's hidden states (768 for google/t5-v1_1-base).
        max_text_length: text tokens per caption; also the number of learned unconditional rows.
        text_pool_head_dim: head size of the start-token text pool (the authors use 128).
        scales: tokenizer scales, coarse to fine.
        max_motion_length: frames of a full clip.
        unit_length: frames per latent step of the tokenizer.
        dropout: dropout after attention projections and in the FFN (training only).
        attention_dropout: dropout on self-attention weights (training only).
        drop_path_rate: stochastic depth of the last block (grows linearly from 0 over the blocks); None uses the
            authors' 0.1 * num_layers / 24.
        norm_eps: epsilon of every LayerNorm and of the text RMSNorm.
        rope_theta: base of the rotary frequencies.
        cond_drop_prob: probability of replacing a caption by the unconditional rows in training (CFG).
        bert_replace_prob: fraction of the masked targets whose input becomes a random code.
        bert_mask_prob: fraction of the masked targets whose input becomes [MASK] (the rest keep their code).
        mask_augment_range: per batch a rate r ~ U(range) of the remaining non-[MASK] tokens becomes random codes.
        perturb_rate: range of the tokenizer's hierarchical-refinement corruption used in training (passed to
            `MoScaleVQModel.encode`).
        guidance_scale: classifier-free guidance at scale 1; scale k uses guidance_scale - guidance_decay*(k-1).
        guidance_decay: per-scale decrease of the guidance scale.
        sample_steps_per_scale: refinement steps per scale used by the authors' sampler.
        text_encoder_name: the text encoder the model was trained with.
    """

    model_type = "moscale"

    def __init__(
        self,
        num_codes: int = 512,
        code_dim: int = 512,
        condition_dim: int = 384,
        hidden_size: int = 768,
        num_layers: int = 16,
        num_attention_heads: int = 8,
        mlp_ratio: float = 4.0,
        text_dim: int = 768,
        max_text_length: int = 20,
        text_pool_head_dim: int = 128,
        scales: Sequence[int] = (8, 4, 2, 1),
        max_motion_length: int = 196,
        unit_length: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        drop_path_rate: float | None = None,
        norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        cond_drop_prob: float = 0.1,
        bert_replace_prob: float = 0.1,
        bert_mask_prob: float = 0.8,
        mask_augment_range: Sequence[float] = (0.0, 0.1),
        perturb_rate: Sequence[float] = (0.0, 0.6),
        guidance_scale: float = 5.0,
        guidance_decay: float = 0.25,
        sample_steps_per_scale: Sequence[int] = (1, 2, 5, 10),
        text_encoder_name: str = "google/t5-v1_1-base",
        **kwargs,
    ):
        check_fields(type(self).__name__, locals(), _CONFIG_RULES)
        scales = tuple(int(s) for s in scales)
        if not scales or scales[-1] != 1 or any(a <= b for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be strictly decreasing positive integers ending in 1, got {scales}")
        if condition_dim % text_pool_head_dim:
            raise ValueError(
                f"condition_dim ({condition_dim}) must be a multiple of text_pool_head_dim ({text_pool_head_dim})"
            )
        if hidden_size % num_attention_heads or (hidden_size // num_attention_heads) % 4:
            raise ValueError(
                f"hidden_size ({hidden_size}) must split into {num_attention_heads} heads whose size is a multiple "
                "of 4 (the rotary embedding pairs dimensions and shares each frequency between two pairs)"
            )
        if max_motion_length % unit_length or (max_motion_length // unit_length) < scales[0]:
            raise ValueError(
                f"max_motion_length ({max_motion_length}) must be a multiple of unit_length ({unit_length}) with at "
                f"least {scales[0]} latent steps"
            )
        if len(sample_steps_per_scale) != len(scales):
            raise ValueError(f"sample_steps_per_scale needs one entry per scale ({len(scales)})")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.condition_dim = condition_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.mlp_ratio = mlp_ratio
        self.text_dim = text_dim
        self.max_text_length = max_text_length
        self.text_pool_head_dim = text_pool_head_dim
        self.scales = scales
        self.max_motion_length = max_motion_length
        self.unit_length = unit_length
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.drop_path_rate = 0.1 * num_layers / 24 if drop_path_rate is None else drop_path_rate
        self.norm_eps = norm_eps
        self.rope_theta = rope_theta
        self.cond_drop_prob = cond_drop_prob
        self.bert_replace_prob = bert_replace_prob
        self.bert_mask_prob = bert_mask_prob
        self.mask_augment_range = tuple(float(r) for r in mask_augment_range)
        self.perturb_rate = tuple(float(r) for r in perturb_rate)
        self.guidance_scale = guidance_scale
        self.guidance_decay = guidance_decay
        self.sample_steps_per_scale = tuple(int(s) for s in sample_steps_per_scale)
        self.text_encoder_name = text_encoder_name
        super().__init__(**kwargs)

    @property
    def latent_length(self) -> int:
        """Latent steps of a full clip (49 for 196 frames)."""
        return self.max_motion_length // self.unit_length

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """Tokens per scale, coarse to fine (6, 12, 24, 49)."""
        return tuple(self.latent_length // s for s in self.scales)

    @property
    def sequence_length(self) -> int:
        """Tokens of the whole multi-scale sequence (91)."""
        return sum(self.patch_sizes)

    def guidance_scale_at(self, scale_index: int, guidance_scale: float | None = None) -> float:
        """The authors' per-scale CFG weight tau: logits = (1 + tau) * cond - tau * uncond."""
        base = self.guidance_scale if guidance_scale is None else guidance_scale
        return base - self.guidance_decay * (scale_index - 1)


# --------------------------------------------------------------------------------------------------- outputs / cache
@dataclass
class MoScaleTextConditioning(ModelOutput):
    """The text-derived tensors, computed once per caption batch by [`MoScaleForTextToMotion.encode_text`].

    Besides the text features themselves it holds what every block derives from them alone, so that a sampler,
    which runs the blocks once per refinement step, computes them once per caption rather than once per step.

    Args:
        start_tokens: (B, Q, A) inputs of the first scale (a multi-query pool over the text).
        condition: (B, 1, A) AdaLN condition, the max over the start tokens.
        memory: (B, S, A) cross-attention memory (text after RMSNorm and a 2-layer MLP).
        memory_mask: (B, S) True at the caption's tokens.
        normed_text: (B, S, X) text (or unconditional rows) after RMSNorm.
        block_modulations: per block, its six (B, 1, E) AdaLN vectors (`MoScaleBlock.modulation(condition)`).
        cross_key_values: per block, its cross-attention keys and values of the memory, (B, H, S, d) each.
        head_modulation: the (B, 1, E) scale and shift of the AdaLN before the head (`head_modulation(condition)`).
    """

    start_tokens: torch.FloatTensor | None = None
    condition: torch.FloatTensor | None = None
    memory: torch.FloatTensor | None = None
    memory_mask: torch.BoolTensor | None = None
    normed_text: torch.FloatTensor | None = None
    block_modulations: tuple[tuple[torch.FloatTensor, ...], ...] | None = None
    cross_key_values: tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...] | None = None
    head_modulation: tuple[torch.FloatTensor, torch.FloatTensor] | None = None


class MoScaleKVCache:
    """Self-attention keys and values of the first `length` sequence positions, one (key, value) pair per block.

    Keys are already rotated by RoPE; `length` is always a scale boundary. Because attention is block-causal, the
    keys and values of coarser scales never depend on finer ones: compute them once (text start tokens + every
    finished scale) and reuse them for all refinement steps of the current scale.

    The tensors are preallocated for the whole sequence, (B, H, L, d) per block, so that a forward writes the keys
    and values of its new positions in place instead of concatenating them to the prefix. A cache only promises the
    positions below its `length`: a forward run against it writes positions `length` onwards (with `use_cache=True`
    it returns a longer cache over the same tensors), and `crop` gives a shorter cache over the same tensors. So the
    same prefix cache serves every step of a scale, but a longer cache made earlier from the same tensors does not
    survive a forward run against a shorter one.
    """

    def __init__(self, key_values: Sequence[tuple[torch.Tensor, torch.Tensor]], length: int):
        self.key_values = tuple(key_values)
        self.length = length

    @classmethod
    def allocate(
        cls, num_layers: int, batch: int, heads: int, positions: int, head_dim: int, device, dtype
    ) -> MoScaleKVCache:
        """An empty cache with room for `positions` positions."""
        shape = (batch, heads, positions, head_dim)
        empty = [
            (torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))
            for _ in range(num_layers)
        ]
        return cls(empty, 0)

    @property
    def batch_size(self) -> int:
        return self.key_values[0][0].shape[0]

    def crop(self, length: int) -> MoScaleKVCache:
        """The cache of the first `length` positions (e.g. drop the current scale after its first full step)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of {self.length} positions to {length}")
        return MoScaleKVCache(self.key_values, length)

    def __len__(self) -> int:
        return len(self.key_values)

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, length, d) of block `layer`."""
        keys, values = self.key_values[layer]
        return keys[:, :, : self.length], values[:, :, : self.length]


@dataclass
class MoScaleOutput(ModelOutput):
    """Output of [`MoScaleForTextToMotion.forward`].

    Args:
        loss: mean cross-entropy over positions whose label is >= 0 (only when `labels` is given).
        logits: (B, l, V) logits of the positions that were fed (l = input_ids.shape[1]), or of the last
            `logits_to_keep` of them.
        cache: a [`MoScaleKVCache`] of every position so far (only with `use_cache=True`).
        hidden_states: block input and each block's output, (B, l, E) each (with `output_hidden_states=True`).
        text_conditioning: the [`MoScaleTextConditioning`] used.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: MoScaleKVCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_conditioning: MoScaleTextConditioning | None = None


# ---------------------------------------------------------------------------------------------------- position math
def level_of_position(patch_sizes: Sequence[int], device=None) -> torch.LongTensor:
    """(L,) scale index of every position of the concatenated sequence."""
    return torch.cat([torch.full((size,), k, dtype=torch.long, device=device) for k, size in enumerate(patch_sizes)])


def scale_normalized_rope_angles(
    patch_sizes: Sequence[int], head_dim: int, theta: float = 10000.0, device=None
) -> torch.Tensor:
    """(L, head_dim // 2) rotation angle of every (position, dimension pair).

    Token j of a scale with n tokens sits at canonical position round(j * n_full / n) (half-to-even, float32) of
    the finest scale, so tokens covering the same time share a position across scales. Each frequency serves two
    consecutive pairs, as in the authors' table.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, 2, dtype=torch.float32, device=device) / half))
    full = patch_sizes[-1]
    canonical = torch.arange(full, dtype=torch.float32, device=device)
    table_Fh = torch.repeat_interleave(torch.outer(canonical, inv_freq), 2, dim=-1)
    positions = [
        torch.round(torch.arange(size, dtype=torch.float32, device=device) * (full / float(size)))
        .clamp_(0, full - 1)
        .long()
        for size in patch_sizes
    ]
    return table_Fh[torch.cat(positions)]


def rope_tables(angles_Lh: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines (L, head_dim) of the angles (L, head_dim // 2), each repeated for the two dimensions of its
    pair: the tables `apply_interleaved_rope` takes."""
    angles_Ld = angles_Lh.repeat_interleave(2, dim=-1)
    return angles_Ld.cos().to(dtype), angles_Ld.sin().to(dtype)


def apply_interleaved_rope(x_Ld: torch.Tensor, cos_Ld: torch.Tensor, sin_Ld: torch.Tensor) -> torch.Tensor:
    """Rotate each dimension pair (e, o) = (x[2p], x[2p+1]) to (e cos - o sin, e sin + o cos).

    `cos_Ld` and `sin_Ld` (from `rope_tables`) hold each pair's angle in both its dimensions and broadcast against
    x (..., d). The rotation is computed as x * cos + i (x * sin), pairs read as complex numbers: multiplying by i
    only moves and negates values, so every output is the same product and sum as the pairwise formula, rounded
    the same (bit-identical), in a few contiguous passes instead of eight strided ones (3x faster at the sampler's
    sizes on CPU). bfloat16 and float16 have no complex type there and take the pairwise formula.
    """
    if x_Ld.dtype not in (torch.float32, torch.float64):
        even, odd = x_Ld[..., 0::2], x_Ld[..., 1::2]
        cos_Lh, sin_Lh = cos_Ld[..., 0::2], sin_Ld[..., 0::2]
        return torch.stack([even * cos_Lh - odd * sin_Lh, even * sin_Lh + odd * cos_Lh], dim=-1).flatten(-2)
    sin_pairs = torch.view_as_complex((x_Ld * sin_Ld).unflatten(-1, (-1, 2)))
    return x_Ld * cos_Ld + torch.view_as_real(sin_pairs * 1j).flatten(-2)


def cosine_mask_ratio(t: torch.Tensor) -> torch.Tensor:
    """Fraction of tokens masked at time t in [0, 1]: cos(pi / 2 * t)."""
    return torch.cos(t * math.pi * 0.5)


# ------------------------------------------------------------------------------------------------------- submodules
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_PACKED_WEIGHTS: dict[int, tuple[tuple, torch.Tensor]] = {}  # id(weight) -> (weight state, packed copy)


class PackedLinear(nn.Linear):
    """`nn.Linear` that multiplies with a copy of its weight packed once for oneDNN in CPU inference.

    Without autograd, on CPU, in float32 or bfloat16, oneDNN's linear on a weight already reordered into its blocked
    layout runs faster than `F.linear` at the sampler's row counts, which reorders or re-reads the plain layout on every
    call (docs/performance.md). The results differ from `F.linear` by float rounding only. The packed copy is made on
    first use, made again when the weight changes (another tensor, an in-place update, another dtype) and dropped
    with the weight; training, other devices and `torch.compile` use `F.linear`.
    """

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, gelu_tanh: bool = False) -> torch.Tensor:
        """`bias`, when given, replaces the module's own (the self-attention assembles its q/k/v bias). `gelu_tanh`
        applies `F.gelu(approximate="tanh")` to the output; oneDNN does it inside the product (no second pass over
        the output), which differs from the separate call by float rounding only."""
        bias = self.bias if bias is None else bias
        weight = self.weight
        if (
            _ONEDNN_LINEAR
            and x.device.type == "cpu"
            and x.dtype == weight.dtype
            and weight.dtype in (torch.float32, torch.bfloat16)
            and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
            and not torch.compiler.is_compiling()
        ):
            if gelu_tanh:
                return torch.ops.mkldnn._linear_pointwise(x, _packed_weight(weight), bias, "gelu", [], "tanh")
            return torch.ops.mkldnn._linear_pointwise(x, _packed_weight(weight), bias, "none", [], "")
        out = F.linear(x, weight, bias)
        return F.gelu(out, approximate="tanh") if gelu_tanh else out


def _packed_weight(weight: torch.Tensor) -> torch.Tensor:
    state = (weight.data_ptr(), weight._version, weight.dtype)
    entry = _PACKED_WEIGHTS.get(id(weight))
    if entry is None:
        weakref.finalize(weight, _PACKED_WEIGHTS.pop, id(weight), None)
    if entry is None or entry[0] != state:
        entry = (state, torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
        _PACKED_WEIGHTS[id(weight)] = entry
    return entry[1]


class TextCrossAttention(nn.Module):
    """Multi-head attention from queries to a padded text memory; keys carry no bias, values a learned one.

    The memory's keys and values depend on the text alone: `project_memory` computes them once per caption batch
    and `forward` takes them, so that repeated calls on the same text (refinement steps) do not redo them.
    """

    def __init__(self, query_dim: int, memory_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = PackedLinear(query_dim, query_dim)
        self.kv_proj = nn.Linear(memory_dim, 2 * query_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(query_dim))
        self.out_proj = PackedLinear(query_dim, query_dim)
        self.dropout = nn.Dropout(dropout)

    def project_memory(self, memory_BSA: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, S, A) -> keys and values (B, H, S, d)."""
        batch, length, _ = memory_BSA.shape
        bias = torch.cat([torch.zeros_like(self.v_bias), self.v_bias])
        kv_BS2E = F.linear(memory_BSA, self.kv_proj.weight, bias)
        kv_BS2Hd = kv_BS2E.view(batch, length, 2, self.num_heads, -1)
        k_BHSd, v_BHSd = kv_BS2Hd.permute(2, 0, 3, 1, 4).unbind(0)
        return k_BHSd, v_BHSd

    def forward(
        self, query_BLE: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], memory_mask_BS: torch.Tensor
    ) -> torch.Tensor:
        batch, length, width = query_BLE.shape
        q_BHLd = self.q_proj(query_BLE).view(batch, length, self.num_heads, -1).transpose(1, 2)
        k_BHSd, v_BHSd = memory_kv
        out_BHLd = F.scaled_dot_product_attention(q_BHLd, k_BHSd, v_BHSd, attn_mask=memory_mask_BS[:, None, None, :])
        return self.dropout(self.out_proj(out_BHLd.transpose(1, 2).reshape(batch, length, width)))


class MultiQueryTextPool(nn.Module):
    """`num_queries` learned queries attend over the caption tokens: the start tokens of the first scale."""

    def __init__(self, config: MoScaleConfig):
        super().__init__()
        num_queries = config.patch_sizes[0]
        self.query_tokens = nn.Parameter(torch.zeros(num_queries, config.condition_dim))
        self.attention = TextCrossAttention(
            config.condition_dim, config.text_dim, config.condition_dim // config.text_pool_head_dim, dropout=0.0
        )

    def forward(self, text_BSX: torch.Tensor, text_mask_BS: torch.Tensor) -> torch.Tensor:
        queries_BQA = self.query_tokens[None].expand(text_BSX.shape[0], -1, -1)
        return self.attention(queries_BQA, self.attention.project_memory(text_BSX), text_mask_BS)


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability p (training only)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class BlockCausalSelfAttention(nn.Module):
    """Self-attention with q/v biases (no key bias), interleaved RoPE and the VAR scale 0.25 / sqrt(d)."""

    def __init__(self, config: MoScaleConfig):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = width // self.num_heads
        self.scale = 0.25 / math.sqrt(self.head_dim)
        self.qkv_proj = PackedLinear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.out_proj = PackedLinear(width, width)
        self.attention_dropout = config.attention_dropout
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x_BlE: torch.Tensor,
        rope_cos_sin: tuple[torch.Tensor, torch.Tensor],
        attend_mask_lL: torch.Tensor | None,
        key_value_buffers: tuple[torch.Tensor, torch.Tensor] | None,
        start: int,
    ) -> torch.Tensor:
        """x (B, l, E) of the positions start .. start + l - 1 -> output (B, l, E).

        Without `key_value_buffers` the positions attend to each other only. With them, their keys and values are
        written into the buffers (B, H, L, d) at those positions, and they attend to every buffered position before
        them too. `rope_cos_sin` holds the (l, d) cosines and sines of the positions (`rope_tables`).
        `attend_mask_lL` (True = may attend) is None when every query sees every key.
        """
        batch, length, width = x_BlE.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv_Bl3Hd = self.qkv_proj(x_BlE, bias).view(batch, length, 3, self.num_heads, self.head_dim)
        # Queries and keys are rotated in one pass, before the heads move in front of the positions.
        cos_l11d, sin_l11d = (table[:, None, None] for table in rope_cos_sin)
        qk_Bl2Hd = apply_interleaved_rope(qkv_Bl3Hd[:, :, :2], cos_l11d, sin_l11d)
        q_BHld, k_BHld = qk_Bl2Hd.transpose(1, 3).unbind(2)
        v_BHld = qkv_Bl3Hd[:, :, 2].transpose(1, 2)
        if key_value_buffers is not None:
            keys, values = key_value_buffers
            stop = start + length
            keys[:, :, start:stop].copy_(k_BHld)
            values[:, :, start:stop].copy_(v_BHld)
            k_BHld, v_BHld = keys[:, :, :stop], values[:, :, :stop]
        out_BHld = F.scaled_dot_product_attention(
            q_BHld,
            k_BHld,
            v_BHld,
            attn_mask=attend_mask_lL,
            dropout_p=self.attention_dropout if self.training else 0.0,
            scale=self.scale,
        )
        return self.dropout(self.out_proj(out_BHld.transpose(1, 2).reshape(batch, length, width)))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = PackedLinear(width, hidden)
        self.fc2 = PackedLinear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.fc1(x, gelu_tanh=True)))


class MoScaleBlock(nn.Module):
    """AdaLN block: modulated self-attention (gated), plain cross-attention to the text, modulated FFN (gated)."""

    def __init__(self, config: MoScaleConfig, drop_path: float):
        super().__init__()
        width = config.hidden_size
        self.self_attn = BlockCausalSelfAttention(config)
        self.cross_attn_norm = nn.LayerNorm(width, eps=config.norm_eps)
        self.cross_attn = TextCrossAttention(width, config.condition_dim, config.num_attention_heads, config.dropout)
        self.ffn = FeedForward(width, round(width * config.mlp_ratio), config.dropout)
        self.norm = nn.LayerNorm(width, eps=config.norm_eps, elementwise_affine=False)
        # Output chunks, in order: gamma1, gamma2, scale1, scale2, shift1, shift2.
        self.adaln_modulation = nn.Linear(config.condition_dim, 6 * width)
        self.drop_path = DropPath(drop_path)

    def modulation(self, condition_B1A: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The six (B, 1, E) AdaLN vectors gamma1, gamma2, scale1, scale2, shift1, shift2."""
        return self.adaln_modulation(F.silu(condition_B1A)).chunk(6, dim=-1)

    def forward(
        self,
        x_BlE: torch.Tensor,
        modulation: tuple[torch.Tensor, ...],
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask_BS: torch.Tensor,
        rope_cos_sin: tuple[torch.Tensor, torch.Tensor],
        attend_mask_lL: torch.Tensor | None,
        key_value_buffers: tuple[torch.Tensor, torch.Tensor] | None,
        start: int,
    ) -> torch.Tensor:
        """`modulation` and `memory_kv` are this block's entries of the text conditioning; the rest as in
        `BlockCausalSelfAttention.forward`."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation
        # The modulation and the gates work in place on tensors made here, sparing an allocation and a pass over
        # fresh memory each (autograd keeps what it needs); the block's input, which callers may hold, is not
        # touched.
        normed_BlE = self.norm(x_BlE).mul_(1 + scale1).add_(shift1)
        attn_BlE = self.self_attn(normed_BlE, rope_cos_sin, attend_mask_lL, key_value_buffers, start)
        x_BlE = x_BlE + self.drop_path(attn_BlE.mul_(gamma1))
        x_BlE = x_BlE + self.cross_attn(self.cross_attn_norm(x_BlE), memory_kv, memory_mask_BS)
        normed_BlE = self.norm(x_BlE).mul_(1 + scale2).add_(shift2)
        x_BlE = x_BlE + self.drop_path(self.ffn(normed_BlE).mul_(gamma2))
        return x_BlE


# ------------------------------------------------------------------------------------------------------------ model
class MoScalePreTrainedModel(ExplainedLoadingMixin, PreTrainedModel):
    config_class = MoScaleConfig
    base_model_prefix = "moscale"
    main_input_name = "input_ids"
    _no_split_modules = ["MoScaleBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The authors' initialisation, so that training from scratch starts from the same distribution."""
        config = self.config
        std = math.sqrt(1 / config.condition_dim / 3)
        depth_gain = 1 / math.sqrt(2 * config.num_layers)
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, TextCrossAttention):
            init.zeros_(module.v_bias)
        elif isinstance(module, MultiQueryTextPool):
            init.trunc_normal_(module.query_tokens, std=std)
        elif isinstance(module, BlockCausalSelfAttention):
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, MoScaleForTextToMotion):
            # Block-level scalings live here: transformers skips custom modules without direct parameters.
            for block in module.blocks:
                # Residual projections shrink with depth; AdaLN starts near identity. The gamma slice uses the
                # condition width, as the authors' code does.
                self._init_linear(block.self_attn.out_proj, std, depth_gain)
                self._init_linear(block.ffn.fc2, std, depth_gain)
                rows = torch.full((block.adaln_modulation.out_features, 1), 0.5)
                rows[: 2 * config.condition_dim] = 1e-5
                self._init_linear(block.adaln_modulation, std, rows)
            self._init_linear(module.head, std, 0.02)
            self._init_linear(module.head_adaln_modulation, std, 0.5)
            init.trunc_normal_(module.token_embedding, std=std)
            code_std = math.sqrt(1 / config.code_dim / 3)
            init.trunc_normal_(module.mask_token_embedding, std=code_std)
            init.trunc_normal_(module.pad_token_embedding, std=code_std)
            init.trunc_normal_(module.start_position_embedding, std=math.sqrt(1 / config.hidden_size / 3))
            generator = torch.Generator().manual_seed(0)
            uncond = torch.nn.init.trunc_normal_(
                torch.empty(module.uncond_text_embedding.shape), std=1.2, generator=generator
            )
            init.copy_(module.uncond_text_embedding, uncond / math.sqrt(config.text_dim))

    @staticmethod
    def _init_linear(linear: nn.Linear, std: float, gain: float | torch.Tensor = 1.0) -> None:
        weight = torch.nn.init.trunc_normal_(torch.empty(linear.weight.shape), std=std) * gain
        init.copy_(linear.weight, weight.to(linear.weight.dtype))
        if linear.bias is not None:
            init.zeros_(linear.bias)


class MoScaleForTextToMotion(MoScalePreTrainedModel):
    """The MoScale next-scale transformer with its text conditioning and prediction head.

    Typical use:

    * training: `batch = model.prepare_training_inputs(vq_out.codes, vq_out.f_hat_per_scale)` then
      `model(**batch, text_hidden_states=..., text_attention_mask=...).loss`;
    * teacher forcing / scoring: `model(input_ids (B, 91), prev_scale_features (B, 85, C), text_hidden_states,
      text_attention_mask, labels=...)`;
    * sampling scale by scale with the KV cache: see `forward`.
    """

    def __init__(self, config: MoScaleConfig):
        super().__init__(config)
        self.patch_sizes = config.patch_sizes
        self.first_l = self.patch_sizes[0]
        self.token_embedding = nn.Parameter(torch.zeros(config.num_codes, config.code_dim))
        self.mask_token_embedding = nn.Parameter(torch.zeros(1, config.code_dim))
        self.pad_token_embedding = nn.Parameter(torch.zeros(1, config.code_dim))
        self.uncond_text_embedding = nn.Parameter(torch.zeros(config.max_text_length, config.text_dim))
        self.text_norm = RMSNorm(config.text_dim, config.norm_eps)
        self.text_pool = MultiQueryTextPool(config)
        self.text_proj = nn.Sequential(
            nn.Linear(config.text_dim, config.condition_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.condition_dim, config.condition_dim),
        )
        self.prev_scale_proj = PackedLinear(config.code_dim, config.condition_dim)
        self.token_proj = PackedLinear(config.code_dim, config.condition_dim)
        self.input_proj = PackedLinear(2 * config.condition_dim, config.hidden_size)
        self.start_position_embedding = nn.Parameter(torch.zeros(1, self.first_l, config.hidden_size))
        self.level_embedding = nn.Embedding(len(config.scales), config.hidden_size)
        # Plain Python: from_pretrained builds the model on the meta device, where tensors hold no values.
        steps = max(config.num_layers - 1, 1)
        drop_paths = [config.drop_path_rate * i / steps for i in range(config.num_layers)]
        self.blocks = nn.ModuleList([MoScaleBlock(config, p) for p in drop_paths])
        self.head_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, elementwise_affine=False)
        self.head_adaln_modulation = nn.Linear(config.condition_dim, 2 * config.hidden_size)
        self.head = PackedLinear(config.hidden_size, config.num_codes)
        # Level of every position and the RoPE table, per (device, dtype): built on first use, as from_pretrained
        # builds the model on the meta device.
        self._position_tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.post_init()

    # ------------------------------------------------------------------------------------------------------ text
    def encode_text(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        drop_text: torch.Tensor | None = None,
    ) -> MoScaleTextConditioning:
        """Text encoder states (B, S, X) + left-aligned mask (B, S) -> start tokens, AdaLN condition, memory.

        `drop_text` (B,) bool replaces a caption's rows by the learned unconditional rows `uncond_text_embedding[:n]`,
        keeping the caption's own token count n (the unconditional branch of classifier-free guidance). For CFG
        sampling pass the batch twice, `drop_text = [False] * B + [True] * B`.
        """
        batch, length, _ = self._check_text(text_hidden_states, text_attention_mask)
        mask_BS = text_attention_mask.bool()
        text_BSX = text_hidden_states.to(self.dtype)
        if drop_text is not None:
            drop_text = torch.as_tensor(drop_text, device=text_BSX.device).bool()
            if drop_text.shape != (batch,):
                raise ValueError(f"drop_text must have shape ({batch},), got {tuple(drop_text.shape)}")
            uncond_1SX = self.uncond_text_embedding[None, :length].to(text_BSX.dtype)
            text_BSX = torch.where(drop_text[:, None, None], uncond_1SX, text_BSX)
        normed_BSX = self.text_norm(text_BSX)
        start_BQA = self.text_pool(normed_BSX, mask_BS)
        condition_B1A = start_BQA.max(dim=1, keepdim=True).values
        memory_BSA = self.text_proj(normed_BSX)
        return MoScaleTextConditioning(
            start_tokens=start_BQA,
            condition=condition_B1A,
            memory=memory_BSA,
            memory_mask=mask_BS,
            normed_text=normed_BSX,
            block_modulations=tuple(block.modulation(condition_B1A) for block in self.blocks),
            head_modulation=self.head_modulation(condition_B1A),
            cross_key_values=tuple(block.cross_attn.project_memory(memory_BSA) for block in self.blocks),
        )

    def _check_text(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[int, int, int]:
        if states.ndim != 3 or states.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text_hidden_states must be (batch, tokens, {self.config.text_dim}), got {tuple(states.shape)}"
            )
        batch, length, width = states.shape
        if length > self.config.max_text_length:
            raise ValueError(
                f"text has {length} tokens but the model takes at most max_text_length={self.config.max_text_length}; "
                "tokenize with max_length=max_text_length and truncation=True"
            )
        if mask is None or tuple(mask.shape) != (batch, length):
            raise ValueError(f"text_attention_mask must have shape ({batch}, {length})")
        lengths = mask.long().sum(-1)
        if bool((lengths < 1).any()):
            raise ValueError("every caption needs at least one token in text_attention_mask")
        left_aligned = torch.arange(length, device=mask.device)[None] < lengths[:, None]
        if not torch.equal(left_aligned, mask.bool()):
            raise ValueError("text_attention_mask must be left-aligned (ones first, then zeros), as T5 tokenizers pad")
        return batch, length, width

    # ---------------------------------------------------------------------------------------------------- tokens
    def embed_tokens(self, ids_Bl: torch.Tensor, check_ids: bool = True) -> torch.Tensor:
        """Token ids (codes, MASK_ID, PAD_ID) -> token inputs (B, l, A) after the token projection.

        `check_ids=False` skips the range check, which reads a value back to the host (a device sync); samplers
        that build the ids themselves pass it.
        """
        if check_ids and (bool((ids_Bl < MASK_ID).any()) or bool((ids_Bl >= self.config.num_codes).any())):
            raise ValueError(
                f"input_ids must be codes in [0, {self.config.num_codes - 1}], MASK_ID ({MASK_ID}) or PAD_ID ({PAD_ID})"
            )
        emb_BlC = F.embedding(ids_Bl.clamp(min=0), self.token_embedding)
        emb_BlC = torch.where((ids_Bl == MASK_ID)[..., None], self.mask_token_embedding, emb_BlC)
        emb_BlC = torch.where((ids_Bl == PAD_ID)[..., None], self.pad_token_embedding, emb_BlC)
        return self.token_proj(emb_BlC)

    def head_modulation(self, condition_B1A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, 1, E) scale and shift of the AdaLN before the head."""
        return self.head_adaln_modulation(F.silu(condition_B1A)).chunk(2, dim=-1)

    def final_norm(self, hidden_BlE: torch.Tensor, modulation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """AdaLN before the head: LN(h) * (1 + scale) + shift, with `modulation` = (scale, shift)."""
        scale, shift = modulation
        return self.head_norm(hidden_BlE) * (1 + scale) + shift

    def scale_boundaries(self) -> tuple[int, ...]:
        """Sequence offsets where scales start, plus the total length: (0, 6, 18, 42, 91) for the paper's model."""
        offsets = [0]
        for size in self.patch_sizes:
            offsets.append(offsets[-1] + size)
        return tuple(offsets)

    def position_tables(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L,) scale index of every position, and the cosines and sines (L, head_dim) of its RoPE angles
        (`rope_tables`)."""
        key = (torch.device(device), dtype)
        if key not in self._position_tables:
            head_dim = self.config.hidden_size // self.config.num_attention_heads
            angles_Lh = scale_normalized_rope_angles(self.patch_sizes, head_dim, self.config.rope_theta, device)
            level_L = level_of_position(self.patch_sizes, device)
            self._position_tables[key] = (level_L, *rope_tables(angles_Lh, dtype))
        return self._position_tables[key]

    # --------------------------------------------------------------------------------------------------- forward
    def run_blocks(
        self,
        hidden_BlE: torch.Tensor,
        text: MoScaleTextConditioning,
        rope_cos_sin: tuple[torch.Tensor, torch.Tensor],
        attend_mask_lL: torch.Tensor | None,
        cache: MoScaleKVCache | None,
        new_cache_positions: int | None = None,
        hidden_states: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, MoScaleKVCache | None]:
        """Every block, in order, over the positions P .. P + l - 1 (P = `cache.length`, 0 without a cache):
        `hidden_BlE` (B, l, E) -> (B, l, E), and the cache of positions 0 .. P + l - 1 (None without one).

        `text` conditions every block; `rope_cos_sin` and `attend_mask_lL` cover the l positions as in
        `BlockCausalSelfAttention.forward`. Without `cache`, a cache with room for `new_cache_positions` positions
        is allocated and filled when that is given. Each block's output is appended to `hidden_states` if it is a
        list.
        """
        past_length = cache.length if cache is not None else 0
        if cache is None and new_cache_positions is not None:
            heads = self.config.num_attention_heads
            cache = MoScaleKVCache.allocate(
                len(self.blocks), hidden_BlE.shape[0], heads, new_cache_positions, self.config.hidden_size // heads,
                hidden_BlE.device, hidden_BlE.dtype,
            )  # fmt: skip
        for layer, block in enumerate(self.blocks):
            hidden_BlE = block(
                hidden_BlE,
                text.block_modulations[layer],
                text.cross_key_values[layer],
                text.memory_mask,
                rope_cos_sin,
                attend_mask_lL,
                cache.key_values[layer] if cache is not None else None,
                past_length,
            )
            if hidden_states is not None:
                hidden_states.append(hidden_BlE)
        if cache is None:
            return hidden_BlE, None
        return hidden_BlE, MoScaleKVCache(cache.key_values, past_length + hidden_BlE.shape[1])

    def forward(
        self,
        input_ids: torch.LongTensor,
        prev_scale_features: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
        text_conditioning: MoScaleTextConditioning | None = None,
        labels: torch.LongTensor | None = None,
        cache: MoScaleKVCache | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
        check_ids: bool = True,
        logits_to_keep: int = 0,
    ):
        """Logits for the sequence positions P .. P + l - 1, where P is the cache length (0 without a cache).

        Tokens of one scale attend to each other (and to all coarser scales), so P and P + l must be scale
        boundaries (`scale_boundaries()`): a forward always feeds whole scales.

        Args:
            input_ids: (B, l) ids of those positions: codes, MASK_ID (-2) or PAD_ID (-1).
            prev_scale_features: (B, n, C) continuous inputs of the new positions outside the first scale
                (n = number of new positions >= first_l): for scale k, the tokenizer's f_hat after scale k-1
                area-downsampled to scale k's length (`MoScaleVQModel.next_scale_input`). None when n == 0.
            text_hidden_states, text_attention_mask, drop_text: see `encode_text`; or pass `text_conditioning`
                computed once by `encode_text` (sampling loops should).
            labels: (B, l) targets; positions with a negative label (e.g. MASK_ID) are ignored.
            cache: [`MoScaleKVCache`] of positions 0 .. P-1.
            use_cache: return the cache of positions 0 .. P + l - 1.
            output_hidden_states: return the block input and every block output.
            check_ids: check that every id is a code, MASK_ID or PAD_ID (a host sync; samplers turn it off).
            logits_to_keep: when > 0, logits of the last `logits_to_keep` positions only (a sampler feeding the
                previous scale to extend the cache needs the current scale's logits alone).

        KV-cache recipe for scale k (positions [s_k, s_k + n_k)): run the first refinement step as
        `out = model(ids[:, s_{k-1}:s_k + n_k], ..., cache=cache_{<k-1}, use_cache=True)` with the final
        ids of scale k-1 and the current ids of scale k (or, without any cache, all positions from 0), then keep
        `cache = out.cache.crop(s_k)`; every later step runs only the current scale,
        `model(ids_k, prev_scale_features=feats_k, text_conditioning=cond, cache=cache)`. Because the
        mask is block-causal this gives the same logits as a full forward.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        batch, length = input_ids.shape
        start = cache.length if cache is not None else 0
        stop = start + length
        total = self.config.sequence_length
        if length == 0 or stop > total:
            raise ValueError(f"positions {start}..{stop - 1} fall outside the {total}-token sequence")
        boundaries = self.scale_boundaries()
        if start not in boundaries or stop not in boundaries:
            # Tokens of one scale attend to each other, so a forward (or a cache) must hold whole scales.
            raise ValueError(
                f"positions {start}..{stop - 1} must cover whole scales: start and end must be among {boundaries}"
            )
        if cache is not None and (len(cache) != len(self.blocks) or cache.batch_size != batch):
            raise ValueError("cache does not match this model's layers or the batch size")
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0")

        if text_conditioning is None:
            if text_hidden_states is None:
                raise ValueError("pass text_hidden_states and text_attention_mask, or text_conditioning")
            text_conditioning = self.encode_text(text_hidden_states, text_attention_mask, drop_text)
        elif text_hidden_states is not None or drop_text is not None:
            raise ValueError("pass either text_conditioning or text_hidden_states (+ drop_text), not both")
        elif text_conditioning.start_tokens.shape[0] != batch:
            raise ValueError("text_conditioning batch size does not match input_ids")
        text = text_conditioning

        continuous_BlA = self._continuous_inputs(text.start_tokens, prev_scale_features, start, stop, batch)
        hidden_BlE = self.input_proj(torch.cat([continuous_BlA, self.embed_tokens(input_ids, check_ids)], dim=-1))
        level_L, cos_Ld, sin_Ld = self.position_tables(hidden_BlE.device, hidden_BlE.dtype)
        # Learned positions for the start tokens only; zero rows elsewhere.
        start_pos_LE = F.pad(self.start_position_embedding[0], (0, 0, 0, self.config.sequence_length - self.first_l))
        hidden_BlE = hidden_BlE + start_pos_LE[start:stop][None]
        hidden_BlE = hidden_BlE + self.level_embedding(level_L[start:stop])[None]
        rope_cos_sin = (cos_Ld[start:stop], sin_Ld[start:stop])
        # Positions of one scale see every earlier position: a mask is only needed when several scales are fed.
        one_scale = boundaries.index(stop) == boundaries.index(start) + 1
        attend_mask_lL = None if one_scale else level_L[None, :stop] <= level_L[start:stop, None]

        hidden_states = [hidden_BlE] if output_hidden_states else None
        hidden_BlE, cache = self.run_blocks(
            hidden_BlE, text, rope_cos_sin, attend_mask_lL, cache, total if use_cache else None, hidden_states
        )

        kept_BlE = hidden_BlE[:, -logits_to_keep:] if logits_to_keep else hidden_BlE
        logits_BlV = self.head(self.final_norm(kept_BlE, text.head_modulation)).float()
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}")
            targets = labels.masked_fill(labels < 0, -100).reshape(-1)
            loss = F.cross_entropy(logits_BlV.reshape(-1, logits_BlV.shape[-1]), targets, ignore_index=-100)
        output = MoScaleOutput(
            loss=loss,
            logits=logits_BlV,
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            text_conditioning=text_conditioning,
        )
        return output if return_dict else output.to_tuple()

    def _continuous_inputs(
        self, start_BQA: torch.Tensor, prev_scale_features: torch.Tensor | None, start: int, stop: int, batch: int
    ) -> torch.Tensor:
        """Start tokens for new positions inside the first scale, projected f_hat features for the rest."""
        parts = []
        if start < self.first_l:
            parts.append(start_BQA[:, start : min(stop, self.first_l)])
        n_features = stop - max(start, self.first_l)
        expected = (batch, n_features, self.config.code_dim)
        if n_features > 0:
            if prev_scale_features is None or tuple(prev_scale_features.shape) != expected:
                got = None if prev_scale_features is None else tuple(prev_scale_features.shape)
                raise ValueError(
                    f"prev_scale_features must have shape {expected} for positions {max(start, self.first_l)}.."
                    f"{stop - 1}, got {got}"
                )
            parts.append(self.prev_scale_proj(prev_scale_features.to(start_BQA.dtype)))
        elif prev_scale_features is not None and prev_scale_features.shape[1] != 0:
            raise ValueError("prev_scale_features given, but every new position is a start token")
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------------------------------- training pieces
    def prev_scale_features_from_f_hat(self, f_hat_per_scale: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tokenizer f_hat after each scale ((B, C, T) each) -> (B, L - first_l, C) continuous inputs of scales 1..:
        scale k gets f_hat after scale k-1, area-downsampled to its length."""
        feats = [
            F.interpolate(f_hat_per_scale[k], size=self.patch_sizes[k + 1], mode="area")
            for k in range(len(self.patch_sizes) - 1)
        ]
        return torch.cat(feats, dim=2).transpose(1, 2)

    def corrupt_tokens(
        self,
        clean_ids: torch.LongTensor,
        generator: torch.Generator | None = None,
        augment_rate: float | None = None,
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """The authors' training corruption of clean ids (B, L) (PAD_ID beyond lengths) -> (input_ids, labels).

        Per sample a cosine-scheduled count round(L * cos(pi/2 * u)) (>= 1, L counting padded positions) of random
        positions is drawn, and the valid ones become targets. Of the targets, a `bert_replace_prob` share get a
        random code, a `bert_mask_prob` share get MASK_ID and the rest keep their code. Then a per-batch rate
        r ~ U(mask_augment_range) (or `augment_rate`) of all valid non-[MASK] positions get random codes too.
        Labels hold the clean id at targets and MASK_ID elsewhere.

        The torch draws happen in the authors' order with the same ops, so with the global generator seeded as theirs
        and `augment_rate` taken from their Python `random` stream the result is identical to their forward.
        """
        config = self.config
        device = clean_ids.device
        batch, length = clean_ids.shape

        def random_codes() -> torch.Tensor:
            return torch.randint(0, config.num_codes, (batch, length), generator=generator, device=device)

        def random_subset(mask: torch.Tensor, prob: float) -> torch.Tensor:
            return torch.bernoulli(mask.float(), p=prob, generator=generator).bool() & mask

        valid = clean_ids != PAD_ID
        times = torch.rand((batch,), generator=generator, device=device)
        n_targets = (length * cosine_mask_ratio(times)).round().clamp(min=1)
        rank = torch.rand((batch, length), generator=generator, device=device).argsort(dim=-1)
        target = (rank < n_targets[:, None]) & valid
        labels = torch.where(target, clean_ids, MASK_ID)

        replaced = random_subset(target, config.bert_replace_prob)
        input_ids = torch.where(replaced, random_codes(), clean_ids)
        masked = random_subset(target & ~replaced, config.bert_mask_prob / (1 - config.bert_replace_prob))
        input_ids = torch.where(masked, MASK_ID, input_ids)

        low, high = config.mask_augment_range
        if high > 0 or augment_rate is not None:
            codes = random_codes()
            if augment_rate is None:
                augment_rate = low + (high - low) * torch.rand((), generator=generator, device=device).item()
            draw = torch.rand((batch, length), generator=generator, device=device)
            augmented = (draw < augment_rate) & valid & ~masked
            input_ids = torch.where(augmented, codes, input_ids)
        return input_ids, labels

    def sample_text_dropout(
        self, batch: int, generator: torch.Generator | None = None, device=None
    ) -> torch.BoolTensor:
        """(B,) True for captions replaced by the unconditional rows (probability `cond_drop_prob`)."""
        return torch.rand((batch,), generator=generator, device=device) < self.config.cond_drop_prob

    def prepare_training_inputs(
        self,
        codes: Sequence[torch.LongTensor],
        f_hat_per_scale: Sequence[torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokenizer output (from `MoScaleVQModel.encode(..., perturb_rate=config.perturb_rate)`) -> forward kwargs.

        Returns `input_ids`, `labels`, `prev_scale_features` and `drop_text`; add `text_hidden_states` and
        `text_attention_mask` and call the model to get the training loss.
        """
        clean_ids = torch.cat(list(codes), dim=1)
        if clean_ids.shape[1] != self.config.sequence_length:
            raise ValueError(
                f"codes cover {clean_ids.shape[1]} tokens, the model expects {self.config.sequence_length}"
            )
        input_ids, labels = self.corrupt_tokens(clean_ids, generator)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "prev_scale_features": self.prev_scale_features_from_f_hat(f_hat_per_scale),
            "drop_text": self.sample_text_dropout(clean_ids.shape[0], generator, clean_ids.device),
        }


AutoConfig.register(MoScaleConfig.model_type, MoScaleConfig, exist_ok=True)
AutoModel.register(MoScaleConfig, MoScaleForTextToMotion, exist_ok=True)
