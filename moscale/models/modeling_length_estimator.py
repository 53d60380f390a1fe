"""MoScaleLengthEstimator: predicts a motion's length from the caption's text encoder states.

A small classifier over the lengths a pipeline accepts (multiples of `unit_length` from `min_num_frames` to
`max_motion_length`): masked mean of the text hidden states -> 2-layer MLP -> one logit per length. The pipeline uses
it when `num_frames` is omitted; train it with `forward(..., num_frames=...)`, whose loss is a cross-entropy over
the length classes.

Tensor names follow the legend in docs/architecture.md ("Tensor names").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from moscale.models.config_validation import check_fields, integer, probability
from moscale.models.loading import ExplainedLoadingMixin
from moscale.models.modeling_moscale_vq import is_valid_num_frames

__all__ = ["MoScaleLengthEstimator", "MoScaleLengthEstimatorConfig", "MoScaleLengthEstimatorOutput"]

_CONFIG_RULES = {
    "text_dim": integer(at_least=1),
    "hidden_size": integer(at_least=1),
    "dropout": probability(),
    "unit_length": integer(at_least=1),
    "min_num_frames": integer(at_least=1),
    "max_motion_length": integer(at_least=1),
}


class MoScaleLengthEstimatorConfig(PreTrainedConfig):
    r"""Configuration of [`MoScaleLengthEstimator`].

    Args:
        text_dim: width of the text encoder's hidden states (768 for google/t5-v1_1-base).
        hidden_size: width of the MLP.
        dropout: dropout inside the MLP (training only).
        unit_length: frames per latent step of the tokenizer; lengths are multiples of it.
        min_num_frames: shortest predicted length.
        max_motion_length: longest predicted length.
    """

    model_type = "moscale_length_estimator"

    def __init__(
        self,
        text_dim: int = 768,
        hidden_size: int = 256,
        dropout: float = 0.1,
        unit_length: int = 4,
        min_num_frames: int = 40,
        max_motion_length: int = 196,
        **kwargs,
    ):
        check_fields(type(self).__name__, locals(), _CONFIG_RULES)
        if max_motion_length % unit_length or not is_valid_num_frames(
            min_num_frames, unit_length, 1, max_motion_length
        ):
            raise ValueError(
                f"min_num_frames ({min_num_frames}) and max_motion_length ({max_motion_length}) must be multiples of "
                f"unit_length ({unit_length}) with 0 < min_num_frames <= max_motion_length"
            )
        self.text_dim = text_dim
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.unit_length = unit_length
        self.min_num_frames = min_num_frames
        self.max_motion_length = max_motion_length
        super().__init__(**kwargs)

    @property
    def num_classes(self) -> int:
        """Number of length classes K."""
        return (self.max_motion_length - self.min_num_frames) // self.unit_length + 1


@dataclass
class MoScaleLengthEstimatorOutput(ModelOutput):
    """Output of [`MoScaleLengthEstimator.forward`].

    Args:
        loss: cross-entropy against `num_frames` (only when it is given).
        logits: (B, K) one logit per length class; class k is min_num_frames + k * unit_length frames.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class MoScaleLengthEstimator(ExplainedLoadingMixin, PreTrainedModel):
    """Text encoder states -> distribution over motion lengths."""

    config_class = MoScaleLengthEstimatorConfig
    base_model_prefix = "length_estimator"
    main_input_name = "text_hidden_states"

    def __init__(self, config: MoScaleLengthEstimatorConfig):
        super().__init__(config)
        self.mlp = nn.Sequential(
            nn.LayerNorm(config.text_dim),
            nn.Linear(config.text_dim, config.hidden_size),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_size, config.num_classes),
        )
        self.post_init()

    def frames_to_classes(self, num_frames: torch.Tensor) -> torch.LongTensor:
        """Frame counts (B,) -> class ids; lengths must be valid multiples of unit_length within range."""
        cfg = self.config
        num_frames = torch.as_tensor(num_frames).long()
        rule = (cfg.unit_length, cfg.min_num_frames, cfg.max_motion_length)
        if not all(is_valid_num_frames(n, *rule) for n in num_frames.tolist()):
            raise ValueError(
                f"num_frames must be multiples of {cfg.unit_length} between {cfg.min_num_frames} and "
                f"{cfg.max_motion_length}, got {num_frames.tolist()}"
            )
        return (num_frames - cfg.min_num_frames) // cfg.unit_length

    def classes_to_frames(self, classes: torch.Tensor) -> torch.LongTensor:
        """Class ids -> frame counts."""
        return self.config.min_num_frames + classes.long() * self.config.unit_length

    def forward(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        num_frames: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ):
        """Text states (B, S, X) and mask (B, S) -> length logits (B, K), and the loss when `num_frames` is given."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if text_hidden_states.ndim != 3 or text_hidden_states.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text_hidden_states must be (batch, tokens, {self.config.text_dim}), "
                f"got {tuple(text_hidden_states.shape)}"
            )
        if tuple(text_attention_mask.shape) != tuple(text_hidden_states.shape[:2]):
            raise ValueError("text_attention_mask must be (batch, tokens), matching text_hidden_states")
        weights_BS1 = text_attention_mask.to(text_hidden_states.dtype)[..., None]
        pooled_BX = (text_hidden_states * weights_BS1).sum(1) / weights_BS1.sum(1).clamp_min(1.0)
        logits_BK = self.mlp(pooled_BX).float()
        loss = None
        if num_frames is not None:
            loss = F.cross_entropy(logits_BK, self.frames_to_classes(num_frames).to(logits_BK.device))
        output = MoScaleLengthEstimatorOutput(loss=loss, logits=logits_BK)
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def predict_num_frames(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """Most likely length per caption (B,) in frames; with a generator, a draw from the predicted distribution."""
        logits_BK = self(text_hidden_states, text_attention_mask).logits
        if generator is None:
            return self.classes_to_frames(logits_BK.argmax(dim=-1))
        probs_BK = logits_BK.softmax(dim=-1).to(generator.device)
        return self.classes_to_frames(torch.multinomial(probs_BK, 1, generator=generator)[:, 0]).to(logits_BK.device)


AutoConfig.register(MoScaleLengthEstimatorConfig.model_type, MoScaleLengthEstimatorConfig, exist_ok=True)
AutoModel.register(MoScaleLengthEstimatorConfig, MoScaleLengthEstimator, exist_ok=True)
