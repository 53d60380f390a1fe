"""MoScale: next-scale autoregressive text-to-motion generation."""

__version__ = "0.1.0.dev0"
