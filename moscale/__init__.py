"""MoScale: next-scale autoregressive text-to-motion generation.

Importing the package registers its configs and models with transformers' `AutoConfig` / `AutoModel`. The pipeline
loads on first use (`from moscale import MoScalePipeline`), so that only code that samples imports diffusers.
"""

from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorConfig, ContrastiveEvaluatorModel
from moscale.models.modeling_length_estimator import (
    MoScaleLengthEstimator,
    MoScaleLengthEstimatorConfig,
    MoScaleLengthEstimatorOutput,
)
from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel

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
        import moscale.pipelines.pipeline_moscale as pipeline_moscale

        return getattr(pipeline_moscale, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
