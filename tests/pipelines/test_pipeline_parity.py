"""Generation parity with the authors' sampler on the parity fixture (see ../shared/data/parity/README.md, 6.3).

The pipeline is built from the fixture's official checkpoints through our converter; the fixture's random "text
features" stand in for T5, and a torch.Generator seeded as meta.json says replays the authors' random stream. The
fixture folder comes from MOSCALE_PARITY_FIXTURE (default ../shared/data/parity/fixture_a); every size is read from
the fixture's own files.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from moscale.models.convert_original_checkpoint import convert_original_checkpoint
from moscale.pipelines.pipeline_moscale import MoScalePipeline
from tests.shared_data import PARITY_FIXTURE as FIXTURE

if not (FIXTURE / "meta.json").is_file():  # shared test data, as in CI: its absence is a failure, not a skip
    raise FileNotFoundError(f"parity fixture not found at {FIXTURE}; set MOSCALE_PARITY_FIXTURE")

META = json.loads((FIXTURE / "meta.json").read_text())
TAGS = sorted(META["gen"])


@pytest.fixture(scope="module")
def tensors():
    return load_file(FIXTURE / "tensors.safetensors")


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline()


def build_pipeline() -> MoScalePipeline:
    """The pipeline from the fixture's official checkpoints, converted by our converter; no text encoder."""
    paths = META["checkpoints"]
    vq_model, transformer = convert_original_checkpoint(
        FIXTURE / paths["vq"]["path"],
        FIXTURE / paths["vq_yaml"],
        FIXTURE / paths["moscale"]["path"],
        FIXTURE / paths["moscale_yaml"],
    )
    # The authors' sampler takes any length whose coarsest scale has a token; so does the parity pipeline.
    shortest = vq_model.config.unit_length * vq_model.config.scales[0]
    pipeline = MoScalePipeline(vq_model, transformer, min_num_frames=shortest)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(pipe, tensors, tag, use_cache, step_logits=None):
    gen_meta, settings = META["gen"][tag], META["generation"]

    def record(pipeline, step, scale_index, outputs):
        if step_logits is not None:
            step_logits.append((scale_index, outputs["logits"].clone()))

    generator = torch.Generator().manual_seed(gen_meta["rng_seed"])
    return pipe(
        prompt_embeds=tensors["input.text_features"],
        prompt_attention_mask=tensors["input.text_attention_mask"],
        num_frames=tensors["input.motion_lengths"].tolist(),
        guidance_scale=settings["cond_scale"],
        refinement_steps=gen_meta["sample_level_times"],
        top_p=settings["top_p"],
        top_k=settings["top_k"],
        temperature=settings["temperature"],
        generator=generator,
        use_cache=use_cache,
        callback_on_step_end=record,
    )


@pytest.mark.parametrize("tag", TAGS)
def test_tokens_logits_and_motion_match_the_authors(pipe, tensors, tag):
    step_logits = []
    out = generate(pipe, tensors, tag, use_cache=True, step_logits=step_logits)
    num_scales = len(META["gen"][tag]["sample_level_times"])
    for k in range(num_scales):
        assert torch.equal(out.tokens[k], tensors[f"gen.{tag}.ids.scale{k}"]), f"scale {k} tokens differ"

    # Every step's CFG logits, in order, against the authors' (the README's transformer tolerance).
    expected_steps = [(k, s) for k, steps in enumerate(META["gen"][tag]["sample_level_times"]) for s in range(steps)]
    assert [k for k, _ in step_logits] == [k for k, _ in expected_steps]
    for (k, logits), (_, s) in zip(step_logits, expected_steps):
        ref = tensors[f"gen.{tag}.step.l{k}.s{s}.cfg_logits"]
        assert (logits - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item()), f"logits of scale {k} step {s}"

    # Decoded motion: the fixture keeps the decoder's output beyond a length, the pipeline zeroes it.
    ref_motion = tensors[f"gen.{tag}.motion"]
    lengths = tensors["input.motion_lengths"].tolist()
    assert out.lengths.tolist() == lengths
    for b, n in enumerate(lengths):
        assert (out.features[b, :n] - ref_motion[b, :n]).abs().max() <= 1e-4
        assert not out.features[b, n:].any()


@pytest.mark.parametrize("tag", TAGS)
def test_cached_and_uncached_sampling_agree(pipe, tensors, tag):
    cached_logits, uncached_logits = [], []
    cached = generate(pipe, tensors, tag, use_cache=True, step_logits=cached_logits)
    uncached = generate(pipe, tensors, tag, use_cache=False, step_logits=uncached_logits)
    for a, b in zip(cached.tokens, uncached.tokens):
        assert torch.equal(a, b)
    assert len(cached_logits) == len(uncached_logits) == sum(META["gen"][tag]["sample_level_times"])
    worst = max((a - b).abs().max().item() for (_, a), (_, b) in zip(cached_logits, uncached_logits))
    assert worst <= 1e-5
    assert torch.equal(cached.features, uncached.features)


def test_the_cache_is_used_on_refinement_steps(pipe, tensors, monkeypatch):
    """With (1, 2, 5, 10) every step after the first of a scale > 0 runs only that scale's tokens."""
    tag = "t1_2_5_10"
    assert tag in META["gen"], f"the parity fixture {FIXTURE} has no (1, 2, 5, 10) run"
    fed_lengths = []
    forward = type(pipe.transformer).forward

    def spy(self, input_ids, *args, **kwargs):
        fed_lengths.append((input_ids.shape[1], kwargs.get("cache") is not None))
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(pipe.transformer), "forward", spy)
    generate(pipe, tensors, tag, use_cache=True)
    sizes = pipe.transformer.config.patch_sizes
    steps = META["gen"][tag]["sample_level_times"]
    expected = []
    for k, (size, n) in enumerate(zip(sizes, steps)):
        first = size + (sizes[k - 1] if k else 0)
        expected.append((first, k >= 2))
        expected += [(size, k >= 1)] * (n - 1)
    assert fed_lengths == expected


def report() -> None:
    """Print the parity numbers quoted in docs/pipeline.md: `python -m tests.pipelines.test_pipeline_parity`."""
    tensors = load_file(FIXTURE / "tensors.safetensors")
    pipeline = build_pipeline()
    lengths = tensors["input.motion_lengths"].tolist()
    for tag in TAGS:
        step_logits = []
        out = generate(pipeline, tensors, tag, use_cache=True, step_logits=step_logits)
        schedule = META["gen"][tag]["sample_level_times"]
        steps = [(k, s) for k, n in enumerate(schedule) for s in range(n)]
        worst_logit = max(
            (logits - tensors[f"gen.{tag}.step.l{k}.s{s}.cfg_logits"]).abs().max().item()
            for (k, logits), (_, s) in zip(step_logits, steps)
        )
        ref = tensors[f"gen.{tag}.motion"]
        worst_motion = max((out.features[b, :n] - ref[b, :n]).abs().max().item() for b, n in enumerate(lengths))
        same = all(torch.equal(out.tokens[k], tensors[f"gen.{tag}.ids.scale{k}"]) for k in range(len(schedule)))
        print(
            f"{FIXTURE.name} {tag}: tokens identical {same}; worst step logit diff {worst_logit:.2g}; "
            f"worst motion diff {worst_motion:.2g} (motion max {ref.abs().max().item():.1f})"
        )


if __name__ == "__main__":
    report()
