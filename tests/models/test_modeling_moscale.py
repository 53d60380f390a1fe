import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from moscale.models.modeling_moscale import (
    MASK_ID,
    PAD_ID,
    MoScaleConfig,
    MoScaleForTextToMotion,
    MoScaleKVCache,
    apply_interleaved_rope,
    level_of_position,
    rope_tables,
    scale_normalized_rope_angles,
)

TINY = dict(
    num_codes=16,
    code_dim=8,
    condition_dim=32,
    text_pool_head_dim=16,
    hidden_size=32,
    num_layers=2,
    num_attention_heads=2,
    text_dim=12,
    max_text_length=6,
    max_motion_length=64,
    dropout=0.0,
)
# Patch sizes (2, 4, 8, 16): 30 tokens, 2 start tokens, 28 positions with previous-scale features.


def tiny_model(seed: int = 0, **overrides) -> MoScaleForTextToMotion:
    torch.manual_seed(seed)
    return MoScaleForTextToMotion(MoScaleConfig(**{**TINY, **overrides})).eval()


def inputs(seed: int = 0, batch: int = 2, text_lengths=(6, 3)):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 16, (batch, 30), generator=generator)
    ids[:, ::5] = MASK_ID
    ids[1, 26:] = PAD_ID
    text_mask = (torch.arange(6)[None] < torch.tensor(text_lengths)[:, None]).long()
    return {
        "input_ids": ids,
        "prev_scale_features": torch.randn(batch, 28, 8, generator=generator),
        "text_hidden_states": torch.randn(batch, 6, 12, generator=generator),
        "text_attention_mask": text_mask,
    }


def test_config_defaults_are_the_paper_model():
    config = MoScaleConfig()
    assert (config.num_layers, config.hidden_size, config.num_attention_heads) == (16, 768, 8)
    assert (config.condition_dim, config.text_dim, config.max_text_length) == (384, 768, 20)
    assert config.patch_sizes == (6, 12, 24, 49) and config.sequence_length == 91
    assert [config.guidance_scale_at(k) for k in range(4)] == [5.25, 5.0, 4.75, 4.5]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"condition_dim": 40}, "multiple of text_pool_head_dim"),
        ({"num_attention_heads": 3}, "heads"),
        ({"hidden_size": 24, "num_attention_heads": 4}, "multiple of 4"),
        ({"scales": (2, 4, 1)}, "strictly decreasing"),
        ({"max_motion_length": 62}, "multiple of unit_length"),
        ({"sample_steps_per_scale": (1, 2)}, "one entry per scale"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        MoScaleConfig(**{**TINY, **overrides})


@torch.no_grad()
def test_forward_shapes_and_loss():
    model = tiny_model()
    batch = inputs()
    out = model(**batch, output_hidden_states=True)
    assert out.logits.shape == (2, 30, 16) and out.loss is None
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 30, 32)
    assert out.text_conditioning.start_tokens.shape == (2, 2, 32)
    assert out.text_conditioning.condition.shape == (2, 1, 32)
    labels = torch.full((2, 30), MASK_ID)
    labels[:, 3:9] = torch.randint(0, 16, (2, 6))
    with_labels = model(**batch, labels=labels)
    expected = F.cross_entropy(out.logits[:, 3:9].reshape(-1, 16), labels[:, 3:9].reshape(-1))
    torch.testing.assert_close(with_labels.loss, expected)
    as_tuple = model(**batch, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits)


@torch.no_grad()
def test_attention_is_block_causal_over_scales():
    model = tiny_model()
    batch = inputs(1)
    base = model(**batch).logits
    levels = level_of_position(model.config.patch_sizes)
    changed = {**batch, "input_ids": batch["input_ids"].clone()}
    changed["input_ids"][:, levels == 2] = 3  # change scale 2 only
    logits = model(**changed).logits
    assert torch.equal(logits[:, levels < 2], base[:, levels < 2]), "coarser scales must not see finer ones"
    assert not torch.allclose(logits[:, levels >= 2], base[:, levels >= 2])


@torch.no_grad()
def test_padded_text_rows_are_ignored_and_uncond_rows_replace_text():
    model = tiny_model()
    batch = inputs(2)
    base = model(**batch).logits
    noisy = {**batch, "text_hidden_states": batch["text_hidden_states"].clone()}
    noisy["text_hidden_states"][1, 3:] = 1e3  # rows beyond sample 1's 3 tokens
    assert torch.equal(model(**noisy).logits, base)

    drop = torch.tensor([False, True])
    dropped = model(**batch, drop_text=drop).logits
    other_text = {**batch, "text_hidden_states": torch.randn(2, 6, 12)}
    dropped_other = model(**other_text, drop_text=drop).logits
    torch.testing.assert_close(dropped[1], dropped_other[1])  # unconditional sample ignores the caption
    assert not torch.allclose(dropped[0], dropped_other[0])
    assert not torch.allclose(dropped[1], base[1])


