"""examples/ablation.py on a tiny budget: every variant (four gamma_max values, with and without temporal refinement,
and the next-token baseline) trains for a few steps and is evaluated; plus the next-token baseline's own contract
(causal, cached sampling equal to the full forward, finest-scale tokens)."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from moscale.evaluation.contrastive_evaluator import (
    ContrastiveEvaluatorConfig,
    ContrastiveEvaluatorModel,
    build_vocabulary,
)
from moscale.models.modeling_moscale import MoScaleConfig
from moscale.models.modeling_moscale_vq import PAD_ID, MoScaleVQConfig, MoScaleVQModel
from moscale.synthetic import write_dataset
from tests.helpers import TINY_T5_CONFIG, TINY_VQ_CONFIG, load_script
from tests.shared_data import SHARED_DATA

TINY_MODEL = [
    "--hidden_size", "32", "--num_layers", "1", "--num_attention_heads", "2",
    "--condition_dim", "32", "--text_pool_head_dim", "16",
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small procedural dataset, a tokenizer whose codebook was seeded from it, a tiny frozen T5 encoder and an
    (untrained) contrastive evaluator."""
    root = tmp_path_factory.mktemp("ablation")
    data = write_dataset(root / "data", num_clips=48, seed=0, workers=1, progress=False)
    torch.manual_seed(0)
    vq_model = MoScaleVQModel(MoScaleVQConfig(**TINY_VQ_CONFIG, motion_dim=263, joint_position_dims=(4, 67)))
    mean, std = np.load(data / "Mean.npy"), np.load(data / "Std.npy")
    ids = (data / "train.txt").read_text().split()[:8]
    clips = [(np.load(data / "new_joint_vecs" / f"{i}.npy")[:196] - mean) / std for i in ids]
    motions = torch.zeros(len(clips), 196, 263)
    for row, clip in enumerate(clips):
        motions[row, : len(clip)] = torch.from_numpy(clip)
    vq_model.train()(motions, torch.tensor([len(c) // 4 * 4 for c in clips]))  # seeds the codebook from data
    vq_model.eval().save_pretrained(root / "vq")
    captions = [json.loads(line)["captions"][0] for line in (data / "semantics.jsonl").read_text().splitlines()]
    evaluator = ContrastiveEvaluatorModel(
        ContrastiveEvaluatorConfig(
            vocabulary=build_vocabulary(captions), hidden_size=32, num_layers=1, num_heads=2, embedding_dim=16
        )
    )
    evaluator.set_feature_statistics(mean, std)
    evaluator.save_pretrained(root / "evaluator")
    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "t5_small_tokenizer")
    T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TINY_T5_CONFIG)).save_pretrained(root / "text_encoder")
    tokenizer.save_pretrained(root / "text_encoder")
    return root


def test_every_variant_trains_and_evaluates(workspace):
    script = load_script("ablation")
    output = workspace / "run"
    argv = [
        "--data_dir", str(workspace / "data"), "--vq_model", str(workspace / "vq"), "--output_dir", str(output),
        "--max_train_steps", "2", "--train_batch_size", "8", *TINY_MODEL, "--refinement_steps", "1", "2", "1", "2",
        "--eval_split", "train", "--num_eval_clips", "32", "--eval_batch_size", "16",
        "--evaluator_path", str(workspace / "evaluator"), "--text_encoder", str(workspace / "text_encoder"),
    ]  # fmt: skip
    summary = script.main(script.parse_args(argv))

    expected = {
        f"moscale_gamma_{gamma}__steps_{steps}"
        for gamma in ("0", "0.3", "0.6", "0.9")
        for steps in ("1-1-1-1", "1-2-1-2")
    } | {"next_token"}
    assert set(summary) - {"ceilings"} == expected
    for name in expected:
        result = json.loads((output / "results" / f"{name}__seed_0.json").read_text())
        assert result["eval_clips"] == 32 and result["semantic"]["motions"] == 32
        assert set(result["semantic"]["overall"]) >= {"action", "exact"}
        assert all(0 <= value <= 1 for value in result["semantic"]["overall"].values())
        assert np.isfinite(result["evaluator"]["fid"]) and 0 <= result["evaluator"]["r_precision_top1"] <= 1
        assert 0 <= result["plausibility"]["plausible_fraction"] <= 1
        assert result["train_seconds"] >= 0 and np.isfinite(result["final_loss"])
    # TR is a sampling setting: both rows of one gamma come from one trained model, sampled differently.
    base = json.loads((output / "results" / "moscale_gamma_0__steps_1-1-1-1__seed_0.json").read_text())
    refined = json.loads((output / "results" / "moscale_gamma_0__steps_1-2-1-2__seed_0.json").read_text())
    assert base["model"] == refined["model"] and base["final_loss"] == refined["final_loss"]
    assert (base["refinement_steps"], refined["refinement_steps"]) == ([1, 1, 1, 1], [1, 2, 1, 2])
    assert base["label"].startswith("Base") and refined["label"].startswith("+TR")
    models = output / "models" / "seed_0"
    config = json.loads((models / "moscale_gamma_0.6" / "transformer" / "config.json").read_text())
    assert config["perturb_rate"] == [0.0, 0.6] and config["hidden_size"] == 32
    baseline_config = json.loads((models / "next_token" / "config.json").read_text())
    assert all(baseline_config[k] == config[k] for k in ("hidden_size", "num_layers", "condition_dim", "num_codes"))
    # The ground truth reads back as well as the detectors allow, far above what 2 training steps generate.
    ceilings = summary["ceilings"]
    assert ceilings["ground_truth"]["action"] > 80
    assert ceilings["ground_truth"]["action"] > summary["next_token"]["mean"]["action"]
    table = (output / "table.md").read_text()
    for label in ("Base (", "+HR (", "+TR (", "+HR&TR (", "next-token", "ground-truth joints"):
        assert label in table
    assert "| +HR - Base | 1 |" in table and "| +HR&TR - next-token | 1 |" in table

    # A rerun redoes nothing; a pipeline trained elsewhere is sampled with and without TR beside the rest.
    written = {path: path.stat().st_mtime_ns for path in (output / "results").iterdir()}
    trained_elsewhere = models / "moscale_gamma_0.6"
    rerun = script.main(script.parse_args([*argv, "--skip_existing", "--pipelines", str(trained_elsewhere)]))
    assert {path: path.stat().st_mtime_ns for path in written} == written
    assert {"pipeline_moscale_gamma_0.6__steps_1-1-1-1", "pipeline_moscale_gamma_0.6__steps_1-2-1-2"} < set(rerun)
    assert rerun["pipeline_moscale_gamma_0.6__steps_1-1-1-1"]["mean"]["exact"] >= 0


