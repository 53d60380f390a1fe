"""The pipeline under evaluation: `load_pipeline` (a pipeline folder, or the converter's two model folders),
`allow_evaluation_lengths` (the loader's shortest crops), and `pipeline_generator` (the protocol's
`MotionGenerator`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from moscale.evaluation.protocol import MotionGenerator, ProtocolSettings

logger = logging.getLogger(__name__)


def load_pipeline(path: str, dtype: torch.dtype, dataset: str, text_encoder: str | None = None):
    """A `MoScalePipeline` folder, or the two folders `moscale.models.convert_original_checkpoint` writes.

    A converted folder (``vq_model/`` + ``transformer/``, no ``model_index.json``) is assembled into a pipeline
    with the text encoder the transformer was trained with (``transformer.config.text_encoder_name``, or
    ``text_encoder``: a local folder or Hub id holding a T5 encoder and its tokenizer) and the evaluator's
    normalisation statistics: the authors' training scripts normalise motions with those, not with the
    dataset's Mean.npy/Std.npy.
    """
    from moscale.pipelines.pipeline_moscale import MoScalePipeline

    folder = Path(path)
    converted = (folder / "vq_model").is_dir() and (folder / "transformer").is_dir()
    if not converted or (folder / "model_index.json").is_file():
        return MoScalePipeline.from_pretrained(path, dtype=dtype)

    from transformers import AutoTokenizer, T5EncoderModel

    from moscale.evaluation.t2m_evaluator import load_evaluator_stats
    from moscale.models.modeling_moscale import MoScaleForTextToMotion
    from moscale.models.modeling_moscale_vq import MoScaleVQModel

    transformer = MoScaleForTextToMotion.from_pretrained(folder / "transformer", dtype=dtype)
    text_encoder = text_encoder or transformer.config.text_encoder_name
    logger.info("Assembling converted checkpoints in %s with the text encoder %s.", folder, text_encoder)
    mean, std = load_evaluator_stats(dataset)
    return MoScalePipeline(
        vq_model=MoScaleVQModel.from_pretrained(folder / "vq_model", dtype=dtype).eval(),
        transformer=transformer.eval(),
        text_encoder=T5EncoderModel.from_pretrained(text_encoder, dtype=dtype).eval(),
        tokenizer=AutoTokenizer.from_pretrained(text_encoder),
        motion_mean=mean,
        motion_std=std,
    )


def allow_evaluation_lengths(pipeline, shortest_item: int) -> None:
    """Lets the pipeline generate the shortest crops of the evaluation loader, or says why it cannot.

    The loader shortens one clip in three by one unit, so a 40-frame HumanML3D clip is evaluated at 36 frames;
    the authors' model generates it (9 latent steps). A pipeline saved with a larger ``min_num_frames`` guard
    would refuse it, so the guard is lowered for this run, down to the coarsest scale's minimum. Items that could
    be cropped below that minimum are reported before any generation starts.
    """
    unit = pipeline.vq_model.config.unit_length
    units = shortest_item // unit
    shortest_crop = (units - 1 if units > 1 else units) * unit
    floor = unit * pipeline.vq_model.config.scales[0]
    if shortest_crop < floor:
        raise ValueError(
            f"The split has an item of {shortest_item} frames, which the evaluation loader may crop to "
            f"{shortest_crop} frames, but this tokenizer generates at least {floor} frames (its coarsest scale). "
            f"Remove the items shorter than {floor + unit} frames from the split file."
        )
    if pipeline.config.min_num_frames > shortest_crop:
        logger.info(
            "Lowering the pipeline's min_num_frames from %d to %d frames for the evaluation crops.",
            pipeline.config.min_num_frames,
            shortest_crop,
        )
        pipeline.register_to_config(min_num_frames=shortest_crop)


def pipeline_generator(pipeline, settings: ProtocolSettings) -> MotionGenerator:
    """Wraps a `MoScalePipeline` as a `MotionGenerator` with the protocol's sampling settings.

    The random generator lives on the pipeline's device (no host round trip per sampling step); CPU and GPU streams
    differ, so the same seed gives the same numbers on the same kind of device.
    """
    if pipeline.config.motion_mean is None:
        raise ValueError(
            "The pipeline has no motion_mean/motion_std: its outputs stay in the model's normalised space, and the "
            "evaluators need raw features. Save the pipeline with the statistics it was trained with."
        )

    def generate(captions: Sequence[str], lengths: torch.Tensor, seed: int) -> torch.Tensor:
        from moscale.pipelines.pipeline_moscale import PromptTruncationWarning

        generator = torch.Generator(device=pipeline.device).manual_seed(seed)
        with warnings.catch_warnings():
            # The protocol keeps the first max_text_length tokens of every caption, as the authors' does: long test
            # captions are expected there, and a warning per batch would only bury the results.
            warnings.simplefilter("ignore", PromptTruncationWarning)
            output = pipeline(
                prompt=list(captions),
                num_frames=[int(n) for n in lengths],
                guidance_scale=settings.guidance_scale,
                refinement_steps=settings.refinement_steps,
                generator=generator,
                output_type="latent",
            )
        lengths_B = output.lengths
        if settings.generated_padding == "zeros":
            return pipeline.decode_tokens(output.tokens, lengths_B)
        # The decoder's full-length output, frames past each length included, as the authors' evaluation sees it.
        return pipeline.denormalize(pipeline.vq_model.decode(list(output.tokens), lengths_B).float())

    return generate
