"""The three networks: the motion tokenizer, the next-scale transformer and the length estimator.

Each `modeling_*.py` file holds one model with its config, readable top to bottom; `convert_original_checkpoint.py`
maps the authors' checkpoints onto them.
"""

from moscale.models.modeling_length_estimator import (
    MoScaleLengthEstimator,
    MoScaleLengthEstimatorConfig,
    MoScaleLengthEstimatorOutput,
)
from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel

__all__ = [
    "MoScaleConfig",
    "MoScaleForTextToMotion",
    "MoScaleLengthEstimator",
    "MoScaleLengthEstimatorConfig",
    "MoScaleLengthEstimatorOutput",
    "MoScaleVQConfig",
    "MoScaleVQModel",
]
