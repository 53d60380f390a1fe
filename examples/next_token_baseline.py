"""A next-token baseline for `examples/ablation.py`: the T2M-GPT recipe on MoScale's own tokenizer and blocks.

MoScale's central claim is that generating coarse-to-fine (next-scale) captures global structure such as repetition
counts and action order better than generating left to right (next-token), which can lean on short-horizon motion
continuity. This model isolates the generation order:

* tokens: one code per latent step (4 frames), the nearest codebook entry to the encoder latent
  (`finest_scale_codes`); decoding looks the codes up and runs the decoder. On a single-scale `MoScaleVQModel`
  (`scales=[1]`, trained with the multi-scale tokenizer's size and budget) these are its own codes, T2M-GPT's
  setting; on the multi-scale tokenizer they are its finest scale used alone, which keeps the tokenizer fixed but
  caps the baseline (that reconstruction keeps far less of each clip: docs/ablation.md). `examples/ablation.py` runs
  both and reports the detectors' accuracy on every tokenizer's reconstructions next to the generators;
* model: the same AdaLN blocks, text pooling, cross-attention and width as `MoScaleForTextToMotion` (one
  `MoScaleConfig` describes both), with a causal mask over [start tokens from the text pool, code_0, ...,
  code_{T-2}] so that position Q-1+t predicts code t;
* training: teacher forcing with T2M-GPT's input corruption (each input code kept with probability
  0.5, else replaced by a random code) and the same classifier-free text dropout;
* sampling: one code at a time with a KV cache, guidance (1 + w) cond - w uncond, the authors' top-p.

It lives beside the example scripts rather than in the package: it exists to measure a claim, no pipeline loads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from moscale.models.modeling_moscale import (
    MoScaleBlock,
    MoScaleConfig,
    MoScaleForTextToMotion,
    MoScaleKVCache,
    MoScalePreTrainedModel,
    MoScaleTextConditioning,
    MultiQueryTextPool,
    RMSNorm,
    rope_tables,
    scale_normalized_rope_angles,
)
from moscale.models.modeling_moscale_vq import PAD_ID, MoScaleVQModel, lengths_to_mask
from moscale.schedulers.scheduling_moscale import sample_tokens


@torch.no_grad()
def finest_scale_codes(vq_model: MoScaleVQModel, motions_BND: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
    """Normalised motions (B, N, D) -> (B, T) codes: the nearest shared-codebook entry of every latent step (PAD_ID
    beyond each length). Unlike `MoScaleVQModel.encode`, no coarser scale takes its share of the latent first; on a
    single-scale tokenizer the two are the same."""
    latent_BCT = vq_model.encode_latent(motions_BND, lengths_B)
    batch, code_dim, latent_length = latent_BCT.shape
    valid_BT = lengths_to_mask(
        torch.as_tensor(lengths_B).to(latent_BCT.device) // vq_model.config.unit_length, latent_length
    )
    idx_BT = vq_model.quantizer.nearest_codes(latent_BCT.transpose(1, 2).reshape(-1, code_dim)).view(batch, -1)
    return idx_BT.masked_fill(~valid_BT, PAD_ID)


@torch.no_grad()
def decode_finest_scale_codes(
    vq_model: MoScaleVQModel, codes_BT: torch.Tensor, lengths_B: torch.Tensor
) -> torch.Tensor:
    """(B, T) codes of `finest_scale_codes` -> normalised motions (B, T * unit_length, D)."""
    return vq_model.decode(vq_model.quantizer.lookup(codes_BT), lengths_B)


@dataclass
class NextTokenOutput(ModelOutput):
    """`loss` (with labels), `logits` (B, l + 1, V) predicting codes 0..l after l fed codes (or, with a cache, the
    positions fed), `past_key_values` (with use_cache)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: MoScaleKVCache | None = None


