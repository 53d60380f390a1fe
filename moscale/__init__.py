"""MoScale: next-scale autoregressive text-to-motion generation.

Importing the package registers its configs and models with transformers' `AutoConfig` / `AutoModel`.
"""

from .contrastive_evaluator import ContrastiveEvaluatorConfig, ContrastiveEvaluatorModel
from .length_estimator import MoScaleLengthEstimator, MoScaleLengthEstimatorConfig, MoScaleLengthEstimatorOutput
from .modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from .modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from .pipeline_moscale import MoScalePipeline, MoScalePipelineOutput

__version__ = "0.1.0.dev0"

__all__ = [
    "ContrastiveEvaluatorConfig",
    "ContrastiveEvaluatorModel",
    "MoScaleConfig",
    "MoScaleForTextToMotion",
    "MoScaleLengthEstimator",
    "MoScaleLengthEstimatorConfig",
    "MoScaleLengthEstimatorOutput",
    "MoScalePipeline",
    "MoScalePipelineOutput",
    "MoScaleVQConfig",
    "MoScaleVQModel",
]
