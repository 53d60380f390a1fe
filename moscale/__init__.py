"""MoScale: next-scale autoregressive text-to-motion generation.

Importing the package registers its configs and models with transformers' `AutoConfig` / `AutoModel`. The pipeline
loads on first use (`from moscale import MoScalePipeline`), so that only code that samples imports diffusers.
"""

from .contrastive_evaluator import ContrastiveEvaluatorConfig, ContrastiveEvaluatorModel
from .length_estimator import MoScaleLengthEstimator, MoScaleLengthEstimatorConfig, MoScaleLengthEstimatorOutput
from .modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from .modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel

__version__ = "0.1.0.dev0"

_PIPELINE_NAMES = ("MoScalePipeline", "MoScalePipelineOutput")

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


def __getattr__(name: str):
    if name in _PIPELINE_NAMES:
        from . import pipeline_moscale

        return getattr(pipeline_moscale, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
