"""Parity with the authors' MoScale on a fixture made by their code (see shared/data/parity/README.md).

The fixture folder comes from MOSCALE_PARITY_FIXTURE (default: <repo>/../shared/data/parity/fixture_a). Every size is
read from the fixture's meta.json, YAML files and tensors, so any fixture in the same layout runs unchanged. The
checkpoints are converted with our converter; the worst error of every check is printed at the end of the module.
"""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from moscale.models.convert_original_checkpoint import convert_original_checkpoint
from moscale.models.modeling_moscale import MoScaleForTextToMotion, scale_normalized_rope_angles
from moscale.models.modeling_moscale_vq import MoScaleVQModel
from tests.shared_data import PARITY_FIXTURE as FIXTURE

BRIEF_LIMIT = 1e-4  # the bound on any transformer float difference


@pytest.fixture(scope="module")
def fixture():
    if not (FIXTURE / "meta.json").is_file():
        raise FileNotFoundError(f"parity fixture not found at {FIXTURE}; set MOSCALE_PARITY_FIXTURE")
    meta = json.loads((FIXTURE / "meta.json").read_text())
    return meta, load_file(FIXTURE / "tensors.safetensors")


@pytest.fixture(scope="module")
def converted(fixture, tmp_path_factory):
    meta, _ = fixture
    paths = meta["checkpoints"]
    out = tmp_path_factory.mktemp("converted")
    convert_original_checkpoint(
        FIXTURE / paths["vq"]["path"],
        FIXTURE / paths["vq_yaml"],
        FIXTURE / paths["moscale"]["path"],
        FIXTURE / paths["moscale_yaml"],
        out,
    )
    return out


@pytest.fixture(scope="module")
def models(converted):
    vq = MoScaleVQModel.from_pretrained(converted / "vq_model").eval()
    transformer = MoScaleForTextToMotion.from_pretrained(converted / "transformer").eval()
    return vq, transformer


@pytest.fixture(scope="module")
def report(request):
    worst: dict[str, tuple[float, float]] = {}
    yield worst
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nparity against {FIXTURE.name}: max abs error (reference max abs), worst first")
        for name, (error, scale) in sorted(worst.items(), key=lambda item: -item[1][0]):
            print(f"  {name:<48s} {error:.3e}  ({scale:.3g})")


def check_close(report: dict, name: str, ours: torch.Tensor, ref: torch.Tensor, rel: float, limit: float | None = None):
    """max |ours - ref| <= rel * max(1, max |ref|) (and <= limit when given); records the error."""
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    error = (ours.float() - ref.float()).abs().max().item()
    scale = ref.abs().max().item()
    report[name] = (error, scale)
    tolerance = rel * max(1.0, scale)
    assert error <= tolerance, f"{name}: max abs error {error:.3e} > {tolerance:.3e}"
    if limit is not None:
        assert error <= limit, f"{name}: max abs error {error:.3e} > {limit:.1e}"


def test_fixture_sizes_match_converted_configs(fixture, models):
    meta, tensors = fixture
    vq, transformer = models
    vq_yaml = meta["configs"]["train_hrvqvae"]
    assert vq.config.code_dim == vq_yaml["quantizer"]["code_dim"]
    assert vq.config.num_codes == vq_yaml["quantizer"]["nb_code"]
    assert vq.config.width == vq_yaml["model"]["width"]
    assert vq.config.depth == vq_yaml["model"]["depth"]
    assert transformer.config.condition_dim == meta["configs"]["train_moscale"]["model"]["latent_dim"]
    assert transformer.config.hidden_size == meta["configs"]["train_moscale"]["model"]["head_latent_dim"]
    assert list(transformer.config.patch_sizes) == meta["derived"]["patch_sizes"]
    assert transformer.config.sequence_length == meta["derived"]["L"]
    pool_heads = transformer.config.condition_dim // transformer.config.text_pool_head_dim
    assert pool_heads == meta["derived"]["pool_num_heads"]
    assert torch.equal(tensors["input.motion_lengths"], torch.tensor(meta["inputs"]["lengths"]))


# ------------------------------------------------------------------------------------------------------------- VQ
@torch.no_grad()
def test_vq_encoder_latent(fixture, models, report):
    _, t = fixture
    vq, _ = models
    latent = vq.encode_latent(t["input.motion"], t["input.motion_lengths"])
    check_close(report, "vq.encoder_latent", latent, t["vq.encoder_latent"], rel=1e-5)


