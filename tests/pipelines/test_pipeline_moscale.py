"""MoScalePipeline end to end, offline: the real T5 tokenizer, a tiny T5 encoder built from a config, tiny models."""

import base64
import io
import json
import warnings

import numpy as np
import pytest
import torch

from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from moscale.pipelines.pipeline_moscale import MoScalePipeline, MoScalePipelineOutput, PromptTruncationWarning
from tests.helpers import TINY_T5_CONFIG, TINY_VQ_CONFIG, tiny_pipeline

PROMPTS = ["a person jumps twice", "someone walks in a circle"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ end to end
def test_text_to_motion_shapes_lengths_and_padding(pipe):
    out = pipe(PROMPTS, num_frames=[120, 80], generator=gen())
    assert isinstance(out, MoScalePipelineOutput)
    assert out.features.shape == (2, 120, 263) and out.joints.shape == (2, 120, 22, 3)
    assert out.lengths.tolist() == [120, 80]
    sizes, scales = pipe.transformer.config.patch_sizes, pipe.vq_model.config.scales
    for tokens, size, scale in zip(out.tokens, sizes, scales):
        assert tokens.shape == (2, size)
        valid = torch.arange(size)[None] < (out.lengths // 4 // scale)[:, None]
        assert (tokens[valid] >= 0).all() and (tokens[~valid] == -1).all()
    assert not out.features[1, 80:].any() and not out.joints[1, 80:].any()
    assert out.features[1, :80].abs().sum(-1).gt(0).all()
    assert torch.isfinite(out.joints).all()


def test_same_generator_same_motion_and_a_new_seed_differs(pipe):
    a = pipe(PROMPTS[0], num_frames=96, generator=gen(3))
    b = pipe(PROMPTS[0], num_frames=96, generator=gen(3))
    c = pipe(PROMPTS[0], num_frames=96, generator=gen(4))
    assert torch.equal(a.features, b.features) and all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))
    assert not all(torch.equal(x, y) for x, y in zip(a.tokens, c.tokens))


def test_prompt_embeds_give_the_same_motion_as_the_prompt(pipe):
    states, mask = pipe.encode_prompt(PROMPTS, torch.device("cpu"))
    assert states.shape == (2, pipe.transformer.config.max_text_length, 32)
    assert mask.sum(-1).tolist() == [len(pipe.tokenizer(p).input_ids) for p in PROMPTS]
    a = pipe(PROMPTS, num_frames=80, generator=gen())
    b = pipe(prompt_embeds=states, prompt_attention_mask=mask, num_frames=80, generator=gen())
    assert torch.equal(a.features, b.features)


def test_num_frames_as_a_tensor(pipe):
    a = pipe(PROMPTS, num_frames=torch.tensor([80, 120]), generator=gen())
    b = pipe(PROMPTS, num_frames=np.array([80, 120]), generator=gen())
    assert a.lengths.tolist() == [80, 120] and torch.equal(a.features, b.features)


def test_num_motions_per_prompt_is_prompt_major(pipe):
    out = pipe(PROMPTS, num_frames=[80, 120], num_motions_per_prompt=2, generator=gen())
    assert out.lengths.tolist() == [80, 80, 120, 120]
    assert out.features.shape[0] == 4 and not out.features[:2, 80:].any()


def test_one_multinomial_draw_per_scale_and_step(pipe, monkeypatch):
    calls = []
    real = torch.multinomial

    def spy(probs, *args, **kwargs):
        calls.append(tuple(probs.shape))
        return real(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", spy)
    pipe(PROMPTS, num_frames=80, refinement_steps=(1, 2, 3, 4), generator=gen())
    sizes = pipe.transformer.config.patch_sizes
    assert calls == [(2 * size, 32) for size, n in zip(sizes, (1, 2, 3, 4)) for _ in range(n)]


def test_guidance_zero_runs_only_the_conditional_branch(pipe, monkeypatch):
    batches = []
    forward = type(pipe.transformer).forward

    def spy(self, input_ids, *args, **kwargs):
        batches.append(input_ids.shape[0])
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(pipe.transformer), "forward", spy)
    pipe(PROMPTS, num_frames=80, guidance_scale=0.0, refinement_steps=(1, 1, 1, 1), generator=gen())
    assert batches == [2] * 4
    batches.clear()
    pipe(PROMPTS, num_frames=80, guidance_scale=2.0, refinement_steps=(1, 1, 1, 1), generator=gen())
    assert batches == [4] * 4


