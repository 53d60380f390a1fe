"""A small trainable text-motion evaluator for data that has no standard evaluator.

The published text-to-motion numbers come from the T2M evaluator (`moscale.evaluation.t2m_evaluator`), which exists only for
HumanML3D and KIT-ML. For anything else (the procedural dataset, a user's own capture) this module provides a
contrastive co-embedding model in the spirit of TMR/CLIP: a text encoder and a motion encoder trained so that a
caption lies close to its motion. Its embeddings feed the same metric functions (`moscale.evaluation.metrics`): R-precision,
MM-Dist, FID, Diversity and MultiModality.

Numbers computed with this evaluator are comparable only with other numbers from the SAME evaluator weights, never
with the paper's tables (different network, different embedding scale).

Design choices:

- Text is split into lower-case words and looked up in a vocabulary stored in the config (built from the training
  captions by `build_vocabulary`), so the evaluator needs no external tokenizer, word vectors or network access.
- Motions come in RAW feature units; the model normalises them with its own statistics (`feature_mean`,
  `feature_std`, saved with the weights), as the T2M evaluator does with its own files.
- Embeddings are L2-normalised, so Euclidean distances (what the metrics use) are a monotone function of cosine
  similarity, the quantity the contrastive loss trains.
- Captions that appear twice in a batch count as positives of each other's motions (procedural datasets repeat
  texts; treating the duplicates as negatives would punish correct matches).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from moscale.models.config_validation import check_fields, integer, number, probability, sequence, string
from moscale.models.loading import ExplainedLoadingMixin

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+")


def split_words(caption: str) -> list[str]:
    """Lower-case words and numbers of a caption (punctuation dropped): ``"Walk, then TURN."`` -> walk, then, turn."""
    return _WORD.findall(caption.lower())


def build_vocabulary(captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> tuple[str, ...]:
    """Words seen at least ``min_count`` times, most frequent first (ties alphabetical), at most ``max_size``."""
    if min_count < 1:
        raise ValueError(f"`min_count` must be >= 1, got {min_count}.")
    counts = Counter(word for caption in captions for word in split_words(caption))
    words = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
    if not words:
        raise ValueError("No word left to build a vocabulary from: are the captions empty?")
    return tuple(words[:max_size])


_CONFIG_RULES = {
    "feature_dim": integer(at_least=1),
    "vocabulary": sequence(string()),
    "max_text_length": integer(at_least=1),
    "max_motion_length": integer(at_least=1),
    "hidden_size": integer(at_least=1),
    "num_layers": integer(at_least=1),
    "num_heads": integer(at_least=1),
    "embedding_dim": integer(at_least=1),
    "dropout": probability(),
    "initial_temperature": number(above=0),
}


class ContrastiveEvaluatorConfig(PreTrainedConfig):
    r"""Configuration of [`ContrastiveEvaluatorModel`].

    Args:
        feature_dim: motion features per frame (263 for HumanML3D-layout data, 251 for KIT-ML).
        vocabulary: the known words (see `build_vocabulary`); ids 0 and 1 are padding and unknown words.
        max_text_length: captions are cut to this many words (longer ones lose their tail; the cut is documented,
            not silent: `tokenize` reports it through `truncated`).
        max_motion_length: longest motion in frames (sets the positional table).
        hidden_size: width of both encoders.
        num_layers: transformer layers in each encoder.
        num_heads: attention heads.
        embedding_dim: size of the co-embedding space.
        dropout: dropout inside the encoders (training only).
        initial_temperature: starting softmax temperature of the contrastive loss (learned afterwards).
    """

    model_type = "moscale_contrastive_evaluator"

    def __init__(
        self,
        feature_dim: int = 263,
        vocabulary: Sequence[str] = (),
        max_text_length: int = 40,
        max_motion_length: int = 196,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        embedding_dim: int = 256,
        dropout: float = 0.1,
        initial_temperature: float = 0.07,
        **kwargs,
    ):
        check_fields(type(self).__name__, locals(), _CONFIG_RULES)
        if hidden_size % num_heads:
            raise ValueError(f"`hidden_size` ({hidden_size}) must be divisible by `num_heads` ({num_heads}).")
        self.feature_dim = feature_dim
        self.vocabulary = list(vocabulary)
        self.max_text_length = max_text_length
        self.max_motion_length = max_motion_length
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.initial_temperature = initial_temperature
        super().__init__(**kwargs)


@dataclass
class ContrastiveEvaluatorOutput(ModelOutput):
    """``text_embeds``/``motion_embeds`` (B, E) unit vectors; ``logits_per_text`` (B, B); ``loss`` when asked."""

    loss: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    motion_embeds: torch.Tensor | None = None


def _transformer(config: ContrastiveEvaluatorConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        config.hidden_size,
        config.num_heads,
        dim_feedforward=4 * config.hidden_size,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    # Nested tensors would make padded positions take another code path in eval mode than in training.
    return nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)


def _masked_mean(hidden_BLH: torch.Tensor, valid_BL: torch.Tensor) -> torch.Tensor:
    weights_BL1 = valid_BL.unsqueeze(-1).to(hidden_BLH.dtype)
    return (hidden_BLH * weights_BL1).sum(1) / weights_BL1.sum(1).clamp(min=1)


class ContrastiveEvaluatorPreTrainedModel(ExplainedLoadingMixin, PreTrainedModel):
    config_class = ContrastiveEvaluatorConfig
    base_model_prefix = "contrastive_evaluator"
    main_input_name = "motions"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ContrastiveEvaluatorModel):
            init.normal_(module.text_positions, std=0.02)
            init.normal_(module.motion_positions, std=0.02)
            init.constant_(module.logit_scale, math.log(1 / self.config.initial_temperature))
            init.zeros_(module.feature_mean)
            init.ones_(module.feature_std)


class ContrastiveEvaluatorModel(ContrastiveEvaluatorPreTrainedModel):
    """Text encoder + motion encoder trained with a symmetric contrastive (InfoNCE) loss.

    Main entry points: `get_co_embeddings(captions, motions, lengths)` for evaluation, `forward(...)` for training,
    `set_feature_statistics(mean, std)` before training.
    """

    def __init__(self, config: ContrastiveEvaluatorConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.word_to_id = {word: index + 2 for index, word in enumerate(config.vocabulary)}
        self.word_embeddings = nn.Embedding(len(config.vocabulary) + 2, hidden, padding_idx=0)
        self.text_positions = nn.Parameter(torch.zeros(config.max_text_length, hidden))
        self.text_encoder = _transformer(config)
        self.text_projection = nn.Linear(hidden, config.embedding_dim)

        # Two stride-2 convolutions: one motion position covers 4 frames, as in the T2M movement encoder.
        self.motion_downsample = nn.ModuleList(
            [
                nn.Conv1d(config.feature_dim, hidden, 4, stride=2, padding=1),
                nn.Conv1d(hidden, hidden, 4, stride=2, padding=1),
            ]
        )
        self.motion_positions = nn.Parameter(torch.zeros(math.ceil(config.max_motion_length / 4), hidden))
        self.motion_encoder = _transformer(config)
        self.motion_projection = nn.Linear(hidden, config.embedding_dim)

        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.initial_temperature)))
        # Persistent: they are part of what the evaluator is, and travel with the weights.
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.post_init()

    def set_feature_statistics(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Stores the per-feature statistics used to normalise raw motions (e.g. the dataset's Mean.npy/Std.npy)."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        expected = (self.config.feature_dim,)
        if mean.shape != expected or std.shape != expected:
            raise ValueError(f"mean {tuple(mean.shape)} and std {tuple(std.shape)} must both be {expected}.")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("Feature statistics must be finite, with std > 0 in every dimension.")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def tokenize(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Word ids (B, L) and attention mask (B, L) for a list of captions.

        ``truncated`` (B,) bool says which captions had more than ``max_text_length`` words and lost their tail.
        """
        if isinstance(captions, str):
            raise TypeError("`captions` must be a list of strings, not one string.")
        if not captions:
            raise ValueError("`captions` is empty.")
        unknown = 1
        word_lists = [split_words(caption) for caption in captions]
        empty = [caption for caption, words in zip(captions, word_lists) if not words]
        if empty:
            raise ValueError(f"Captions without any word cannot be embedded: {empty[:3]}")
        limit = self.config.max_text_length
        ids = [[self.word_to_id.get(word, unknown) for word in words[:limit]] for words in word_lists]
        longest = max(len(row) for row in ids)
        input_ids = torch.zeros(len(ids), longest, dtype=torch.long)
        for row, row_ids in enumerate(ids):
            input_ids[row, : len(row_ids)] = torch.tensor(row_ids)
        return {
            "input_ids": input_ids,
            "attention_mask": input_ids != 0,
            "truncated": torch.tensor([len(words) > limit for words in word_lists]),
        }

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings (B, E) from `tokenize` outputs."""
        valid_BL = attention_mask.to(self.device, torch.bool)
        length = input_ids.shape[1]
        hidden_BLH = self.word_embeddings(input_ids.to(self.device)) + self.text_positions[:length]
        hidden_BLH = self.text_encoder(hidden_BLH, src_key_padding_mask=~valid_BL)
        return F.normalize(self.text_projection(_masked_mean(hidden_BLH, valid_BL)), dim=-1)

    def encode_motion(self, motions_BND: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        """Unit-norm motion embeddings (B, E) of RAW motion features (B, N, D); frames past ``lengths`` are ignored."""
        motions_BND = torch.as_tensor(motions_BND)
        lengths_B = torch.as_tensor(lengths_B, dtype=torch.long).cpu()
        batch, frames, features = motions_BND.shape
        if features != self.config.feature_dim:
            raise ValueError(f"Motions have {features} features, the evaluator expects {self.config.feature_dim}.")
        if lengths_B.shape != (batch,) or (lengths_B < 4).any() or (lengths_B > frames).any():
            raise ValueError(f"`lengths` must hold {batch} values in [4, {frames}], got {lengths_B.tolist()}.")
        if frames > self.config.max_motion_length:
            raise ValueError(
                f"Motions have {frames} frames, more than max_motion_length={self.config.max_motion_length}; crop "
                "them or train an evaluator with a larger max_motion_length."
            )
        lengths_B = lengths_B.to(self.device)
        normalized_BND = (motions_BND.to(self.device, torch.float32) - self.feature_mean) / self.feature_std
        # Padding is zeroed after normalising and after each convolution, so that an embedding does not depend on
        # what sits past the end of a motion, nor on how far its batch is padded.
        hidden_BCN = normalized_BND.transpose(1, 2).to(self.dtype)
        valid_BN = torch.arange(frames, device=self.device)[None] < lengths_B[:, None]
        hidden_BCN = hidden_BCN * valid_BN[:, None]
        for stage, conv in enumerate(self.motion_downsample, start=1):
            hidden_BCN = F.gelu(conv(hidden_BCN))
            valid_BN = torch.arange(hidden_BCN.shape[-1], device=self.device)[None] < (lengths_B // 2**stage)[:, None]
            hidden_BCN = hidden_BCN * valid_BN[:, None]
        hidden_BLH = hidden_BCN.transpose(1, 2) + self.motion_positions[: hidden_BCN.shape[-1]]
        valid_BL = valid_BN
        hidden_BLH = self.motion_encoder(hidden_BLH, src_key_padding_mask=~valid_BL)
        return F.normalize(self.motion_projection(_masked_mean(hidden_BLH, valid_BL)), dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        motions: torch.Tensor,
        lengths: torch.Tensor,
        return_loss: bool = True,
    ) -> ContrastiveEvaluatorOutput:
        """Embeds a batch of paired captions and motions; ``loss`` is the symmetric InfoNCE loss.

        Rows with identical ``input_ids`` are positives of each other (their targets share the probability mass).
        """
        text_BE = self.encode_text(input_ids, attention_mask)
        motion_BE = self.encode_motion(motions, lengths)
        logits_BB = self.logit_scale.clamp(max=math.log(100)).exp() * text_BE @ motion_BE.T
        loss = None
        if return_loss:
            ids = input_ids.to(self.device)
            same_text_BB = (ids[:, None, :] == ids[None, :, :]).all(-1).to(logits_BB.dtype)
            targets_BB = same_text_BB / same_text_BB.sum(-1, keepdim=True)
            loss = (F.cross_entropy(logits_BB, targets_BB) + F.cross_entropy(logits_BB.T, targets_BB)) / 2
        return ContrastiveEvaluatorOutput(
            loss=loss, logits_per_text=logits_BB, text_embeds=text_BE, motion_embeds=motion_BE
        )

    @torch.no_grad()
    def get_co_embeddings(
        self, captions: Sequence[str], motions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text and motion embeddings (B, E) float32, in the input order, for RAW motions (B, N, D)."""
        tokens = self.tokenize(captions)
        if tokens["truncated"].any():
            logger.warning(
                "%d caption(s) have more than max_text_length=%d words; only their first words are embedded.",
                int(tokens["truncated"].sum()),
                self.config.max_text_length,
            )
        if len(captions) != len(motions):
            raise ValueError(f"Got {len(captions)} captions for {len(motions)} motions.")
        text_BE = self.encode_text(tokens["input_ids"], tokens["attention_mask"])
        return text_BE.float(), self.encode_motion(motions, lengths).float()


AutoConfig.register(ContrastiveEvaluatorConfig.model_type, ContrastiveEvaluatorConfig)
AutoModel.register(ContrastiveEvaluatorConfig, ContrastiveEvaluatorModel)
