"""Pipelines: text (and, for editing, a source motion) in, motion out."""

from moscale.pipelines.pipeline_moscale import MoScalePipeline, MoScalePipelineOutput

__all__ = ["MoScalePipeline", "MoScalePipelineOutput"]