def test_cached_and_uncached_give_the_same_tokens(pipe):
    a = pipe(PROMPTS, num_frames=[120, 64], generator=gen(5), use_cache=True)
    b = pipe(PROMPTS, num_frames=[120, 64], generator=gen(5), use_cache=False)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))


def test_output_types_and_tuple_return(pipe):
    latent = pipe(PROMPTS[0], num_frames=80, output_type="latent", generator=gen())
    assert latent.features is None and latent.joints is None and len(latent.tokens) == 4
    as_np = pipe(PROMPTS[0], num_frames=80, output_type="np", generator=gen())
    assert isinstance(as_np.features, np.ndarray) and isinstance(as_np.joints, np.ndarray)
    as_tuple = pipe(PROMPTS[0], num_frames=80, return_dict=False, generator=gen())
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 4
    np.testing.assert_array_equal(as_tuple[0].numpy(), as_np.features)


def test_callback_sees_every_step(pipe):
    seen = []

    def callback(pipeline, step, scale_index, outputs):
        seen.append((step, scale_index, tuple(outputs["tokens"].shape)))
        return outputs

    pipe(PROMPTS[0], num_frames=80, refinement_steps=(1, 2, 1, 2), generator=gen(), callback_on_step_end=callback)
    sizes = pipe.transformer.config.patch_sizes
    assert seen == [
        (0, 0, (1, sizes[0])),
        (1, 1, (1, sizes[1])),
        (2, 1, (1, sizes[1])),
        (3, 2, (1, sizes[2])),
        (4, 3, (1, sizes[3])),
        (5, 3, (1, sizes[3])),
    ]


def test_progress_bar_counts_every_refinement_step(pipe):
    stream = io.StringIO()
    pipe.set_progress_bar_config(file=stream, disable=False)
    try:
        pipe(PROMPTS[0], num_frames=80, refinement_steps=(1, 2, 1, 3), generator=gen())
    finally:
        pipe.set_progress_bar_config(disable=True)
    assert "7/7" in stream.getvalue() and "8/7" not in stream.getvalue()


def test_default_num_frames_without_a_length_estimator(pipe):
    out = pipe(PROMPTS[0], generator=gen())
    assert out.lengths.tolist() == [pipe.config.default_num_frames]


def test_without_statistics_features_stay_normalised_and_joints_are_none(pipe):
    bare = MoScalePipeline(pipe.vq_model, pipe.transformer, pipe.text_encoder, pipe.tokenizer)
    bare.set_progress_bar_config(disable=True)
    a = bare(PROMPTS[0], num_frames=80, generator=gen())
    b = pipe(PROMPTS[0], num_frames=80, generator=gen())
    assert pipe.has_motion_statistics and not bare.has_motion_statistics
    assert a.joints is None
    assert torch.allclose(pipe.denormalize(a.features)[0, :80], b.features[0, :80], atol=1e-5)


def test_bfloat16_pipeline_generates_and_edits():
    low = tiny_pipeline().to(dtype=torch.bfloat16)
    assert low.transformer.dtype == torch.bfloat16 and low.vq_model.dtype == torch.bfloat16
    out = low(PROMPTS, num_frames=80, generator=gen())
    assert out.features.dtype == torch.float32 and torch.isfinite(out.joints).all()
    assert all(((t >= 0) | (t == -1)).all() for t in out.tokens)
    again = low(PROMPTS, num_frames=80, generator=gen())
    assert torch.equal(out.features, again.features)
    edited = low(PROMPTS[0], num_frames=120, source_motion=out.features[0], generator=gen())
    assert torch.equal(edited.features[0, :70], out.features[0, :70])


# ----------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_gives_identical_samples(pipe, tmp_path):
    before = pipe(PROMPTS, num_frames=[96, 120], generator=gen(11))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "MoScalePipeline"
    assert index["vq_model"] == ["moscale.models.modeling_moscale_vq", "MoScaleVQModel"]
    assert index["transformer"] == ["moscale.models.modeling_moscale", "MoScaleForTextToMotion"]
    assert index["text_encoder"] == ["transformers", "T5EncoderModel"]
    assert len(index["motion_mean"]) == 263
    card = (tmp_path / "README.md").read_text()
    assert "MoScale" in card and "library_name: diffusers" in card

    loaded = MoScalePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    after = loaded(PROMPTS, num_frames=[96, 120], generator=gen(11))
    assert torch.equal(before.features, after.features) and torch.equal(before.joints, after.joints)
    assert all(torch.equal(x, y) for x, y in zip(before.tokens, after.tokens))


