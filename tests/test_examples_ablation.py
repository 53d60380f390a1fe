"""examples/ablation.py on a tiny budget: every variant (four gamma_max values, with and without temporal refinement,
and the next-token baseline on a single-scale tokenizer and on the shared tokenizer's finest scale) trains for a few
steps and is evaluated; the single-scale tokenizer must match the shared one's size and budget; plus the next-token
baseline's own contract (causal, cached sampling equal to the full forward, finest-scale tokens)."""

import json
import logging
import shutil

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
TINY_VQ = ["--code_dim", "16", "--num_codes", "32", "--width", "32", "--depth", "1", "--attention_heads", "2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small procedural dataset, two tokenizers trained on it for 2 steps by examples/train_vq.py with the same flags
    (four scales, and one scale for the next-token baseline), a tiny frozen T5 encoder and an (untrained) contrastive
    evaluator."""
    root = tmp_path_factory.mktemp("ablation")
    data = write_dataset(root / "data", num_clips=48, seed=0, workers=1, progress=False)
    mean, std = np.load(data / "Mean.npy"), np.load(data / "Std.npy")
    train_vq = load_script("train_vq")
    vq_flags = [
        "--data_dir", str(data), "--cache_dir", str(root / "cache"), "--seed", "0", "--max_train_steps", "2",
        "--train_batch_size", "8", "--lr_warmup_steps", "1", *TINY_VQ, "--report_to", "none",
        "--validation_steps", "100", "--checkpointing_steps", "100", "--max_validation_batches", "1",
        "--num_validation_renders", "0",
    ]  # fmt: skip
    train_vq.main(train_vq.parse_args([*vq_flags, "--output_dir", str(root / "vq")]))
    train_vq.main(train_vq.parse_args([*vq_flags, "--scales", "1", "--output_dir", str(root / "vq_single_scale")]))
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
        "--single_scale_vq_model", str(workspace / "vq_single_scale"),
        "--max_train_steps", "2", "--train_batch_size", "8", *TINY_MODEL, "--refinement_steps", "1", "2", "1", "2",
        "--eval_split", "train", "--num_eval_clips", "32", "--eval_batch_size", "16",
        "--evaluator_path", str(workspace / "evaluator"), "--text_encoder", str(workspace / "text_encoder"),
    ]  # fmt: skip
    summary = script.main(script.parse_args(argv))

    expected = {
        f"moscale_gamma_{gamma}__steps_{steps}"
        for gamma in ("0", "0.3", "0.6", "0.9")
        for steps in ("1-1-1-1", "1-2-1-2")
    } | {"next_token", "next_token_single_scale"}
    assert set(summary) - {"ceilings"} == expected
    for name in expected:
        result = json.loads((output / "results" / f"{name}__seed_0.json").read_text())
        assert result["eval_clips"] == 32 and result["semantic"]["motions"] == 32
        assert set(result["semantic"]["overall"]) >= {"action", "exact"}
        assert all(0 <= value <= 1 for value in result["semantic"]["overall"].values())
        assert np.isfinite(result["evaluator"]["fid"]) and 0 <= result["evaluator"]["r_precision_top1"] <= 1
        assert 0 <= result["plausibility"]["plausible_fraction"] <= 1
        assert result["train_seconds"] >= 0 and np.isfinite(result["final_loss"])
        assert result["train_cpu_seconds"] >= 0 and result["sample_cpu_seconds"] > 0
    # TR is a sampling setting: both rows of one gamma come from one trained model, sampled differently.
    base = json.loads((output / "results" / "moscale_gamma_0__steps_1-1-1-1__seed_0.json").read_text())
    refined = json.loads((output / "results" / "moscale_gamma_0__steps_1-2-1-2__seed_0.json").read_text())
    assert base["model"] == refined["model"] and base["final_loss"] == refined["final_loss"]
    assert (base["refinement_steps"], refined["refinement_steps"]) == ([1, 1, 1, 1], [1, 2, 1, 2])
    assert base["label"].startswith("Base") and refined["label"].startswith("+TR")
    models = output / "models" / "seed_0"
    config = json.loads((models / "moscale_gamma_0.6" / "transformer" / "config.json").read_text())
    assert config["perturb_rate"] == [0.0, 0.6] and config["hidden_size"] == 32
    for baseline in ("next_token", "next_token_single_scale"):  # MoScale's size and text pool, one scale
        baseline_config = json.loads((models / baseline / "config.json").read_text())
        size = ("hidden_size", "num_layers", "condition_dim", "num_codes", "scales", "text_pool_head_dim")
        assert all(baseline_config[k] == config[k] for k in size)
    # The ground truth reads back as well as the detectors allow, far above what 2 training steps generate.
    ceilings = summary["ceilings"]
    assert set(ceilings) == {"ground_truth", "vq_all_scales", "vq_finest_scale", "vq_single_scale"}
    assert ceilings["ground_truth"]["action"] > 80
    assert ceilings["ground_truth"]["action"] > summary["next_token_single_scale"]["mean"]["action"]
    table = (output / "table.md").read_text()
    for label in ("Base (", "+HR (", "+TR (", "+HR&TR (", "next-token (finest scale", "ground-truth joints"):
        assert label in table
    assert "next-token (single-scale tokenizer, causal) | 1 |" in table
    assert "| single-scale tokenizer reconstruction (single-scale next-token's tokens) | - |" in table
    assert "| +HR - Base | 1 |" in table and "| +HR&TR - next-token (single-scale tokenizer) | 1 |" in table
    assert "| +HR&TR - next-token (finest scale) | 1 |" in table

    # A rerun redoes nothing; a pipeline trained elsewhere is sampled with and without TR beside the rest.
    written = {path: path.stat().st_mtime_ns for path in [*(output / "results").iterdir(), output / "ceilings.json"]}
    trained_elsewhere = models / "moscale_gamma_0.6"
    rerun = script.main(script.parse_args([*argv, "--skip_existing", "--pipelines", str(trained_elsewhere)]))
    assert {path: path.stat().st_mtime_ns for path in written} == written
    assert {"pipeline_moscale_gamma_0.6__steps_1-1-1-1", "pipeline_moscale_gamma_0.6__steps_1-2-1-2"} < set(rerun)
    assert rerun["pipeline_moscale_gamma_0.6__steps_1-1-1-1"]["mean"]["exact"] >= 0


def test_the_single_scale_tokenizer_must_be_the_shared_one_with_one_scale(workspace, tmp_path, caplog):
    script = load_script("ablation")
    shared = MoScaleVQModel.from_pretrained(workspace / "vq")
    single = script.load_single_scale_vq(workspace / "vq_single_scale", shared, workspace / "vq")
    assert tuple(single.config.scales) == (1,) and single.config.width == shared.config.width
    with pytest.raises(ValueError, match=r"scales \[8, 4, 2, 1\]: train it with --scales 1"):
        script.load_single_scale_vq(workspace / "vq", shared, workspace / "vq")

    other_budget = tmp_path / "other_budget"  # the same tokenizer, but its log says batch 16
    shutil.copytree(workspace / "vq_single_scale", other_budget)
    log = other_budget / "logs" / "train_vq.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records[0]["config"]["train_batch_size"] = 16
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(ValueError, match=r"another budget than --vq_model .*'train_batch_size': \(8, 16\)"):
        script.load_single_scale_vq(other_budget, shared, workspace / "vq")
    # A log written before --lr_decay_steps existed lacks the flag; a newer one writes its unset value as "None".
    shared_config = json.loads((workspace / "vq" / "logs" / "train_vq.jsonl").read_text().splitlines()[0])["config"]
    assert shared_config["lr_decay_steps"] == "None"
    records[0]["config"]["train_batch_size"] = shared_config["train_batch_size"]
    del records[0]["config"]["lr_decay_steps"]
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    script.load_single_scale_vq(other_budget, shared, workspace / "vq")  # accepted: the same budget
    shutil.rmtree(other_budget / "logs")  # no log: accepted, with a warning that the budget is not checked
    with caplog.at_level(logging.WARNING):
        script.load_single_scale_vq(other_budget, shared, workspace / "vq")
    assert "budgets are not checked" in caplog.text

    wider = MoScaleVQModel(MoScaleVQConfig(**{**shared.config.to_dict(), "scales": [1], "width": 64}))
    wider.quantizer.initialized.fill_(1)
    wider.save_pretrained(tmp_path / "wider")
    with pytest.raises(ValueError, match=r"not --vq_model's size .*'width': \(32, 64\)"):
        script.load_single_scale_vq(tmp_path / "wider", shared, workspace / "vq")

    common = ["--data_dir", "d", "--vq_model", "v", "--output_dir", "o"]
    with pytest.raises(SystemExit):
        script.parse_args(common)  # the single-scale baseline needs its tokenizer
    assert script.parse_args([*common, "--next_token_tokenizers", "finest_scale"]).next_token_tokenizers == [
        "finest_scale"
    ]


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

    # On a single-scale tokenizer they are its own codes, and decode as it does.
    config = {**TINY_VQ_CONFIG, "scales": (1,)}
    single = MoScaleVQModel(MoScaleVQConfig(**config, motion_dim=263, joint_position_dims=(4, 67))).eval()
    with torch.no_grad():
        single.quantizer.codebook.normal_()
    codes = baseline_module.finest_scale_codes(single, motions, lengths)
    encoded = single.encode(motions, lengths).codes
    assert len(encoded) == 1 and torch.equal(codes, encoded[0])
    decoded = baseline_module.decode_finest_scale_codes(single, codes, lengths)
    torch.testing.assert_close(decoded, single.decode(list(encoded), lengths))
