"""MoScale: next-scale autoregressive text-to-motion generation.

Importing the package registers both configs and models with transformers' `AutoConfig` / `AutoModel`.
"""

from .modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from .modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel

__version__ = "0.1.0.dev0"

__all__ = [
    "MoScaleConfig",
    "MoScaleForTextToMotion",
    "MoScaleVQConfig",
    "MoScaleVQModel",
]