# ---------------------------------------------------------------------------------------------- next-token model
@pytest.fixture(scope="module")
def baseline_module():
    load_script("ablation")  # puts examples/ on sys.path
    import next_token_baseline

    return next_token_baseline


def tiny_baseline(module):
    config = MoScaleConfig(
        num_codes=32, code_dim=16, condition_dim=32, hidden_size=32, num_layers=2, num_attention_heads=2,
        text_dim=24, max_text_length=8, text_pool_head_dim=16, dropout=0.0, drop_path_rate=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = module.NextTokenBaselineForTextToMotion(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.3)  # trained-looking weights: logits vary with every input
    return model


def test_next_token_baseline_is_causal_and_samples_with_a_cache(baseline_module):
    model = tiny_baseline(baseline_module)
    states, mask = torch.randn(3, 8, 24), torch.ones(3, 8, dtype=torch.long)
    mask[0, 5:] = 0
    codes = torch.randint(0, 32, (3, 49))
    logits = model(codes[:, :-1], states, mask).logits
    assert logits.shape == (3, 49, 32)
    changed = codes.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 32
    other = model(changed[:, :-1], states, mask).logits
    torch.testing.assert_close(other[:, :21], logits[:, :21])  # code t is predicted from codes before t only
    assert (other[:, 21:] - logits[:, 21:]).abs().max() > 1e-3

    text = model.encode_text(states, mask)
    out = model(codes[:, :0], text_conditioning=text, use_cache=True)
    step_logits = [out.logits[:, -1]]
    for t in range(48):
        out = model(codes[:, t : t + 1], text_conditioning=text, past_key_values=out.past_key_values, use_cache=True)
        step_logits.append(out.logits[:, -1])
    torch.testing.assert_close(torch.stack(step_logits, 1), logits, atol=1e-4, rtol=1e-4)

    sampled = model.generate(states, mask, [49, 20, 10], generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (3, 49) and (sampled >= 0).sum(1).tolist() == [49, 20, 10]
    assert (sampled[1, 20:] == PAD_ID).all() and sampled[0].max() < 32
    again = model.generate(states, mask, [49, 20, 10], generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, again)


def test_finest_scale_codes_quantize_the_latent_directly(baseline_module):
    torch.manual_seed(0)
    vq_model = MoScaleVQModel(MoScaleVQConfig(**TINY_VQ_CONFIG, motion_dim=263, joint_position_dims=(4, 67))).eval()
    with torch.no_grad():
        vq_model.quantizer.codebook.normal_()
    motions, lengths = torch.randn(2, 196, 263), torch.tensor([196, 80])
    codes = baseline_module.finest_scale_codes(vq_model, motions, lengths)
    assert codes.shape == (2, 49) and (codes[1, 20:] == PAD_ID).all() and (codes[1, :20] >= 0).all()
    latent = vq_model.encode_latent(motions, lengths)[0].T  # (49, C)
    distances = torch.cdist(latent, vq_model.quantizer.codebook)
    assert torch.equal(codes[0], distances.argmin(-1))
    decoded = baseline_module.decode_finest_scale_codes(vq_model, codes, lengths)
    assert decoded.shape == (2, 196, 263) and torch.isfinite(decoded).all()
