import pytest
import torch
from transformers import AutoConfig, AutoModel

from moscale.models.modeling_moscale_vq import PAD_ID, MoScaleVQConfig, MoScaleVQModel

TINY = dict(
    motion_dim=12,
    code_dim=8,
    num_codes=16,
    width=32,
    depth=2,
    down_t=2,
    joint_position_dims=(4, 10),
    max_motion_length=64,
)


def tiny_model(seed: int = 0, **overrides) -> MoScaleVQModel:
    torch.manual_seed(seed)
    return MoScaleVQModel(MoScaleVQConfig(**{**TINY, **overrides}))


def batch(seed: int = 0, lengths=(64, 40)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), 64, 12, generator=generator), torch.tensor(lengths)


def seeded_model(seed: int = 0) -> MoScaleVQModel:
    """A tiny model whose codebook was seeded by one training step (a fresh codebook is all zeros)."""
    model = tiny_model(seed).train()
    model(*batch(seed + 1))
    return model.eval()


def test_config_defaults_are_the_paper_tokenizer():
    config = MoScaleVQConfig()
    assert (config.code_dim, config.num_codes, config.width, config.depth) == (512, 512, 512, 3)
    assert config.patch_sizes == (6, 12, 24, 49)
    assert config.unit_length == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"scales": (4, 8, 1)}, "strictly decreasing"),
        ({"scales": (8, 4, 2)}, "ending in 1"),
        ({"width": 36}, "attention heads"),
        ({"joint_position_dims": (4, 99)}, "joint_position_dims"),
        ({"activation": "tanh"}, "activation"),
        ({"max_motion_length": 66}, "multiple of"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        MoScaleVQConfig(**{**TINY, **overrides})


@torch.no_grad()
def test_encode_shapes_and_padding():
    model = seeded_model()
    motion, lengths = batch(2)
    out = model.encode(motion, lengths)
    assert out.latent.shape == (2, 8, 16)
    token_lengths = lengths // 4
    for codes, scale in zip(out.codes, model.config.scales):
        assert codes.shape == (2, 16 // scale) and codes.dtype == torch.long
        valid = torch.arange(16 // scale)[None] < (token_lengths // scale)[:, None]
        assert torch.equal(codes == PAD_ID, ~valid)
        assert bool((codes[valid] >= 0).all()) and bool((codes[valid] < 16).all())
    assert len(out.f_hat_per_scale) == 4 and all(f.shape == (2, 8, 16) for f in out.f_hat_per_scale)
    torch.testing.assert_close(model.codes_to_f_hat(out.codes), out.f_hat_per_scale[-1])
    for ours, reference in zip(model.codes_to_f_hat_per_scale(out.codes), out.f_hat_per_scale):
        torch.testing.assert_close(ours, reference)
    # Linear upsampling spills slightly past a length (as in the authors' code); decode zeroes f_hat there.
    f_hat = out.f_hat_per_scale[-1]
    noisy = f_hat.clone()
    noisy[1, :, token_lengths[1] :] += 5.0
    assert torch.equal(model.decode(noisy, lengths), model.decode(f_hat, lengths))


@torch.no_grad()
def test_decode_from_codes_equals_decode_from_f_hat_and_keeps_input():
    model = seeded_model()
    motion, lengths = batch(3)
    out = model.encode(motion, lengths)
    f_hat = out.f_hat_per_scale[-1].clone()
    from_f_hat = model.decode(f_hat, lengths)
    assert from_f_hat.shape == motion.shape
    torch.testing.assert_close(model.decode(out.codes, lengths), from_f_hat)
    assert torch.equal(f_hat, out.f_hat_per_scale[-1])


@torch.no_grad()
def test_scale_helpers_rebuild_f_hat_scale_by_scale():
    model = seeded_model()
    out = model.encode(*batch(4))
    f_hat = torch.zeros_like(out.latent)
    for k, codes in enumerate(out.codes):
        f_hat = f_hat + model.scale_contribution(codes)
        torch.testing.assert_close(f_hat, out.f_hat_per_scale[k])
        if k + 1 < len(out.codes):
            assert model.next_scale_input(f_hat, k + 1).shape == (2, 8, out.codes[k + 1].shape[1])


def test_bad_inputs_raise_clear_errors():
    model = seeded_model()
    motion, lengths = batch()
    with pytest.raises(ValueError, match="motion must have shape"):
        model.encode(motion[..., :10], lengths)
    with pytest.raises(ValueError, match="multiple of 4"):
        model.encode(motion[:, :62], lengths.clamp(max=62))
    with pytest.raises(ValueError, match="lengths must be between"):
        model.encode(motion, torch.tensor([65, 40]))
    with pytest.raises(ValueError, match="lengths must be between"):
        model.encode(motion, torch.tensor([2, 40]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        model.encode(motion, torch.tensor([64]))
    codes = model.encode(motion, lengths).codes
    with pytest.raises(ValueError, match="expected codes for 4 scales"):
        model.decode(codes[:3], lengths)
    with pytest.raises(ValueError, match="code ids must be in"):
        model.decode((codes[0] + 100,) + codes[1:], lengths)
    with pytest.raises(ValueError, match="f_hat must have shape"):
        model.decode(torch.zeros(2, 5, 16), lengths)


def test_training_forward_seeds_codebook_updates_it_and_backpropagates():
    model = tiny_model().train()
    assert int(model.quantizer.initialized) == 0 and not bool(model.quantizer.codebook.any())
    motion, lengths = batch(5)
    out = model(motion, lengths)
    assert int(model.quantizer.initialized) == 1 and bool(model.quantizer.codebook.any())
    expected = out.reconstruction_loss + 0.02 * out.commit_loss + 0.5 * out.joint_position_loss
    torch.testing.assert_close(out.loss, expected)
    assert out.reconstruction.shape == motion.shape and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0, "straight-through estimator must reach the encoder"
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0

    before = model.quantizer.codebook.clone()
    model(*batch(6))
    assert not torch.equal(before, model.quantizer.codebook), "training must move the codebook (EMA)"
    model.eval()
    frozen = model.quantizer.codebook.clone()
    model(*batch(7))
    assert torch.equal(frozen, model.quantizer.codebook), "eval mode must not touch the codebook"


@torch.no_grad()
def test_losses_are_means_over_valid_frames_only():
    model = seeded_model()
    motion, lengths = batch(8)
    out = model(motion, lengths)
    valid = (torch.arange(64)[None] < lengths[:, None])[..., None].float()

    def masked_mean(pred, ref):
        per_element = torch.nn.functional.smooth_l1_loss(pred, ref, reduction="none")
        return (per_element * valid).sum() / (valid.sum() * ref.shape[-1])

    torch.testing.assert_close(out.reconstruction_loss, masked_mean(out.reconstruction, motion))
    torch.testing.assert_close(out.joint_position_loss, masked_mean(out.reconstruction[..., 4:10], motion[..., 4:10]))
    # Targets beyond a sample's length do not enter the loss: rescoring against changed padding gives the same.
    changed = motion.clone()
    changed[1, 40:] += 100.0
    torch.testing.assert_close(masked_mean(out.reconstruction, changed), out.reconstruction_loss)


def test_ema_update_resets_dead_codes_from_batch_vectors():
    model = seeded_model()
    quantizer = model.quantizer
    n_rows = 5 * quantizer.num_codes + 1  # the authors reset dead codes only above 5 * K vectors
    x = torch.randn(n_rows, 8)
    idx = torch.zeros(n_rows, dtype=torch.long)  # every vector picks code 0: all other codes die
    quantizer.code_count.fill_(1.0)
    quantizer._ema_update(x, idx)
    torch.testing.assert_close(quantizer.codebook[1:], x[1 : quantizer.num_codes])
    assert quantizer.code_count[0] > 1


def test_perturbation_replaces_valid_codes_with_different_ones():
    model = seeded_model()
    idx = torch.randint(0, 16, (4, 12))
    valid = torch.arange(12)[None] < torch.tensor([12, 8, 5, 1])[:, None]
    idx = idx.masked_fill(~valid, PAD_ID)
    perturbed = model.quantizer.perturb(idx, valid, (1.0, 1.0), torch.Generator().manual_seed(0))
    assert bool((perturbed[valid] != idx[valid]).all())
    assert bool((perturbed[valid] >= 0).all()) and bool((perturbed[valid] < 16).all())
    assert torch.equal(perturbed[~valid], idx[~valid])
    untouched = model.quantizer.perturb(idx, valid, (0.0, 0.0), torch.Generator().manual_seed(0))
    assert torch.equal(untouched, idx)


@torch.no_grad()
def test_encode_with_perturb_rate_keeps_clean_codes_but_corrupts_f_hat():
    model = seeded_model()
    motion, lengths = batch(9)
    clean = model.encode(motion, lengths)
    noisy = model.encode(motion, lengths, perturb_rate=(0.6, 0.6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy.codes[0], clean.codes[0]), "labels of the first scale stay clean"
    assert not torch.allclose(noisy.f_hat_per_scale[0], clean.f_hat_per_scale[0])


@torch.no_grad()
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = seeded_model()
    model.save_pretrained(tmp_path)
    loaded = MoScaleVQModel.from_pretrained(tmp_path).eval()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, dict(loaded.named_buffers())[name]), name
    motion, lengths = batch(10)
    a, b = model.encode(motion, lengths), loaded.encode(motion, lengths)
    assert all(torch.equal(x, y) for x, y in zip(a.codes, b.codes))
    assert torch.equal(model.decode(a.codes, lengths), loaded.decode(b.codes, lengths))
    assert isinstance(AutoModel.from_pretrained(tmp_path), MoScaleVQModel)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, MoScaleVQConfig) and tuple(config.scales) == (8, 4, 2, 1)


@torch.no_grad()
def test_bfloat16_model_runs_and_stays_close_to_float32():
    model = seeded_model()
    motion, lengths = batch(11)
    codes = model.encode(motion, lengths).codes
    reference = model.decode(codes, lengths)
    half = model.to(torch.bfloat16)
    out = half.decode(codes, lengths)  # same codes: bf16 distances may pick other codes at near-ties
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.05 * reference.abs().max()
    half_codes = half.encode(motion, lengths).codes
    assert all(torch.equal(a < 0, b < 0) for a, b in zip(half_codes, codes))
    assert torch.isfinite(half(motion, lengths).loss)


def test_kit_ml_works_by_config():
    """KIT-ML: 251 features per frame (21 joints); the joint-position slice is a config field."""
    torch.manual_seed(0)
    kit = MoScaleVQModel(MoScaleVQConfig(motion_dim=251, code_dim=8, num_codes=16, width=32, depth=1)).train()
    motion, lengths = torch.randn(2, 196, 251), torch.tensor([196, 100])
    out = kit(motion, lengths)
    assert out.reconstruction.shape == (2, 196, 251) and torch.isfinite(out.loss)
    kit.eval()
    codes = kit.encode(motion, lengths).codes
    assert [c.shape[1] for c in codes] == [6, 12, 24, 49]
    assert kit.decode(codes, lengths).shape == (2, 196, 251)
    with pytest.raises(ValueError, match="joint_position_dims"):
        MoScaleVQConfig(motion_dim=251, joint_position_dims=(4, 300))