@torch.no_grad()
def test_kv_cache_matches_full_forward_and_keeps_its_prefix():
    model = tiny_model()
    batch = inputs(3)
    text = model.encode_text(batch["text_hidden_states"], batch["text_attention_mask"])
    ids, feats = batch["input_ids"], batch["prev_scale_features"]
    full = model(ids, feats, text_conditioning=text).logits
    # Prefix = start scale + scales 1 and 2 (positions 0..13), current = scale 3 (positions 14..29).
    prefix = model(ids[:, :14], feats[:, :12], text_conditioning=text, use_cache=True)
    cache = prefix.cache
    assert isinstance(cache, MoScaleKVCache) and cache.length == 14 and len(cache) == 2
    assert cache[0][0].shape == (2, 2, 14, 16)
    prefix_kv = [(k.clone(), v.clone()) for k, v in (cache[layer] for layer in range(len(cache)))]
    torch.testing.assert_close(prefix.logits, full[:, :14], atol=1e-5, rtol=1e-5)
    for _ in range(2):  # the same prefix cache serves several refinement steps
        step = model(ids[:, 14:], feats[:, 12:], text_conditioning=text, cache=cache)
        torch.testing.assert_close(step.logits, full[:, 14:], atol=1e-5, rtol=1e-5)
        assert cache.length == 14 and step.cache is None
    grown = model(ids[:, 14:], feats[:, 12:], text_conditioning=text, cache=cache, use_cache=True).cache
    assert grown.length == 30 and cache.length == 14
    for layer, (keys, values) in enumerate(prefix_kv):  # forwards run against a cache never touch its prefix
        assert torch.equal(cache[layer][0], keys) and torch.equal(cache[layer][1], values)
    # First step of a scale computed with the previous scale's final ids, then cropped to the prefix.
    regrown = model(ids[:, 6:], feats[:, 4:], text_conditioning=text, cache=cache.crop(6), use_cache=True)
    cropped = regrown.cache.crop(14)
    for layer, (keys, values) in enumerate(prefix_kv):
        torch.testing.assert_close(cropped[layer][0], keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cropped[layer][1], values, atol=1e-5, rtol=1e-5)
    # A cache of the start tokens only (positions 0..1), then all other scales at once.
    start_cache = model(ids[:, :2], None, text_conditioning=text, use_cache=True).cache
    rest = model(ids[:, 2:], feats, text_conditioning=text, cache=start_cache).logits
    torch.testing.assert_close(rest, full[:, 2:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="whole scales"):
        model(ids[:, :1], None, text_conditioning=text)
    with pytest.raises(ValueError, match="whole scales"):
        model(ids[:, 14:20], feats[:, 12:18], text_conditioning=text, cache=cache)
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(20)


@torch.no_grad()
def test_logits_to_keep_gives_the_last_positions_logits():
    model = tiny_model()
    batch = inputs(4)
    full = model(**batch).logits
    last = model(**batch, logits_to_keep=16).logits
    assert last.shape == (2, 16, 16)
    torch.testing.assert_close(last, full[:, -16:], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(**batch, labels=batch["input_ids"], logits_to_keep=16)


@torch.no_grad()
def test_text_conditioning_holds_each_blocks_text_terms():
    """The per-block AdaLN vectors, cross-attention keys/values and the head's AdaLN vectors are those the blocks and
    the head would compute themselves."""
    model = tiny_model()
    batch = inputs(5)
    text = model.encode_text(batch["text_hidden_states"], batch["text_attention_mask"])
    assert len(text.block_modulations) == len(text.cross_key_values) == len(model.blocks)
    for ours, reference in zip(text.head_modulation, model.head_adaln_modulation(F.silu(text.condition)).chunk(2, -1)):
        assert torch.equal(ours, reference)
    for block, modulation, (keys, values) in zip(model.blocks, text.block_modulations, text.cross_key_values):
        for ours, reference in zip(modulation, block.modulation(text.condition)):
            assert torch.equal(ours, reference)
        kv = text.memory @ block.cross_attn.kv_proj.weight.T
        width = model.config.hidden_size
        heads = model.config.num_attention_heads
        expected_keys = kv[..., :width].view(2, 6, heads, -1).transpose(1, 2)
        expected_values = (kv[..., width:] + block.cross_attn.v_bias).view(2, 6, heads, -1).transpose(1, 2)
        torch.testing.assert_close(keys, expected_keys, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(values, expected_values, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [4, 12, 36, 48, 96])
def test_rope_is_bit_identical_to_the_pairwise_rotation(head_dim, dtype):
    """The complex-number form rotates every pair (e, o) to exactly the pairwise formula's (e cos - o sin,
    e sin + o cos): same products, same sums, same rounding, for head sizes whose pair count leaves a remainder
    after the vector width too (4, 12, 36) and on the strided query/key views the attention passes."""
    generator = torch.Generator().manual_seed(head_dim)
    angles_Lh = scale_normalized_rope_angles((3, 6, 12), head_dim)
    cos_Ld, sin_Ld = rope_tables(angles_Lh, dtype)
    qkv_BL3Hd = torch.randn(2, 21, 3, 5, head_dim, generator=generator).to(dtype)
    rotated = apply_interleaved_rope(qkv_BL3Hd[:, :, :2], cos_Ld[:, None, None], sin_Ld[:, None, None])
    even, odd = qkv_BL3Hd[:, :, :2, :, 0::2], qkv_BL3Hd[:, :, :2, :, 1::2]
    cos_Lh, sin_Lh = (t.to(dtype)[:, None, None] for t in (angles_Lh.cos(), angles_Lh.sin()))
    assert torch.equal(rotated[..., 0::2], even * cos_Lh - odd * sin_Lh)
    assert torch.equal(rotated[..., 1::2], even * sin_Lh + odd * cos_Lh)


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    batch = inputs()
    with pytest.raises(ValueError, match="input_ids must be codes"):
        model(**{**batch, "input_ids": batch["input_ids"] + 100})
    with pytest.raises(ValueError, match="prev_scale_features must have shape"):
        model(**{**batch, "prev_scale_features": batch["prev_scale_features"][:, :5]})
    with pytest.raises(ValueError, match="max_text_length"):
        model(**{**batch, "text_hidden_states": torch.randn(2, 8, 12), "text_attention_mask": torch.ones(2, 8)})
    with pytest.raises(ValueError, match="left-aligned"):
        model(**{**batch, "text_attention_mask": batch["text_attention_mask"].flip(-1)})
    with pytest.raises(ValueError, match="at least one token"):
        model(**{**batch, "text_attention_mask": torch.zeros(2, 6)})
    with pytest.raises(ValueError, match="text_hidden_states must be"):
        model(**{**batch, "text_hidden_states": torch.randn(2, 6, 5)})
    with pytest.raises(ValueError, match="outside the 30-token sequence"):
        model(**{**batch, "input_ids": torch.zeros(2, 31, dtype=torch.long)})
    with pytest.raises(ValueError, match="labels must have the shape"):
        model(**batch, labels=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="pass text_hidden_states"):
        model(batch["input_ids"], batch["prev_scale_features"])
    with pytest.raises(ValueError, match="drop_text must have shape"):
        model(**batch, drop_text=torch.tensor([True]))


def test_corrupt_tokens_follows_the_training_recipe():
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 16, (4000, 30), generator=generator)
    clean[:, 25:] = PAD_ID
    input_ids, labels = model.corrupt_tokens(clean, torch.Generator().manual_seed(1))
    target = labels != MASK_ID
    assert torch.equal(labels[target], clean[target])
    # round(L * ratio) >= 1 positions are drawn over all L positions, padding included (the authors' rule), so
    # short samples can end up without targets; long ones never do.
    assert target.sum(-1).max() <= 25
    assert not bool(target[:, 25:].any()) and bool((input_ids[:, 25:] == PAD_ID).all()), "padding is never touched"
    masked = input_ids == MASK_ID
    assert not bool((masked & ~target).any()), "[MASK] only at targets"
    share_masked = (masked & target).sum() / target.sum()
    share_changed = (target & ~masked & (input_ids != clean)).sum() / target.sum()
    assert 0.77 < share_masked < 0.83  # 80 %
    assert 0.08 < share_changed < 0.13  # 10 % random (+ the augmentation on the kept 10 %)
    # Extra random replacement of non-target tokens: at most 10 %, about 5 % on average over batches.
    non_target_changed = (~target & (input_ids != clean))[:, :25].float().mean()
    assert 0.0 < non_target_changed < 0.1 * 15 / 16 + 0.01
    again = model.corrupt_tokens(clean, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], input_ids) and torch.equal(again[1], labels), "a generator makes it reproducible"


def test_prepare_training_inputs_and_text_dropout():
    model = tiny_model()
    codes = [torch.randint(0, 16, (3, n)) for n in model.config.patch_sizes]
    f_hats = [torch.randn(3, 8, 16) for _ in codes]
    batch = model.prepare_training_inputs(codes, f_hats, torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape == (3, 30) and batch["labels"].shape == (3, 30)
    assert batch["prev_scale_features"].shape == (3, 28, 8)
    expected = F.interpolate(f_hats[0], 4, mode="area").transpose(1, 2)
    torch.testing.assert_close(batch["prev_scale_features"][:, :4], expected)
    assert batch["drop_text"].shape == (3,) and batch["drop_text"].dtype == torch.bool
    rate = model.sample_text_dropout(20000, torch.Generator().manual_seed(0)).float().mean()
    assert 0.09 < rate < 0.11
    with pytest.raises(ValueError, match="codes cover"):
        model.prepare_training_inputs(codes[:3], f_hats)


def test_training_step_backpropagates_to_every_trained_part():
    model = tiny_model().train()
    batch = inputs(4)
    batch["labels"] = torch.where(batch["input_ids"] == MASK_ID, 5, MASK_ID)
    out = model(**batch, drop_text=torch.tensor([True, False]))
    out.loss.backward()
    trained = ["uncond_text_embedding", "token_embedding", "mask_token_embedding", "head.weight"]
    for name in trained + ["text_pool.query_tokens"]:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@torch.no_grad()
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model(5)
    batch = inputs(5)
    model.save_pretrained(tmp_path)
    loaded = MoScaleForTextToMotion.from_pretrained(tmp_path).eval()
    assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    auto = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(auto, MoScaleForTextToMotion)
    assert torch.equal(auto(**batch).logits, model(**batch).logits)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, MoScaleConfig) and config.patch_sizes == (2, 4, 8, 16)


def test_fresh_model_uses_the_authors_initialisation():
    model = tiny_model(6)
    std = (1 / 32 / 3) ** 0.5
    assert 0.5 * std * 0.02 < model.head.weight.std() < 1.5 * std * 0.02
    assert not bool(model.head.bias.any())
    gammas = model.blocks[0].adaln_modulation.weight[: 2 * 32]
    assert gammas.abs().max() < 6 * std * 1e-5
    assert model.blocks[0].adaln_modulation.weight[2 * 32 :].std() > 0.3 * std
    generator = torch.Generator().manual_seed(0)
    uncond = torch.nn.init.trunc_normal_(torch.empty(6, 12), std=1.2, generator=generator) / 12**0.5
    torch.testing.assert_close(model.uncond_text_embedding.detach(), uncond)


@torch.no_grad()
def test_bfloat16_model_runs_and_stays_close_to_float32():
    model = tiny_model(7)
    batch = inputs(7)
    reference = model(**batch).logits
    logits = model.to(torch.bfloat16)(**batch).logits
    assert logits.dtype == torch.float32
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()


def test_text_conditioning_and_raw_text_are_exclusive():
    model = tiny_model()
    batch = inputs()
    text = model.encode_text(batch["text_hidden_states"], batch["text_attention_mask"])
    with pytest.raises(ValueError, match="not both"):
        model(batch["input_ids"], batch["prev_scale_features"], text_conditioning=text, drop_text=torch.tensor([1, 0]))


def test_packed_linear_matches_f_linear_and_follows_weight_updates():
    """The CPU inference path (oneDNN, packed weight) gives F.linear's result up to rounding, also with the GELU
    fused into the product, repacks when the weight changes, and leaves training (autograd) on F.linear."""
    import copy

    from moscale.models.modeling_moscale import PackedLinear

    torch.manual_seed(0)
    layer = PackedLinear(48, 40)
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
        bias = torch.randn(40)
        torch.testing.assert_close(layer(x, bias), F.linear(x, layer.weight, bias), atol=1e-5, rtol=1e-5)
        expected = F.gelu(F.linear(x, layer.weight, layer.bias), approximate="tanh")
        torch.testing.assert_close(layer(x, gelu_tanh=True), expected, atol=1e-5, rtol=1e-5)
        layer.weight.mul_(2)  # an in-place update (an optimizer step, load_state_dict) must be seen
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
        low = copy.deepcopy(layer).to(torch.bfloat16)  # a used layer still copies; another dtype is repacked
        expected = F.linear(x.bfloat16(), low.weight, low.bias).float()
        torch.testing.assert_close(low(x.bfloat16()).float(), expected, atol=0.05, rtol=0.02)
    expected = F.gelu(F.linear(x, layer.weight, layer.bias), approximate="tanh")
    trained = layer(x, gelu_tanh=True)
    torch.testing.assert_close(trained, expected, atol=0, rtol=0)
    trained.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.shape == (40, 48)
