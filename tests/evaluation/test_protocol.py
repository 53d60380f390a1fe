"""moscale.evaluation.protocol: the protocol's pieces in-process, then examples/evaluate.py end to end on 1 and 2 processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import moscale.evaluation.protocol as ev
from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel
from moscale.evaluation.t2m_evaluator import T2MEvaluator, WordVectorizer
from moscale.motion.data import load_motion_dataset
from tests.helpers import (
    CAPTIONS,
    make_motion_folder,
    save_tiny_t2m_files,
    tiny_contrastive_config,
    tiny_pipeline,
)
from tests.shared_data import ROOT, SHARED_DATA

SCRIPT = ROOT / "examples" / "evaluate.py"
# 112 test items: 7 batches of 16, more than the 100 pairs Diversity draws.
NUM_TEST_ITEMS, BATCH_SIZE = 112, 16


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = make_motion_folder(root / "data", {"test": NUM_TEST_ITEMS})
    torch.manual_seed(0)
    evaluator = ContrastiveEvaluatorModel(tiny_contrastive_config())
    evaluator.set_feature_statistics(np.load(data / "Mean.npy"), np.load(data / "Std.npy"))
    evaluator.save_pretrained(root / "evaluator")
    rows = load_motion_dataset(data, "test", cache_dir=root / "cache")
    return {"root": root, "data": data, "rows": rows.with_format("numpy", columns=["motion"], output_all_columns=True)}


def _settings(**overrides):
    values = dict(
        seed=3, repeats=2, batch_size=BATCH_SIZE, refinement_steps=(1, 1, 1, 1), multimodality_batches=1,
        multimodality_generations=11,
    )  # fmt: skip
    values.update(overrides)
    return ev.ProtocolSettings(**values)


def _perfect_generator(rows, settings, repeat, noise=0.0):
    """A 'model' that returns the real motions of each batch (looked up by captions and lengths), plus noise."""
    table = {}
    for batch, indices in enumerate(ev.repeat_batches(len(rows), settings.batch_size, settings.seed, repeat)):
        data = ev.load_batch(rows, indices, settings.seed, repeat, batch)
        table[(tuple(data.captions), tuple(data.lengths.tolist()))] = data.motions

    def generate(captions, lengths, seed):
        motions = table[(tuple(captions), tuple(lengths.tolist()))]
        noise_BND = torch.randn(motions.shape, generator=torch.Generator().manual_seed(seed))
        inside = (torch.arange(motions.shape[1])[None] < lengths[:, None])[..., None]
        return motions + noise * noise_BND * inside

    return generate


def test_jobs_batches_and_seeds(workspace):
    settings = _settings()
    assert ev.generation_jobs(7, settings) == [(0, g) for g in range(11)] + [(b, 0) for b in range(1, 7)]
    assert len(ev.generation_jobs(7, _settings(multimodality=False))) == 7
    with pytest.raises(ValueError, match="MultiModality uses 3 batches"):
        ev.generation_jobs(2, _settings(multimodality_batches=3))
    batches = ev.repeat_batches(40, 16, seed=3, repeat=0)
    assert [len(b) for b in batches] == [16, 16]  # the last partial batch is dropped, as drop_last=True does
    assert len(set(np.concatenate(batches))) == 32
    assert not np.array_equal(np.concatenate(batches), np.concatenate(ev.repeat_batches(40, 16, seed=3, repeat=1)))
    assert ev.derived_seed(3, 0, 1) == ev.derived_seed(3, 0, 1) != ev.derived_seed(3, 1, 0)
    # A batch is the same whoever loads it: one random caption and crop per item, from its own seed.
    first = ev.load_batch(workspace["rows"], batches[0], 3, 0, 0)
    again = ev.load_batch(workspace["rows"], batches[0], 3, 0, 0)
    assert first.captions == again.captions and torch.equal(first.motions, again.motions)
    assert all(length % 4 == 0 for length in first.lengths.tolist())
    with pytest.raises(ValueError, match="multimodality_generations must be > 10"):
        _settings(multimodality_generations=10)


def test_a_perfect_generator_scores_like_the_real_motions(workspace):
    rows, settings = workspace["rows"], _settings()
    embed = ev.ContrastiveCoEmbedder(ContrastiveEvaluatorModel.from_pretrained(workspace["root"] / "evaluator"))
    result = ev.evaluate_repeat(rows, settings, 0, embed, _perfect_generator(rows, settings, 0))
    for name in ("top1", "top2", "top3", "matching_score"):
        assert result[name] == pytest.approx(result[f"real_{name}"], abs=1e-6)
    assert abs(result["fid"]) < 1e-5
    assert result["multimodality"] == pytest.approx(0, abs=1e-6)  # 11 identical "generations"
    noisy = ev.evaluate_repeat(rows, settings, 0, embed, _perfect_generator(rows, settings, 0, noise=3.0))
    assert noisy["fid"] > 1e-3 and noisy["multimodality"] > 1e-3
    assert noisy["real_top1"] == result["real_top1"]  # the real side does not depend on the generator


def test_t2m_co_embedder_keeps_input_order(workspace):
    torch.manual_seed(0)
    evaluator = T2MEvaluator(dim_word=8, dim_text_hidden=16, dim_motion_hidden=16, dim_movement_enc_hidden=16,
                             dim_movement_latent=16, dim_coemb_hidden=8)  # fmt: skip
    words = ["sos", "eos", "unk"] + sorted({t.split("/")[0] for _, tokens in CAPTIONS for t in tokens.split()})
    vectors = np.random.default_rng(0).normal(size=(len(words), 8))
    vectorizer = WordVectorizer(vectors, words, {word: index for index, word in enumerate(words)})
    embed = ev.T2MCoEmbedder(evaluator, vectorizer)
    data = ev.load_batch(workspace["rows"], np.arange(8), 3, 0, 0)
    text, motion = embed(data.captions, data.tokens, data.motions, data.lengths, zero_padding=True)
    assert text.shape == motion.shape == (8, 8)
    for row in range(8):  # each row alone gives the same embedding: rows were put back in input order
        one = slice(row, row + 1)
        one_text, one_motion = embed(data.captions[one], data.tokens[one], data.motions[one], data.lengths[one], True)
        np.testing.assert_allclose(one_text[0], text[row], atol=1e-5)
        np.testing.assert_allclose(one_motion[0], motion[row], atol=1e-5)
    # With zero padding the generated motions reach the evaluator exactly as the real ones do.
    settings = _settings(generated_padding="zeros")
    rows = workspace["rows"]
    result = ev.evaluate_repeat(rows, settings, 0, embed, _perfect_generator(rows, settings, 0))
    assert result["top1"] == pytest.approx(result["real_top1"], abs=1e-6) and abs(result["fid"]) < 1e-5
    # With "decoder" padding the raw frames past each length (zeros here, decoder output for a model) are used as
    # given: the T2M convolutions see them at the end of each motion, so the embeddings move slightly.
    decoder = ev.evaluate_repeat(rows, _settings(), 0, embed, _perfect_generator(rows, settings, 0))
    assert decoder["fid"] > 10 * abs(result["fid"])


def test_load_t2m_evaluator_from_files(workspace, tmp_path):
    """--evaluator t2m: finest.tar (weights_only) and GloVe files in the standard layout, tiny random weights."""
    evaluator, words, vectors = save_tiny_t2m_files(tmp_path)
    loaded = ev.load_co_embedder("t2m", str(tmp_path / "checkpoint_dir"), str(tmp_path / "glove"), "humanml3d", "cpu")
    direct = ev.T2MCoEmbedder(evaluator, WordVectorizer(vectors, words, {w: i for i, w in enumerate(words)}))
    data = ev.load_batch(workspace["rows"], np.arange(8), 3, 0, 0)
    for got, want in zip(loaded(data.captions, data.tokens, data.motions, data.lengths, True),
                         direct(data.captions, data.tokens, data.motions, data.lengths, True)):  # fmt: skip
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="--glove_path"):
        ev.load_co_embedder("t2m", str(tmp_path / "checkpoint_dir"), None, "humanml3d", "cpu")
    with pytest.raises(FileNotFoundError, match="download_evaluators"):
        ev.load_co_embedder("t2m", str(tmp_path / "glove"), str(tmp_path / "glove"), "humanml3d", "cpu")


def test_evaluation_lengths(workspace):
    from moscale.pipelines.pipeline_moscale import MoScalePipeline

    _arguments(workspace, workspace["root"] / "unused")  # writes the tiny pipeline once
    pipeline = MoScalePipeline.from_pretrained(workspace["root"] / "pipeline")
    assert pipeline.config.min_num_frames == 40
    ev.allow_evaluation_lengths(pipeline, 41)  # a 41-frame clip may be cropped to 36 frames
    assert pipeline.config.min_num_frames == 36
    with pytest.raises(ValueError, match="Remove the items shorter than 36 frames"):
        ev.allow_evaluation_lengths(pipeline, 35)  # may become 28 frames, below the coarsest scale's 32


def test_converted_checkpoints_are_assembled_into_a_pipeline(tmp_path):
    """--pipeline may be the converter's output: vq_model/ + transformer/, T5 named by --text_encoder."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from moscale.evaluation.t2m_evaluator import load_evaluator_stats
    from moscale.models.convert_original_checkpoint import convert_original_checkpoint

    fixture = SHARED_DATA / "parity" / "fixture_a" / "checkpoint_dir" / "humanml3d"
    vq, transformer = convert_original_checkpoint(
        fixture / "hrvqvae" / "hrvqvae_fixture_a" / "model" / "net_best_fid.tar",
        fixture / "hrvqvae" / "hrvqvae_fixture_a" / "train_hrvqvae.yaml",
        fixture / "moscale" / "moscale_fixture_a" / "model" / "net_best_fid.tar",
        fixture / "moscale" / "moscale_fixture_a" / "train_moscale.yaml",
        output_dir=tmp_path / "converted",
    )
    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "t5_small_tokenizer")
    t5_config = T5Config(vocab_size=len(tokenizer), d_model=transformer.config.text_dim, d_kv=8, d_ff=32,
                         num_layers=1, num_heads=2)  # fmt: skip
    T5EncoderModel(t5_config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")

    pipeline = ev.load_pipeline(str(tmp_path / "converted"), torch.float32, "humanml3d", str(tmp_path / "t5"))
    mean, std = load_evaluator_stats("humanml3d")
    np.testing.assert_allclose(pipeline.config.motion_mean, mean)
    np.testing.assert_allclose(pipeline.config.motion_std, std)
    torch.testing.assert_close(pipeline.vq_model.quantizer.codebook, vq.quantizer.codebook)
    generate = ev.pipeline_generator(pipeline, _settings())
    motions = generate(["a person walks"], torch.tensor([40]), 0)
    assert motions.shape[-1] == 263 and motions.shape[1] >= 40 and torch.isfinite(motions).all()


def test_summary_and_table():
    repeats = [{"top1": 0.5, "fid": 0.1, "real_top1": 0.6}, {"top1": 0.7, "fid": 0.3, "real_top1": 0.6}]
    summary = ev.summarize(repeats)
    assert summary["top1"]["mean"] == pytest.approx(0.6)
    assert summary["top1"]["ci95"] == pytest.approx(1.96 * 0.1 / np.sqrt(2))
    table = ev.markdown_table(summary, "humanml3d", "t2m", 2)
    assert "| R-precision Top-1 ↑ | 0.540 | 0.600 ± 0.139 | 0.600 ± 0.000 |" in table
    assert "| FID ↓ | 0.046 | 0.200 ± 0.139 | - |" in table
    assert "0.540" not in ev.markdown_table(summary, "humanml3d", "contrastive", 2)


def _arguments(workspace, output):
    pipeline = workspace["root"] / "pipeline"
    if not pipeline.exists():
        tiny_pipeline(sample_steps_per_scale=(1, 1, 1, 1)).save_pretrained(pipeline)
    return [
        "--pipeline", str(pipeline), "--data_dir", str(workspace["data"]),
        "--cache_dir", str(workspace["root"] / "cache"),
        "--evaluator", "contrastive", "--evaluator_path", str(workspace["root"] / "evaluator"),
        "--output_dir", str(output), "--seed", "3", "--repeats", "2", "--batch_size", str(BATCH_SIZE),
        "--multimodality_batches", "1", "--multimodality_generations", "11", "--cpu",
    ]  # fmt: skip


def _outputs(output):
    return json.loads((output / "results.json").read_text()), (output / "results.md").read_text()


@pytest.fixture(scope="module")
def single_process_run(workspace):
    """The script's own parse_args and main, in this process (one thread, like each torchrun worker below)."""
    output = workspace["root"] / "one"
    ev.main(ev.parse_args(_arguments(workspace, output)))
    return _outputs(output)


def test_script_end_to_end(single_process_run):
    results, table = single_process_run
    assert results["settings"]["guidance_scale"] == 5.0 and results["settings"]["seed"] == 3
    # No --refinement_steps: the tiny transformer's own schedule is used and recorded.
    assert results["settings"]["refinement_steps"] == [1, 1, 1, 1]
    assert results["environment"]["dtype"] == "float32" and results["environment"]["num_processes"] == 1
    assert results["environment"]["tf32_matmul"] is False and results["arguments"]["tf32"] == "default"
    assert results["items"] == NUM_TEST_ITEMS and results["items_evaluated_per_repeat"] == NUM_TEST_ITEMS
    assert len(results["repeats"]) == 2
    for name in ("top1", "top2", "top3", "fid", "matching_score", "diversity", "multimodality"):
        values = [repeat[name] for repeat in results["repeats"]]
        assert results["summary"][name]["mean"] == pytest.approx(np.mean(values))
        assert results["summary"][name]["ci95"] == pytest.approx(1.96 * np.std(values) / np.sqrt(2))
    repeat = results["repeats"][0]
    assert 0 <= repeat["top1"] <= repeat["top2"] <= repeat["top3"] <= 1
    assert repeat["fid"] > 0 and repeat["diversity"] > 0 and repeat["multimodality"] > 0
    assert results["repeats"][0] != results["repeats"][1]  # each repeat draws new captions, crops and samples
    assert "MultiModality" in table and "not comparable" in table


def test_two_processes_give_the_same_numbers(workspace, single_process_run):
    output = workspace["root"] / "two"
    with socket.socket() as probe:  # a free port, so that parallel test runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    # One thread per process: the same kernels as the single-process run, and no oversubscription of CI cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [*launcher, str(SCRIPT), *_arguments(workspace, output)],
        env=env, cwd=workspace["root"], capture_output=True, text=True,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results, _ = _outputs(output)
    assert results["environment"]["num_processes"] == 2
    assert results["environment"]["distributed_type"] == "DistributedType.MULTI_CPU"
    assert results["repeats"] == single_process_run[0]["repeats"]


def test_every_dataset_format_has_protocol_defaults_and_evaluator_files():
    from moscale.evaluation.t2m_evaluator import DATASET_FOLDERS, load_evaluator_stats
    from moscale.motion.data import FOLDER_FORMATS

    assert set(ev.DEFAULT_GUIDANCE) == set(ev.PAPER_RESULTS) == set(DATASET_FOLDERS) == set(FOLDER_FORMATS)
    for name, folder_format in FOLDER_FORMATS.items():
        mean, std = load_evaluator_stats(name)
        assert mean.shape == std.shape == (folder_format.feature_dim,)


def test_kit_ml_end_to_end_with_the_t2m_evaluator(tmp_path):
    """--dataset_format kit-ml: 251-dim motions, guidance 3, the kit/ evaluator folder and statistics, KIT-ML row."""
    data = make_motion_folder(tmp_path / "kit", {"test": NUM_TEST_ITEMS}, feature_dim=251)
    tiny_pipeline(feature_dim=251).save_pretrained(tmp_path / "pipeline")
    save_tiny_t2m_files(tmp_path, dataset_folder="kit", feature_dim=251)
    arguments = [
        "--pipeline", str(tmp_path / "pipeline"), "--data_dir", str(data), "--dataset_format", "kit-ml",
        "--cache_dir", str(tmp_path / "cache"), "--evaluator", "t2m",
        "--evaluator_path", str(tmp_path / "checkpoint_dir"), "--glove_path", str(tmp_path / "glove"),
        "--output_dir", str(tmp_path / "out"), "--seed", "3", "--repeats", "1", "--batch_size", str(BATCH_SIZE),
        "--refinement_steps", "1", "1", "1", "1", "--no_multimodality", "--cpu",
    ]  # fmt: skip
    ev.main(ev.parse_args(arguments))
    results, table = _outputs(tmp_path / "out")
    assert results["dataset_format"] == "kit-ml" and results["settings"]["guidance_scale"] == 3.0
    assert results["paper"] == ev.PAPER_RESULTS["kit-ml"]
    assert results["items_evaluated_per_repeat"] == NUM_TEST_ITEMS
    repeat = results["repeats"][0]
    assert 0 <= repeat["top1"] <= repeat["top3"] <= 1 and repeat["fid"] > 0 and "multimodality" not in repeat
    assert "| R-precision Top-1 ↑ | 0.442 |" in table and "| FID ↓ | 0.173 |" in table
