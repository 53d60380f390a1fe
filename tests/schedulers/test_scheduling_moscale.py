"""MoScaleScheduler (settings, re-masking, guidance, draw; saved in a pipeline folder and swappable) and the
sampler's tensor functions: top-k / top-p filtering, one draw over all positions, the re-masking schedule and the
guidance ramp."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from moscale.models.modeling_moscale import MASK_ID, MoScaleConfig
from moscale.pipelines.pipeline_moscale import MoScalePipeline
from moscale.schedulers.scheduling_moscale import (
    KEPT_CONFIDENCE,
    MoScaleScheduler,
    cfg_weight,
    num_tokens_to_mask,
    sample_tokens,
    top_k_top_p_filter,
)
from tests.helpers import tiny_pipeline

PROMPTS = ["a person jumps twice", "someone walks in a circle"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_top_p_drops_the_token_that_crosses_the_threshold():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    kept = torch.isfinite(top_k_top_p_filter(logits, top_p=0.7))[0, 0]
    # Inclusive cumulative mass 0.5, 0.8, ...: the second token crosses 0.7 and is removed (HF would keep it).
    assert kept.tolist() == [True, False, False, False]
    kept = torch.isfinite(top_k_top_p_filter(logits, top_p=0.85))[0, 0]
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(top_k_top_p_filter(logits, top_p=1.0)).all()


def test_top_k_then_top_p():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0]]])
    assert torch.isfinite(top_k_top_p_filter(logits, top_k=2))[0, 0].tolist() == [False, True, False, True]
    # top-p renormalises over the top-k survivors: p = (0.73, 0.27), so 0.5 keeps only the best.
    assert torch.isfinite(top_k_top_p_filter(logits, top_k=2, top_p=0.5))[0, 0].tolist() == [False, True, False, False]


def test_sample_tokens_is_one_draw_over_all_positions(monkeypatch):
    calls = []
    real = torch.multinomial

    def spy(probs, *args, **kwargs):
        calls.append(tuple(probs.shape))
        return real(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", spy)
    logits = torch.randn(3, 5, 7, generator=gen())
    a = sample_tokens(logits, top_p=0.9, generator=gen(1))
    b = sample_tokens(logits, top_p=0.9, generator=gen(1))
    assert calls == [(15, 7), (15, 7)] and a.shape == (3, 5) and torch.equal(a, b)
    # The draw respects the filter: only tokens inside the nucleus can come out.
    allowed = torch.isfinite(top_k_top_p_filter(logits, top_p=0.9))
    assert allowed.gather(-1, a[..., None]).all()


def test_schedule_and_guidance_ramp():
    pool = torch.tensor([6.0, 49.0])
    assert num_tokens_to_mask(torch.tensor(0.0), pool).tolist() == [6, 49]
    assert num_tokens_to_mask(torch.tensor(1.0), pool).tolist() == [1, 1]
    assert num_tokens_to_mask(torch.tensor(0.5), pool).tolist() == [round(6 * math.cos(math.pi / 4)), 35]
    assert [cfg_weight(5.0, k) for k in range(4)] == [5.25, 5.0, 4.75, 4.5]


# ------------------------------------------------------------------------------------------------------ scheduler
def test_defaults_are_the_paper_recipe_the_transformer_config_records():
    config = MoScaleScheduler().config
    paper = MoScaleConfig()
    assert tuple(config.refinement_steps) == paper.sample_steps_per_scale == (1, 2, 5, 10)
    assert config.guidance_scale == paper.guidance_scale == 5.0 and config.guidance_decay == paper.guidance_decay
    assert (config.top_k, config.top_p, config.temperature) == (0, 0.9, 1.0)
    recorded = MoScaleScheduler.from_transformer_config(
        MoScaleConfig(scales=(4, 2, 1), sample_steps_per_scale=(1, 2, 3), guidance_scale=3.0)
    )
    assert tuple(recorded.config.refinement_steps) == (1, 2, 3) and recorded.config.guidance_scale == 3.0


def test_set_timesteps_overrides_one_run_and_none_keeps_the_config():
    scheduler = MoScaleScheduler(refinement_steps=(1, 1, 2, 3), guidance_scale=2.0, top_p=0.5)
    scheduler.set_timesteps(4)
    assert scheduler.refinement_steps == (1, 1, 2, 3) and scheduler.num_steps == 7
    assert (scheduler.guidance_scale, scheduler.top_p, scheduler.top_k) == (2.0, 0.5, 0)
    assert [t.tolist() for t in scheduler.timesteps] == [[0.0], [0.0], [0.0, 1.0], [0.0, 0.5, 1.0]]
    scheduler.set_timesteps(4, refinement_steps=(2, 2, 2, 2), guidance_scale=0.0, top_k=3)
    assert scheduler.refinement_steps == (2, 2, 2, 2) and scheduler.top_k == 3 and scheduler.top_p == 0.5
    assert not scheduler.do_classifier_free_guidance
    assert tuple(scheduler.config.refinement_steps) == (1, 1, 2, 3), "a run's settings never change the config"


@pytest.mark.parametrize("scalar", [np.float32(2.5), np.float64(2.5), np.array(2.5), torch.tensor(2.5)])
def test_settings_take_any_real_scalar(scalar):
    scheduler = MoScaleScheduler()
    scheduler.set_timesteps(4, guidance_scale=scalar, top_p=scalar / 5, temperature=scalar, top_k=np.int64(3))
    assert (scheduler.guidance_scale, scheduler.top_p, scheduler.temperature, scheduler.top_k) == (2.5, 0.5, 2.5, 3)
    assert type(scheduler.guidance_scale) is float and type(scheduler.top_k) is int
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        scheduler.set_timesteps(4, guidance_scale=torch.tensor([2.5, 1.0]))  # one value, not several


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"refinement_steps": (1, 2, 5)}, "one integer >= 1 per scale"),
        ({"refinement_steps": (1, 0, 5, 10)}, "one integer >= 1 per scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be"),
        ({"top_p": 2.0}, "top_p"),
        ({"top_k": 1.5}, "top_k"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MoScaleScheduler().set_timesteps(4, **kwargs)
    if "refinement_steps" not in kwargs:
        with pytest.raises(ValueError, match=message):
            MoScaleScheduler(**kwargs)


def test_remask_takes_the_least_confident_positions_and_never_fixed_ones():
    scheduler = MoScaleScheduler(refinement_steps=(1, 1, 1, 3))
    scheduler.set_timesteps(4)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    confidence = torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.05, 0.7]])
    fixed = torch.tensor([[False, False, False, False, True, False]])
    # Step 1 of 3 (t = 0.5) on a pool of 6: round(cos(pi/4) * 6) = 4 lowest-ranked, minus the fixed one.
    masked, is_mask = scheduler.remask(ids, confidence, fixed, torch.tensor([6.0]), scale_index=3, step=1)
    assert is_mask.tolist() == [[False, True, True, True, False, False]]
    assert masked.tolist() == [[5, MASK_ID, MASK_ID, MASK_ID, 9, 10]]
    start = scheduler.initial_confidence(fixed)
    assert start.tolist() == [[0, 0, 0, 0, KEPT_CONFIDENCE, 0]]


def test_step_guides_draws_only_masked_positions_and_scores_them():
    scheduler = MoScaleScheduler(guidance_scale=2.0, guidance_decay=0.5, top_p=0.0)
    scheduler.set_timesteps(4)
    logits = torch.randn(4, 3, 5, generator=gen())  # 2 motions: conditional rows, then unconditional
    sample = torch.tensor([[MASK_ID, 1, MASK_ID], [2, MASK_ID, 3]])
    is_mask = sample == MASK_ID
    out = scheduler.step(logits, 2, sample, is_mask, generator=gen(1))
    tau = 2.0 - 0.5 * (2 - 1)
    guided = (1 + tau) * logits[:2] - tau * logits[2:]
    assert torch.allclose(out.logits, guided)
    assert torch.equal(out.prev_sample[~is_mask], sample[~is_mask]) and (out.prev_sample[is_mask] >= 0).all()
    drawn = out.prev_sample[is_mask]
    expected = guided.softmax(-1)[is_mask].gather(-1, drawn[:, None])[:, 0]
    assert torch.allclose(out.confidence[is_mask], expected)
    assert (out.confidence[~is_mask] == KEPT_CONFIDENCE).all()
    # The draw is sample_tokens on the guided logits with this run's filters: same generator, same tokens.
    assert torch.equal(drawn, sample_tokens(guided, 0, 0.0, 1.0, gen(1))[is_mask])


# ------------------------------------------------------------------------------------------- in a pipeline folder
@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def steps_taken(pipeline, **kwargs) -> list[int]:
    scales = []
    pipeline(
        PROMPTS[0],
        num_frames=80,
        generator=gen(),
        callback_on_step_end=lambda p, step, k, outputs: scales.append(k),
        **kwargs,
    )
    return scales


def test_pipeline_folder_saves_and_loads_its_scheduler(pipe, tmp_path):
    pipe.scheduler = MoScaleScheduler(refinement_steps=(1, 1, 2, 2), guidance_scale=3.0)
    try:
        before = pipe(PROMPTS, num_frames=[80, 96], generator=gen(4))
        pipe.save_pretrained(tmp_path)
    finally:
        pipe.scheduler = MoScaleScheduler.from_transformer_config(pipe.transformer.config)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["moscale.schedulers.scheduling_moscale", "MoScaleScheduler"]
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["refinement_steps"] == [1, 1, 2, 2] and saved["guidance_scale"] == 3.0

    loaded = MoScalePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, MoScaleScheduler) and loaded.scheduler.config.guidance_scale == 3.0
    assert steps_taken(loaded) == [0, 1, 2, 2, 3, 3]
    after = loaded(PROMPTS, num_frames=[80, 96], generator=gen(4))
    assert all(torch.equal(a, b) for a, b in zip(before.tokens, after.tokens))


def test_a_folder_without_scheduler_samples_with_the_transformers_recipe(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "scheduler")
    index = json.loads((tmp_path / "model_index.json").read_text())
    del index["scheduler"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))

    loaded = MoScalePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    recipe = pipe.transformer.config
    assert tuple(loaded.scheduler.config.refinement_steps) == recipe.sample_steps_per_scale
    assert loaded.scheduler.config.guidance_scale == recipe.guidance_scale
    a = pipe(PROMPTS[0], num_frames=80, generator=gen(2))
    b = loaded(PROMPTS[0], num_frames=80, generator=gen(2))
    assert torch.equal(a.features, b.features)


def test_swapping_the_scheduler_config_changes_the_schedule(pipe, tmp_path, monkeypatch):
    default = steps_taken(pipe)
    assert default == [0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
    pipe.save_pretrained(tmp_path)
    config_path = tmp_path / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(refinement_steps=[2, 1, 1, 1], guidance_scale=0.0)
    config_path.write_text(json.dumps(config))

    swapped = MoScalePipeline.from_pretrained(tmp_path)
    swapped.set_progress_bar_config(disable=True)
    assert steps_taken(swapped) == [0, 0, 1, 2, 3]
    # Guidance 0 from the config: the transformer sees only the conditional rows, as with the call argument.
    batches = []
    forward = type(swapped.transformer).forward

    def spy(self, input_ids, *args, **kwargs):
        batches.append(input_ids.shape[0])
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(swapped.transformer), "forward", spy)
    from_config = swapped(PROMPTS[0], num_frames=80, generator=gen(3))
    monkeypatch.undo()
    assert batches == [1] * 5
    from_call = pipe(PROMPTS[0], num_frames=80, guidance_scale=0.0, refinement_steps=(2, 1, 1, 1), generator=gen(3))
    assert all(torch.equal(a, b) for a, b in zip(from_config.tokens, from_call.tokens))


def test_a_scheduler_for_another_scale_count_is_refused(pipe):
    with pytest.raises(ValueError, match="need one entry per scale"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, scheduler=MoScaleScheduler(refinement_steps=(1, 2, 3)))