@torch.no_grad()
def test_vq_codes_and_f_hat(fixture, models, report):
    meta, t = fixture
    vq, _ = models
    lengths = t["input.motion_lengths"]
    n_scales = len(meta["configs"]["train_hrvqvae"]["quantizer"]["scales"])
    # Quantize the reference latent (no cascade from a near-tie) and our own latent: both must give the same ids.
    from_reference = vq.quantize(t["vq.encoder_latent"], lengths // vq.config.unit_length)
    from_ours = vq.encode(t["input.motion"], lengths)
    for k in range(n_scales):
        ref_codes = t[f"vq.code_idx.scale{k}"]
        assert torch.equal(from_reference.codes[k], ref_codes), f"scale {k} codes differ (reference latent)"
        assert torch.equal(from_ours.codes[k], ref_codes), f"scale {k} codes differ (our latent)"
        valid = torch.arange(ref_codes.shape[1]) < torch.tensor(meta["vq"]["per_scale_lengths"][k])[:, None]
        assert torch.equal(ref_codes >= 0, valid)
        check_close(
            report, f"vq.f_hat.after_scale{k}", from_reference.f_hat_per_scale[k], t[f"vq.f_hat.after_scale{k}"], 1e-5
        )


@torch.no_grad()
def test_vq_reconstruction(fixture, models, report):
    meta, t = fixture
    vq, _ = models
    lengths = t["input.motion_lengths"]
    n_scales = len(meta["configs"]["train_hrvqvae"]["quantizer"]["scales"])
    f_hat = t[f"vq.f_hat.after_scale{n_scales - 1}"]
    check_close(report, "vq.recon (from f_hat)", vq.decode(f_hat.clone(), lengths), t["vq.recon"], rel=1e-5)
    codes = [t[f"vq.code_idx.scale{k}"] for k in range(n_scales)]
    check_close(report, "vq.recon (from codes)", vq.decode(codes, lengths), t["vq.recon"], rel=1e-5)
    assert torch.equal(f_hat, t[f"vq.f_hat.after_scale{n_scales - 1}"]), "decode must not modify its input"


@torch.no_grad()
def test_vq_eval_forward_losses(fixture, models, report):
    meta, t = fixture
    vq, _ = models
    out = vq(t["input.motion"], t["input.motion_lengths"])
    check_close(report, "vq forward reconstruction", out.reconstruction, t["vq.recon"], rel=1e-5)
    commit_ref = torch.tensor(meta["vq"]["vq_forward_commit_loss"])
    check_close(report, "vq forward commit loss", out.commit_loss, commit_ref, rel=1e-5)
    perplexity_ref = torch.tensor(meta["vq"]["vq_forward_perplexity"])
    check_close(report, "vq forward perplexity", out.perplexity, perplexity_ref, rel=1e-5)


def test_vq_training_step_reproduces_the_codebook_initialisation(fixture, converted, report):
    """The fixture's codebook is the authors' first training step (seeding + one EMA update with dead-code reset).

    Re-running that step in train mode from an empty codebook, with the same random streams, must give it back:
    this checks training-mode dropout order, codebook seeding, Gumbel code sampling and the EMA update.
    """
    meta, t = fixture
    recipe = re.search(
        r"on (\d+) random full-length motions \(randn, generator seed\+(\d+); "
        r"dropout RNG torch.manual_seed\(seed\+(\d+)\)",
        meta["init"]["codebook"],
    )
    assert recipe, f"unexpected codebook recipe in meta.json: {meta['init']['codebook']!r}"
    n_motions, motion_offset, dropout_offset = (int(g) for g in recipe.groups())
    vq = MoScaleVQModel.from_pretrained(converted / "vq_model")
    with torch.no_grad():
        vq.quantizer.codebook.zero_()
        vq.quantizer.initialized.zero_()
    frames = meta["configs"]["train_moscale"]["data"]["max_motion_length"]
    generator = torch.Generator().manual_seed(meta["seed"] + motion_offset)
    motions = torch.randn(n_motions, frames, vq.config.motion_dim, generator=generator)
    torch.manual_seed(meta["seed"] + dropout_offset)
    vq.train()
    with torch.no_grad():
        vq(motions, torch.full((n_motions,), frames))
    assert int(vq.quantizer.initialized) == 1
    check_close(report, "codebook after one training step", vq.quantizer.codebook, t["aux.vq.codebook"], rel=1e-5)


# ---------------------------------------------------------------------------------------------------- transformer
def test_rope_table(fixture, models, report):
    _, t = fixture
    _, transformer = models
    config = transformer.config
    angles = scale_normalized_rope_angles(config.patch_sizes, config.hidden_size // config.num_attention_heads)
    ref = t["aux.moscale.rope_base"][0, :, 0, 0, 0]
    check_close(report, "rope cos", angles.cos(), ref[0], rel=1e-6)
    check_close(report, "rope sin", angles.sin(), ref[1], rel=1e-6)


@pytest.mark.parametrize("branch", ["cond", "uncond"])
@torch.no_grad()
def test_teacher_forced_forward(fixture, models, report, branch):
    _, t = fixture
    _, transformer = models
    batch = t["tf.input_ids"].shape[0]
    out = transformer(
        input_ids=t["tf.input_ids"],
        prev_scale_features=t["tf.prefix_features"],
        text_hidden_states=t["input.text_features"],
        text_attention_mask=t["input.text_attention_mask"],
        drop_text=torch.full((batch,), branch == "uncond"),
        labels=t["tf.labels"],
        output_hidden_states=True,
    )
    text = out.text_conditioning
    used = text.memory_mask  # selecting the used rows in order gives the authors' packed layout
    rel = 1e-5
    normed_ref = t[f"tf.{branch}.text_normed_packed"]
    check_close(report, f"tf.{branch}.text_normed_packed", text.normed_text[used], normed_ref, rel)
    check_close(report, f"tf.{branch}.sos_tokens", text.start_tokens, t[f"tf.{branch}.sos_tokens"], rel, BRIEF_LIMIT)
    check_close(report, f"tf.{branch}.cond_BD", text.condition, t[f"tf.{branch}.cond_BD"], rel, BRIEF_LIMIT)
    check_close(report, f"tf.{branch}.text_ca_kv_packed", text.memory[used], t[f"tf.{branch}.text_ca_kv_packed"], rel)
    for b, block in enumerate(transformer.blocks):
        adaln = torch.cat(block.modulation(text.condition), dim=-1)
        check_close(report, f"tf.{branch}.adaln.block{b}", adaln, t[f"tf.{branch}.adaln.block{b}"], rel)
    if branch == "cond":
        check_close(report, "tf.cond.block_input", out.hidden_states[0], t["tf.cond.block_input"], rel)
        for b in range(len(transformer.blocks)):
            ref = t[f"tf.cond.block_output.block{b}"]
            check_close(report, f"tf.cond.block_output.block{b}", out.hidden_states[b + 1], ref, rel)
        head_in = transformer.final_norm(out.hidden_states[-1], transformer.head_modulation(text.condition))
        check_close(report, "tf.cond.head_nm_output", head_in, t["tf.cond.head_nm_output"], rel)
    check_close(report, f"tf.{branch}.logits", out.logits, t[f"tf.{branch}.logits"], rel, BRIEF_LIMIT)
    check_close(report, f"tf.{branch}.ce_loss", out.loss.reshape(1), t[f"tf.{branch}.ce_loss"], rel)
    assert torch.equal(out.logits.argmax(-1).reshape(-1), t[f"tf.{branch}.pred_ids"].reshape(-1))


def test_training_corruption_reproduces_the_fixture_input_ids(fixture, models):
    """The fixture's ids come from the authors' forward after fixseed(mask_seed); our corruption, fed the same
    streams, gives the same ids. Their forward first draws one Python random() per caption (caption dropout), then
    random.uniform(mask_augment_range) for the augmentation rate; every other draw is from torch's global generator."""
    meta, t = fixture
    _, transformer = models
    seed = meta["tf"]["mask_seed"]
    batch = t["tf.clean_ids"].shape[0]
    python_stream = random.Random(seed)
    for _ in range(batch):
        python_stream.random()
    augment_rate = python_stream.uniform(*transformer.config.mask_augment_range)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        input_ids, labels = transformer.corrupt_tokens(t["tf.clean_ids"], augment_rate=augment_rate)
    assert torch.equal(input_ids, t["tf.input_ids"])
    assert torch.equal(labels, t["tf.labels"])
    assert int((labels >= 0).sum()) == meta["tf"]["n_loss_targets"]


@torch.no_grad()
def test_prev_scale_features_from_our_tokenizer(fixture, models, report):
    """The transformer's continuous inputs, built from our own tokenizer's f_hat, match the authors' prefix."""
    _, t = fixture
    vq, transformer = models
    encoded = vq.encode(t["input.motion"], t["input.motion_lengths"])
    assert torch.equal(torch.cat(encoded.codes, dim=1), t["tf.clean_ids"])
    features = transformer.prev_scale_features_from_f_hat(encoded.f_hat_per_scale)
    check_close(report, "tf.prefix_features", features, t["tf.prefix_features"], rel=1e-5)


def _generation_tags(tensors: dict) -> list[str]:
    return sorted({name.split(".")[1] for name in tensors if name.startswith("gen.")})


@torch.no_grad()
def test_generation_step_logits_with_and_without_cache(fixture, models, report):
    """Rebuild every sampler step of the fixture: full prefix forward and KV-cached forward, CFG-combined."""
    meta, t = fixture
    vq, transformer = models
    batch = t["input.text_features"].shape[0]
    text = transformer.encode_text(
        t["input.text_features"].repeat(2, 1, 1),
        t["input.text_attention_mask"].repeat(2, 1),
        drop_text=torch.tensor([False] * batch + [True] * batch),
    )
    cond_scale = meta["generation"]["cond_scale"]
    tags = _generation_tags(t)
    assert tags, "fixture has no generation tensors"
    for tag in tags:
        for level, n_steps in enumerate(meta["gen"][tag]["sample_level_times"]):
            final_ids = [t[f"gen.{tag}.ids.scale{k}"] for k in range(level)]
            features, f_hat = [], torch.zeros(batch, vq.config.code_dim, vq.config.latent_length)
            for k, ids in enumerate(final_ids):
                f_hat = f_hat + vq.scale_contribution(ids)
                features.append(vq.next_scale_input(f_hat, k + 1).transpose(1, 2))
            prefix_cache = None
            if level > 0:
                prefix_features = torch.cat(features[:-1], 1).repeat(2, 1, 1) if level > 1 else None
                prefix_cache = transformer(
                    torch.cat(final_ids, 1).repeat(2, 1), prefix_features, text_conditioning=text, use_cache=True
                ).cache
            current_features = features[-1].repeat(2, 1, 1) if level > 0 else None
            tau = transformer.config.guidance_scale_at(level, cond_scale)
            for step in range(n_steps):
                current = t[f"gen.{tag}.step.l{level}.s{step}.input_ids"]
                ref = t[f"gen.{tag}.step.l{level}.s{step}.cfg_logits"]
                full_ids = torch.cat(final_ids + [current], 1).repeat(2, 1)
                full_features = torch.cat(features, 1).repeat(2, 1, 1) if level > 0 else None
                logits = transformer(full_ids, full_features, text_conditioning=text).logits[:, -current.shape[1] :]
                cached = transformer(current.repeat(2, 1), current_features, text_conditioning=text, cache=prefix_cache)
                for name, lg in (("full", logits), ("cached", cached.logits)):
                    cfg = (1 + tau) * lg[:batch] - tau * lg[batch:]
                    key = f"gen.{tag}.l{level}.s{step}.cfg_logits ({name})"
                    check_close(report, key, cfg, ref, rel=1e-5, limit=BRIEF_LIMIT)
        generated_codes = [t[f"gen.{tag}.ids.scale{k}"] for k in range(len(vq.config.scales))]
        motion = vq.decode(generated_codes, t["input.motion_lengths"])
        check_close(report, f"gen.{tag}.motion", motion, t[f"gen.{tag}.motion"], rel=1e-5)


@torch.no_grad()
def test_recover_from_ric(fixture, report):
    from moscale.motion.representation import recover_from_ric

    meta, t = fixture
    joints_num = meta["configs"]["train_moscale"]["data"]["joint_num"]
    joints = recover_from_ric(t["input.motion"], joints_num)
    check_close(report, "ric.joints", torch.as_tensor(joints), t["ric.joints"], rel=1e-5)
