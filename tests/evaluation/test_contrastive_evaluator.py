"""The contrastive text-motion evaluator and examples/train_evaluator.py."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModel

from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel, build_vocabulary, split_words
from tests.helpers import CAPTIONS, FEATURE_DIM, make_motion_folder, tiny_contrastive_config
from tests.shared_data import ROOT


def _batch(num_items: int = 8, seed: int = 0):
    """Captions and raw motions whose features depend on the caption (as in the fixture folders)."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(len(CAPTIONS), FEATURE_DIM))
    labels = np.arange(num_items) % len(CAPTIONS)
    lengths = torch.tensor(rng.integers(10, 16, size=num_items) * 4)
    motions = torch.zeros(num_items, int(lengths.max()), FEATURE_DIM)
    for row, (label, length) in enumerate(zip(labels, lengths)):
        motions[row, :length] = torch.from_numpy(patterns[label] + 0.3 * rng.normal(size=(int(length), FEATURE_DIM)))
    return [CAPTIONS[label][0] for label in labels], motions, lengths


def test_vocabulary_and_words():
    assert split_words("A person, WALKS 2 steps.") == ["a", "person", "walks", "2", "steps"]
    assert build_vocabulary(["b a", "a c", "a b"]) == ("a", "b", "c")  # by count, then alphabetical
    assert build_vocabulary(["b a", "a c", "a b"], min_count=2) == ("a", "b")
    with pytest.raises(ValueError, match="No word"):
        build_vocabulary(["...", ""])


def test_training_lowers_the_loss_and_learns_retrieval():
    torch.manual_seed(0)
    model = ContrastiveEvaluatorModel(tiny_contrastive_config())
    captions, motions, lengths = _batch()
    tokens = model.tokenize(captions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(tokens["input_ids"], tokens["attention_mask"], motions, lengths).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    text, motion = model.get_co_embeddings(captions, motions, lengths)
    similarity = text @ motion.T
    labels = torch.arange(len(captions)) % len(CAPTIONS)
    # Each text's best motion shows its own caption (duplicates share a caption, so compare labels).
    assert torch.equal(labels[similarity.argmax(1)], labels)


def test_duplicate_captions_are_positives():
    torch.manual_seed(0)
    model = ContrastiveEvaluatorModel(tiny_contrastive_config()).eval()
    captions, motions, lengths = _batch(8)
    tokens = model.tokenize(captions)
    loss = model(tokens["input_ids"], tokens["attention_mask"], motions, lengths).loss
    # Rows 0 and 4 have the same caption: swapping their motions must not change the loss.
    swap = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])
    swapped = model(tokens["input_ids"], tokens["attention_mask"], motions[swap], lengths[swap]).loss
    torch.testing.assert_close(loss, swapped)
    # Rows 0 and 1 differ: swapping their motions does change it.
    other = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])
    changed = model(tokens["input_ids"], tokens["attention_mask"], motions[other], lengths[other]).loss
    assert not torch.allclose(loss, changed)


def test_motion_embedding_ignores_padding():
    torch.manual_seed(0)
    model = ContrastiveEvaluatorModel(tiny_contrastive_config()).eval()
    captions, motions, lengths = _batch(4)
    _, reference = model.get_co_embeddings(captions, motions, lengths)
    longer = torch.cat([motions, torch.randn(4, 20, FEATURE_DIM)], dim=1)
    for row, length in enumerate(lengths):
        longer[row, length:] = torch.randn(longer.shape[1] - length, FEATURE_DIM)
    _, padded = model.get_co_embeddings(captions, longer, lengths)
    torch.testing.assert_close(padded, reference, atol=1e-5, rtol=0)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ContrastiveEvaluatorModel(tiny_contrastive_config()).eval()
    model.set_feature_statistics(np.full(FEATURE_DIM, 0.5), np.full(FEATURE_DIM, 2.0))
    captions, motions, lengths = _batch(4)
    expected = model.get_co_embeddings(captions, motions, lengths)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for loaded in (ContrastiveEvaluatorModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, ContrastiveEvaluatorModel)
        assert loaded.config.vocabulary == list(model.config.vocabulary)
        torch.testing.assert_close(loaded.feature_std, torch.full((FEATURE_DIM,), 2.0))
        for got, want in zip(loaded.eval().get_co_embeddings(captions, motions, lengths), expected):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_bad_inputs_raise_clear_errors():
    model = ContrastiveEvaluatorModel(tiny_contrastive_config()).eval()
    captions, motions, lengths = _batch(2)
    with pytest.raises(ValueError, match="features"):
        model.get_co_embeddings(captions, motions[..., :100], lengths)
    with pytest.raises(ValueError, match="lengths"):
        model.get_co_embeddings(captions, motions, lengths + 1000)
    with pytest.raises(ValueError, match="without any word"):
        model.get_co_embeddings(["...", "a person"], motions, lengths)
    with pytest.raises(ValueError, match="std > 0"):
        model.set_feature_statistics(np.zeros(FEATURE_DIM), np.zeros(FEATURE_DIM))
    with pytest.raises(ValueError, match="divisible"):
        tiny_contrastive_config(hidden_size=30, num_heads=4)


def test_train_evaluator_script_runs_and_resumes(tmp_path):
    data = make_motion_folder(tmp_path / "data", {"train": 24, "val": 40})
    output = tmp_path / "evaluator"
    command = [
        sys.executable,
        str(ROOT / "examples" / "train_evaluator.py"),
        "--data_dir", str(data),
        "--output_dir", str(output),
        "--cache_dir", str(tmp_path / "cache"),
        "--train_batch_size", "8",
        "--hidden_size", "32", "--num_layers", "1", "--num_heads", "2", "--embedding_dim", "16",
        "--checkpointing_steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([*command, "--max_train_steps", "2"], check=True, env=env, cwd=tmp_path, capture_output=True)
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    assert summary["validation"]["items"] == 32 and 0 <= summary["validation"]["r_precision_top1"] <= 1
    model = ContrastiveEvaluatorModel.from_pretrained(output)
    mean = np.load(data / "Mean.npy")
    np.testing.assert_allclose(model.feature_mean.numpy(), mean.astype(np.float32))
    assert "walk" not in model.config.vocabulary and "walks" in model.config.vocabulary

    # Resume in-process (the script's own parse_args and main), which spares a second interpreter start.
    spec = importlib.util.spec_from_file_location("examples_train_evaluator", ROOT / "examples" / "train_evaluator.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(script.parse_args([*command[2:], "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]))
    assert json.loads((output / "training_summary.json").read_text())["steps"] == 3
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["checkpoint_1", "checkpoint_2"]
