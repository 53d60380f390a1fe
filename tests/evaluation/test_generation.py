"""The pipeline under evaluation: the loader's shortest crops, and the converter's folders assembled into a pipeline."""

import numpy as np
import pytest
import torch

from moscale.evaluation.generation import allow_evaluation_lengths, load_pipeline, pipeline_generator
from tests.helpers import protocol_settings
from tests.shared_data import SHARED_DATA


def test_evaluation_lengths(workspace):
    from moscale.pipelines.pipeline_moscale import MoScalePipeline

    pipeline = MoScalePipeline.from_pretrained(workspace["root"] / "pipeline")
    assert pipeline.config.min_num_frames == 40
    allow_evaluation_lengths(pipeline, 41)  # a 41-frame clip may be cropped to 36 frames
    assert pipeline.config.min_num_frames == 36
    with pytest.raises(ValueError, match="Remove the items shorter than 36 frames"):
        allow_evaluation_lengths(pipeline, 35)  # may become 28 frames, below the coarsest scale's 32


def test_converted_checkpoints_are_assembled_into_a_pipeline(tmp_path):
    """--pipeline may be the converter's output: vq_model/ + transformer/, T5 named by --text_encoder."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from moscale.evaluation.t2m_evaluator import load_evaluator_stats
    from moscale.models.convert_original_checkpoint import convert_original_checkpoint

    fixture = SHARED_DATA / "parity" / "fixture_a" / "checkpoint_dir" / "humanml3d"
    vq, transformer = convert_original_checkpoint(
        fixture / "hrvqvae" / "hrvqvae_fixture_a" / "model" / "net_best_fid.tar",
        fixture / "hrvqvae" / "hrvqvae_fixture_a" / "train_hrvqvae.yaml",
        fixture / "moscale" / "moscale_fixture_a" / "model" / "net_best_fid.tar",
        fixture / "moscale" / "moscale_fixture_a" / "train_moscale.yaml",
        output_dir=tmp_path / "converted",
    )
    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "t5_small_tokenizer")
    t5_config = T5Config(vocab_size=len(tokenizer), d_model=transformer.config.text_dim, d_kv=8, d_ff=32,
                         num_layers=1, num_heads=2)  # fmt: skip
    T5EncoderModel(t5_config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")

    pipeline = load_pipeline(str(tmp_path / "converted"), torch.float32, "humanml3d", str(tmp_path / "t5"))
    mean, std = load_evaluator_stats("humanml3d")
    np.testing.assert_allclose(pipeline.config.motion_mean, mean)
    np.testing.assert_allclose(pipeline.config.motion_std, std)
    torch.testing.assert_close(pipeline.vq_model.quantizer.codebook, vq.quantizer.codebook)
    generate = pipeline_generator(pipeline, protocol_settings())
    motions = generate(["a person walks"], torch.tensor([40]), 0)
    assert motions.shape[-1] == 263 and motions.shape[1] >= 40 and torch.isfinite(motions).all()
