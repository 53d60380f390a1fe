"""`moscale evaluate` end to end: in-process, on 2 processes with torchrun (the same numbers), and on KIT-ML."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from moscale.evaluation.evaluate_cli import main, parse_args
from moscale.evaluation.report import PAPER_RESULTS
from tests.helpers import (
    NUM_TEST_ITEMS,
    PROTOCOL_TEST_BATCH_SIZE,
    make_motion_folder,
    save_tiny_t2m_files,
    tiny_pipeline,
)
from tests.shared_data import ROOT

SCRIPT = ROOT / "examples" / "evaluate.py"


def _arguments(workspace, output):
    return [
        "--model", str(workspace["root"] / "pipeline"), "--data_dir", str(workspace["data"]),
        "--cache_dir", str(workspace["root"] / "cache"),
        "--evaluator", "contrastive", "--evaluator_path", str(workspace["root"] / "evaluator"),
        "--output_dir", str(output), "--seed", "3", "--repeats", "2",
        "--batch_size", str(PROTOCOL_TEST_BATCH_SIZE),
        "--multimodality_batches", "1", "--multimodality_generations", "11", "--cpu",
    ]  # fmt: skip


def _outputs(output):
    return json.loads((output / "results.json").read_text()), (output / "results.md").read_text()


@pytest.fixture(scope="module")
def single_process_run(workspace):
    """The script's own parse_args and main, in this process (one thread, like each torchrun worker below)."""
    output = workspace["root"] / "one"
    main(parse_args(_arguments(workspace, output)))
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


def test_kit_ml_end_to_end_with_the_t2m_evaluator(tmp_path):
    """--dataset_format kit-ml: 251-dim motions, guidance 3, the kit/ evaluator folder and statistics, KIT-ML row."""
    data = make_motion_folder(tmp_path / "kit", {"test": NUM_TEST_ITEMS}, feature_dim=251)
    tiny_pipeline(feature_dim=251).save_pretrained(tmp_path / "pipeline")
    save_tiny_t2m_files(tmp_path, dataset_folder="kit", feature_dim=251)
    arguments = [
        "--model", str(tmp_path / "pipeline"), "--data_dir", str(data), "--dataset_format", "kit-ml",
        "--cache_dir", str(tmp_path / "cache"), "--evaluator", "t2m",
        "--evaluator_path", str(tmp_path / "checkpoint_dir"), "--glove_path", str(tmp_path / "glove"),
        "--output_dir", str(tmp_path / "out"), "--seed", "3", "--repeats", "1",
        "--batch_size", str(PROTOCOL_TEST_BATCH_SIZE),
        "--refinement_steps", "1", "1", "1", "1", "--no_multimodality", "--cpu",
    ]  # fmt: skip
    main(parse_args(arguments))
    results, table = _outputs(tmp_path / "out")
    assert results["dataset_format"] == "kit-ml" and results["settings"]["guidance_scale"] == 3.0
    assert results["paper"] == PAPER_RESULTS["kit-ml"]
    assert results["items_evaluated_per_repeat"] == NUM_TEST_ITEMS
    repeat = results["repeats"][0]
    assert 0 <= repeat["top1"] <= repeat["top3"] <= 1 and repeat["fid"] > 0 and "multimodality" not in repeat
    assert "| R-precision Top-1 ↑ | 0.442 |" in table and "| FID ↓ | 0.173 |" in table