# ------------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "non-empty string"),
        ({"prompt": "   "}, "non-empty string"),
        ({"prompt": []}, "empty list"),
        ({"prompt": None}, "exactly one of prompt and prompt_embeds"),
        ({"num_frames": 82}, "multiple of 4"),
        ({"num_frames": 36}, "between 40 and 196"),
        ({"num_frames": 200}, "generate_long"),
        ({"num_frames": [80, 80]}, "one per prompt"),
        ({"guidance_scale": -1.0}, "guidance_scale must be"),
        ({"refinement_steps": (1, 2, 5)}, "one integer >= 1 per scale"),
        ({"refinement_steps": (1, 2, 0, 10)}, "one integer >= 1 per scale"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_motions_per_prompt": 0}, "num_motions_per_prompt"),
        ({"output_type": "pil"}, "output_type"),
        ({"generator": [torch.Generator()]}, "one torch.Generator"),
        ({"edit_mask": np.ones(80, dtype=bool)}, "need a source_motion"),
        ({"prompt_attention_mask": torch.ones(1, 20)}, "goes with prompt_embeds"),
        ({"num_frames": 80.0}, "integer multiple of 4"),
        ({"refinement_steps": 3}, "one integer >= 1 per scale"),
        ({"top_p": "0.9"}, "top_p"),
        ({"prompt": None, "prompt_embeds": torch.randn(20, 32)}, r"prompt_embeds must be a \(batch, tokens, 32\)"),
        ({"prompt": None, "prompt_embeds": torch.randn(1, 20, 16)}, r"tensor, got \(1, 20, 16\)"),
        (
            {"prompt": None, "prompt_embeds": torch.randn(1, 20, 32), "prompt_attention_mask": torch.ones(1, 10)},
            r"prompt_attention_mask must be a \(1, 20\) .* got \(1, 10\)",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(pipe, kwargs, message):
    call = {"prompt": PROMPTS[0], "num_frames": 80, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(**call)


@pytest.mark.parametrize(
    ("prompt", "shown"),
    [(5, "5 (int)"), (b"a person walks", "b'a person walks' (bytes)"), ({"a person walks": 1}, "{'a person walks': 1} (dict)"),
     (["a person walks", None], "['a person walks', None] (list)")],
)  # fmt: skip
def test_a_prompt_that_is_not_text_is_refused(pipe, prompt, shown):
    with pytest.raises(TypeError) as raised:
        pipe(prompt, num_frames=80)
    assert str(raised.value) == f"prompt must be a string or a list of strings, got {shown}"
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings"):
        pipe.generate_long(prompt, num_frames=80)


def test_a_prompt_longer_than_max_text_length_is_cut_with_a_warning(pipe):
    long_prompt = "a person walks forward slowly, then turns to the left and waves with both hands above the head"
    count = len(pipe.tokenizer(long_prompt).input_ids)
    assert count > pipe.transformer.config.max_text_length == 20
    with pytest.warns(PromptTruncationWarning) as warned:
        cut = pipe([PROMPTS[0], long_prompt], num_frames=80, generator=gen(), output_type="latent")
    assert [str(w.message) for w in warned] == [
        f"prompt 1 has {count} tokens: only the first 20 tokens of a prompt are kept (the transformer's "
        "max_text_length, as in its training), so the rest has no effect; shorten the prompt"
    ]
    # What was kept is what the sampler used: the first 20 tokens give the same motion.
    kept = pipe.tokenizer.decode(pipe.tokenizer(long_prompt, max_length=20, truncation=True).input_ids[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncationWarning)  # the kept part alone is not cut again
        same = pipe([PROMPTS[0], kept], num_frames=80, generator=gen(), output_type="latent")
    assert all(torch.equal(a, b) for a, b in zip(cut.tokens, same.tokens))


@pytest.mark.parametrize("scale", [np.float32(2.0), np.float64(2.0), np.array(2.0), torch.tensor(2.0)])
def test_guidance_scale_takes_any_real_scalar(pipe, scale):
    expected = pipe(PROMPTS[0], num_frames=80, guidance_scale=2.0, generator=gen(), output_type="latent")
    out = pipe(PROMPTS[0], num_frames=80, guidance_scale=scale, generator=gen(), output_type="latent")
    assert all(torch.equal(a, b) for a, b in zip(out.tokens, expected.tokens))


def test_statistics_that_are_not_finite_or_not_positive_are_refused_at_construction(pipe):
    mean, std = np.zeros(263), np.ones(263)
    mean[[5, 40]] = np.nan
    with pytest.raises(ValueError) as raised:
        MoScalePipeline(pipe.vq_model, pipe.transformer, motion_mean=mean, motion_std=std)
    assert str(raised.value) == (
        "motion_mean is NaN or infinite at feature(s) [5, 40]: the statistics must be finite; recompute Mean.npy "
        "and Std.npy from the training data"
    )
    std[7] = np.inf
    with pytest.raises(ValueError, match=r"motion_std is NaN or infinite at feature\(s\) \[7\]"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, motion_mean=np.zeros(263), motion_std=std)
    std[7], std[100] = 0.0, -1.0
    with pytest.raises(ValueError, match=r"motion_std is 0 or negative at feature\(s\) \[7, 100\]: normalising"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, motion_mean=np.zeros(263), motion_std=std)
    with pytest.raises(TypeError, match="motion_mean must be 263 numbers"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, motion_mean=["0"] * 263, motion_std=np.ones(263))


def test_a_text_encoder_of_another_width_is_refused_at_construction(pipe):
    from transformers import T5Config, T5EncoderModel

    wide = T5EncoderModel(T5Config(vocab_size=len(pipe.tokenizer), **{**TINY_T5_CONFIG, "d_model": 48}))
    with pytest.raises(ValueError) as raised:
        MoScalePipeline(pipe.vq_model, pipe.transformer, text_encoder=wide, tokenizer=pipe.tokenizer)
    assert str(raised.value).startswith(
        "the text encoder's hidden states have 48 features, but the transformer reads text_dim=32"
    )


def test_a_bad_model_index_value_is_refused_on_load(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**model_index, "default_num_frames": "120"}))
    with pytest.raises(TypeError) as raised:
        MoScalePipeline.from_pretrained(tmp_path)
    assert str(raised.value) == (
        "MoScalePipeline: default_num_frames must be an integer >= 1, got '120' (str); correct it in the "
        "model_index.json it was loaded from, or in the argument passed"
    )


def test_loading_a_missing_folder_or_a_damaged_component_says_so(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"MoScalePipeline.from_pretrained: the folder {tmp_path / 'x'} does"):
        MoScalePipeline.from_pretrained(tmp_path / "x")
    pipe.save_pretrained(tmp_path / "saved")
    weights = tmp_path / "saved" / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(OSError) as raised:
        MoScalePipeline.from_pretrained(tmp_path / "saved")
    assert str(raised.value).startswith(
        f"MoScalePipeline.from_pretrained('{tmp_path / 'saved'}'): the weights file {weights} (component "
        "'text_encoder') is damaged or incomplete (safetensors: "
    )


def test_mismatched_components_are_rejected(pipe):
    other_vq = MoScaleVQModel(MoScaleVQConfig(**{**TINY_VQ_CONFIG, "num_codes": 64}))
    with pytest.raises(ValueError, match="disagree on num_codes"):
        MoScalePipeline(other_vq, pipe.transformer)
    with pytest.raises(ValueError, match="263 values"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, motion_mean=[0.0] * 10, motion_std=[1.0] * 10)
    with pytest.raises(ValueError, match="pass both"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, motion_mean=[0.0] * 263)
    with pytest.raises(ValueError, match="min_num_frames=30 must be a multiple of 4 between 32 and 196"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, min_num_frames=30)
    with pytest.raises(ValueError, match="below min_num_frames"):
        MoScalePipeline(pipe.vq_model, pipe.transformer, default_num_frames=40, min_num_frames=60)


def test_no_text_encoder_needs_prompt_embeds(pipe):
    bare = MoScalePipeline(pipe.vq_model, pipe.transformer)
    with pytest.raises(ValueError, match="pass prompt_embeds"):
        bare("a person waves", num_frames=80)


# ------------------------------------------------------------------------------------------------- push to hub
def test_push_to_hub_uploads_a_loadable_pipeline_folder(pipe, tmp_path, monkeypatch):
    """The hub client runs for real; only its HTTP transport is replaced by a fake Hub that records the commit."""
    import httpx2  # huggingface-hub's own HTTP library, always installed with it
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    committed = {}
    repo = "me/tiny-moscale"

    def fake_hub(request):
        path = request.url.path
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if path == "/api/models/me/tiny-moscale/preupload/main":
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if path == "/api/models/me/tiny-moscale/commit/main":
            for line in request.content.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            oid = "0" * 40
            commit_url = f"https://huggingface.co/{repo}/commit/{oid}"
            return httpx2.Response(200, json={"commitUrl": commit_url, "commitOid": oid})
        return httpx2.Response(404, json={"error": f"no route {path}"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake_hub)))
    try:
        url = pipe.push_to_hub("me/tiny-moscale", token="hf_not_a_real_token")
    finally:
        _http.set_client_factory(_http.default_client_factory)

    assert url.startswith("https://huggingface.co/me/tiny-moscale/commit/")
    expected = {
        "model_index.json",
        "README.md",
        "vq_model/config.json",
        "vq_model/model.safetensors",
        "transformer/config.json",
        "transformer/model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
        "tokenizer/tokenizer.json",
    }
    assert expected <= set(committed), sorted(committed)
    assert b"MoScale text-to-motion pipeline" in committed["README.md"]

    # The uploaded bytes form a folder that loads and samples exactly like the pushed pipeline.
    for name, content in committed.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    loaded = MoScalePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    a = pipe(PROMPTS[0], num_frames=80, generator=gen(2))
    b = loaded(PROMPTS[0], num_frames=80, generator=gen(2))
    assert torch.equal(a.features, b.features)


# ------------------------------------------------------------------------------------------------ device sync
def test_the_scale_loop_never_reads_tensors_back_to_the_host(pipe, monkeypatch):
    """Every tensor -> Python conversion made by pipeline, scheduler, editing or model code inside the scale loop
    (the block of `__call__` that runs under its progress bar): none."""
    import contextlib
    import sys

    import moscale.models.modeling_moscale
    import moscale.models.modeling_moscale_vq
    import moscale.pipelines.editing
    import moscale.pipelines.pipeline_moscale as module
    import moscale.schedulers.scheduling_moscale

    watched = (
        module,
        moscale.pipelines.editing,
        moscale.schedulers.scheduling_moscale,
        moscale.models.modeling_moscale,
        moscale.models.modeling_moscale_vq,
    )
    watched_files = {watched_module.__file__ for watched_module in watched}

    inside_loop = []
    host_reads = []
    for name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if inside_loop and sys._getframe(1).f_code.co_filename in watched_files:
                host_reads.append((_name, sys._getframe(1).f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    progress_bar = module.MoScalePipeline.progress_bar

    @contextlib.contextmanager
    def flagged(self, *args, **kwargs):
        inside_loop.append(True)
        try:
            with progress_bar(self, *args, **kwargs) as bar:
                yield bar
        finally:
            inside_loop.clear()

    monkeypatch.setattr(module.MoScalePipeline, "progress_bar", flagged)
    out = pipe(PROMPTS, num_frames=[120, 80], generator=gen())
    source = out.features[0, :120]
    pipe(PROMPTS[0], num_frames=160, source_motion=source, generator=gen())
    assert host_reads == []
    # The spy has teeth: decoding (after the loop) reads the longest length back, and is caught when flagged.
    inside_loop.append(True)
    pipe.decode_tokens(out.tokens, out.lengths)
    inside_loop.clear()
    assert "__int__" in [name for name, _ in host_reads]


def test_other_scale_counts_sample_with_the_transformers_own_schedule():
    """Three scales: refinement_steps defaults to the transformer's sample_steps_per_scale, not the paper's four."""
    pipe = tiny_pipeline(scales=(4, 2, 1), sample_steps_per_scale=(1, 2, 3), min_num_frames=16)
    steps = []
    out = pipe(
        prompt_embeds=torch.randn(1, 20, 32), num_frames=96, generator=gen(),
        callback_on_step_end=lambda p, step, scale, outputs: steps.append(scale),
    )  # fmt: skip
    assert steps == [0, 1, 1, 2, 2, 2]
    assert [t.shape[1] for t in out.tokens] == [12, 24, 49]
