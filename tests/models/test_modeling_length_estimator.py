"""MoScaleLengthEstimator: learns caption -> length, and the pipeline uses it when num_frames is omitted."""

import json

import pytest
import torch

from moscale.models.modeling_length_estimator import MoScaleLengthEstimator, MoScaleLengthEstimatorConfig
from moscale.pipelines.pipeline_moscale import MoScalePipeline
from tests.helpers import tiny_pipeline

PROMPTS = ["a person jumps", "a person walks slowly in a long circle"]
TARGET_FRAMES = torch.tensor([60, 180])


@pytest.fixture(scope="module")
def pipe_and_estimator():
    pipe = tiny_pipeline()
    torch.manual_seed(0)
    estimator = MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=32, hidden_size=64, dropout=0.0))
    with torch.no_grad():
        states, mask = pipe.encode_prompt(PROMPTS, torch.device("cpu"))
    optimizer = torch.optim.AdamW(estimator.parameters(), lr=3e-3)
    first_loss = None
    for _ in range(100):
        loss = estimator(states, mask, num_frames=TARGET_FRAMES).loss
        first_loss = first_loss if first_loss is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pipe, estimator.eval(), (states, mask), (first_loss, loss.item())


def test_auto_classes_know_the_estimator(tmp_path):
    from transformers import AutoModel

    estimator = MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=8, hidden_size=8)).eval()
    estimator.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MoScaleLengthEstimator)
    states, mask = torch.randn(2, 5, 8), torch.ones(2, 5)
    assert torch.equal(loaded(states, mask).logits, estimator(states, mask).logits)


def test_classes_cover_the_accepted_lengths():
    estimator = MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=8, hidden_size=8))
    assert estimator.config.num_classes == (196 - 40) // 4 + 1
    frames = torch.tensor([40, 44, 196])
    assert torch.equal(estimator.classes_to_frames(estimator.frames_to_classes(frames)), frames)
    with pytest.raises(ValueError, match="multiples of 4 between 40 and 196"):
        estimator.frames_to_classes(torch.tensor([42]))
    with pytest.raises(ValueError, match="multiples of unit_length"):
        MoScaleLengthEstimatorConfig(min_num_frames=42)


def test_training_learns_lengths_from_text(pipe_and_estimator):
    _, estimator, (states, mask), (first_loss, last_loss) = pipe_and_estimator
    assert last_loss < 0.1 * first_loss
    assert estimator.predict_num_frames(states, mask).tolist() == TARGET_FRAMES.tolist()
    drawn = estimator.predict_num_frames(states, mask, generator=torch.Generator().manual_seed(0))
    assert ((drawn % 4 == 0) & (drawn >= 40) & (drawn <= 196)).all()


def test_pipeline_uses_the_estimator_and_saves_it(pipe_and_estimator, tmp_path):
    pipe, estimator, _, _ = pipe_and_estimator
    with_estimator = MoScalePipeline(
        pipe.vq_model,
        pipe.transformer,
        pipe.text_encoder,
        pipe.tokenizer,
        length_estimator=estimator,
        motion_mean=pipe.config.motion_mean,
        motion_std=pipe.config.motion_std,
    )
    with_estimator.set_progress_bar_config(disable=True)
    out = with_estimator(PROMPTS, generator=torch.Generator().manual_seed(0))
    assert out.lengths.tolist() == TARGET_FRAMES.tolist()
    # An explicit num_frames still wins.
    assert with_estimator(PROMPTS, num_frames=80).lengths.tolist() == [80, 80]

    with_estimator.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["length_estimator"] == ["moscale.models.modeling_length_estimator", "MoScaleLengthEstimator"]
    loaded = MoScalePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    again = loaded(PROMPTS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.features, again.features)


def test_incompatible_estimator_is_rejected(pipe_and_estimator):
    pipe = pipe_and_estimator[0]
    wrong_width = MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=16, hidden_size=8))
    with pytest.raises(ValueError, match="text states of width 16"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, length_estimator=wrong_width)
    too_short = MoScaleLengthEstimator(MoScaleLengthEstimatorConfig(text_dim=32, min_num_frames=20))
    with pytest.raises(ValueError, match="length_estimator predicts"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, length_estimator=too_short)