class NextTokenBaselineForTextToMotion(MoScalePreTrainedModel):
    """Left-to-right generation of `finest_scale_codes` with MoScale's blocks and text conditioning."""

    # The same text conditioning and output head as MoScale: the two models differ only in what they generate
    # (one scale, not four) and in which order (one token at a time, left to right).
    encode_text = MoScaleForTextToMotion.encode_text
    _check_text = MoScaleForTextToMotion._check_text
    head_modulation = MoScaleForTextToMotion.head_modulation
    final_norm = MoScaleForTextToMotion.final_norm
    run_blocks = MoScaleForTextToMotion.run_blocks

    def __init__(self, config: MoScaleConfig):
        super().__init__(config)
        self.num_start_tokens = config.patch_sizes[0]
        self.max_positions = self.num_start_tokens + config.latent_length - 1
        self.token_embedding = nn.Embedding(config.num_codes, config.code_dim)
        self.uncond_text_embedding = nn.Parameter(torch.zeros(config.max_text_length, config.text_dim))
        self.text_norm = RMSNorm(config.text_dim, config.norm_eps)
        self.text_pool = MultiQueryTextPool(config)
        self.text_proj = nn.Sequential(
            nn.Linear(config.text_dim, config.condition_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.condition_dim, config.condition_dim),
        )
        self.token_proj = nn.Linear(config.code_dim, config.condition_dim)
        self.input_proj = nn.Linear(config.condition_dim, config.hidden_size)
        steps = max(config.num_layers - 1, 1)
        self.blocks = nn.ModuleList(
            [MoScaleBlock(config, config.drop_path_rate * i / steps) for i in range(config.num_layers)]
        )
        self.head_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, elementwise_affine=False)
        self.head_adaln_modulation = nn.Linear(config.condition_dim, 2 * config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.num_codes)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, NextTokenBaselineForTextToMotion):
            # MoScale's block-level scalings (see MoScalePreTrainedModel._init_weights), so both start alike.
            config = self.config
            std = math.sqrt(1 / config.condition_dim / 3)
            for block in module.blocks:
                self._init_linear(block.self_attn.out_proj, std, 1 / math.sqrt(2 * config.num_layers))
                self._init_linear(block.ffn.fc2, std, 1 / math.sqrt(2 * config.num_layers))
                rows = torch.full((block.adaln_modulation.out_features, 1), 0.5)
                rows[: 2 * config.condition_dim] = 1e-5
                self._init_linear(block.adaln_modulation, std, rows)
            self._init_linear(module.head, std, 0.02)
            self._init_linear(module.head_adaln_modulation, std, 0.5)
            generator = torch.Generator().manual_seed(0)
            uncond = torch.nn.init.trunc_normal_(
                torch.empty(module.uncond_text_embedding.shape), std=1.2, generator=generator
            )
            init.copy_(module.uncond_text_embedding, uncond / math.sqrt(config.text_dim))

    def forward(
        self,
        input_ids: torch.LongTensor,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
        text_conditioning: MoScaleTextConditioning | None = None,
        labels: torch.LongTensor | None = None,
        past_key_values: MoScaleKVCache | None = None,
        use_cache: bool = False,
    ) -> NextTokenOutput:
        """Without a cache: the start tokens then `input_ids` (B, l) codes 0..l-1 (l may be 0); logits (B, l + 1, V)
        predict codes 0..l. With `past_key_values` (everything fed so far): `input_ids` are the next codes and the
        logits (B, l, V) predict the codes after each of them. `labels` (B, l + 1): codes, PAD_ID ignored."""
        if text_conditioning is None:
            text_conditioning = self.encode_text(text_hidden_states, text_attention_mask, drop_text)
        codes_BlA = self.token_proj(self.token_embedding(input_ids.clamp(min=0)))
        past_length = past_key_values.length if past_key_values else 0
        inputs_BlA = codes_BlA if past_key_values else torch.cat([text_conditioning.start_tokens, codes_BlA], dim=1)
        stop = past_length + inputs_BlA.shape[1]
        if stop > self.max_positions:
            raise ValueError(f"{stop} positions exceed the {self.max_positions} of a full clip")
        hidden_BlE = self.input_proj(inputs_BlA)
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        angles_lh = scale_normalized_rope_angles((self.max_positions,), head_dim, self.config.rope_theta)
        angles_lh = angles_lh[past_length:stop].to(hidden_BlE.device)
        rope_cos_sin = rope_tables(angles_lh, hidden_BlE.dtype)
        positions = torch.arange(stop, device=hidden_BlE.device)
        causal_lL = positions[None, :] <= positions[past_length:, None]
        hidden_BlE, cache = self.run_blocks(
            hidden_BlE,
            text_conditioning,
            rope_cos_sin,
            causal_lL,
            past_key_values,
            self.max_positions if use_cache else None,
        )
        if not past_key_values:  # only the last start token and the codes predict something
            hidden_BlE = hidden_BlE[:, self.num_start_tokens - 1 :]
        logits_BlV = self.head(self.final_norm(hidden_BlE, text_conditioning.head_modulation)).float()
        loss = None
        if labels is not None:
            targets = labels.masked_fill(labels < 0, -100).reshape(-1)
            loss = F.cross_entropy(logits_BlV.reshape(-1, logits_BlV.shape[-1]), targets, ignore_index=-100)
        return NextTokenOutput(loss=loss, logits=logits_BlV, past_key_values=cache if use_cache else None)

    def training_inputs(
        self, codes_BT: torch.Tensor, input_keep_prob: float = 0.5, generator: torch.Generator | None = None
    ) -> dict:
        """Teacher forcing with T2M-GPT's corruption: each fed code is kept with probability `input_keep_prob` (0.5,
        T2M-GPT's HumanML3D setting), else replaced by a random code; the labels stay clean. Returns `input_ids`,
        `labels` and `drop_text` (classifier-free dropout with the config's `cond_drop_prob`)."""
        batch = codes_BT.shape[0]
        inputs_BT = codes_BT[:, :-1]
        keep_BT = torch.rand(inputs_BT.shape, generator=generator, device=codes_BT.device) < input_keep_prob
        random_BT = torch.randint(
            0, self.config.num_codes, inputs_BT.shape, generator=generator, device=codes_BT.device
        )
        drop_text = torch.rand((batch,), generator=generator, device=codes_BT.device) < self.config.cond_drop_prob
        return {"input_ids": torch.where(keep_BT, inputs_BT, random_BT), "labels": codes_BT, "drop_text": drop_text}

    @torch.no_grad()
    def generate(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        token_lengths: Sequence[int] | torch.Tensor,
        guidance_scale: float | None = None,
        top_p: float = 0.9,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """Codes (B, max length) one latent step at a time (PAD_ID beyond each length), with classifier-free
        guidance (1 + w) cond - w uncond, w = `guidance_scale` (default the config's; 0 turns it off)."""
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        batch = text_hidden_states.shape[0]
        device = text_hidden_states.device
        lengths_B = torch.as_tensor(token_lengths, device=device)
        copies = 2 if guidance != 0 else 1
        drop_text = torch.arange(copies * batch, device=device) >= batch
        text = self.encode_text(
            text_hidden_states.repeat(copies, 1, 1), text_attention_mask.repeat(copies, 1), drop_text
        )
        codes_BT = torch.full((batch, int(lengths_B.max())), PAD_ID, dtype=torch.long, device=device)
        fed_Bl = codes_BT[:, :0].repeat(copies, 1)
        cache = None
        for step in range(codes_BT.shape[1]):
            out = self(fed_Bl, text_conditioning=text, past_key_values=cache, use_cache=True)
            logits_BV = out.logits[:, -1]
            if copies == 2:
                cond, uncond = logits_BV.chunk(2)
                logits_BV = (1 + guidance) * cond - guidance * uncond
            code_B = sample_tokens(logits_BV[:, None], top_p=top_p, temperature=temperature, generator=generator)
            codes_BT[:, step] = code_B[:, 0]
            fed_Bl, cache = code_B.repeat(copies, 1), out.past_key_values
        steps_BT = torch.arange(codes_BT.shape[1], device=device)[None]
        return codes_BT.masked_fill(steps_BT >= lengths_B[:, None], PAD_ID)
