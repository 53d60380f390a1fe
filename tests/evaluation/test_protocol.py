"""The protocol in-process: batches, jobs and seeds, and a generator that returns the real motions scores like them."""

import numpy as np
import pytest
import torch

from moscale.evaluation.co_embedders import ContrastiveCoEmbedder
from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel
from moscale.evaluation.protocol import (
    DEFAULT_GUIDANCE,
    derived_seed,
    evaluate_repeat,
    generation_jobs,
    load_batch,
    repeat_batches,
)
from moscale.evaluation.report import PAPER_RESULTS
from tests.helpers import perfect_generator, protocol_settings


def test_jobs_batches_and_seeds(workspace):
    settings = protocol_settings()
    assert generation_jobs(7, settings) == [(0, g) for g in range(11)] + [(b, 0) for b in range(1, 7)]
    assert len(generation_jobs(7, protocol_settings(multimodality=False))) == 7
    with pytest.raises(ValueError, match="MultiModality uses 3 batches"):
        generation_jobs(2, protocol_settings(multimodality_batches=3))
    batches = repeat_batches(40, 16, seed=3, repeat=0)
    assert [len(b) for b in batches] == [16, 16]  # the last partial batch is dropped, as drop_last=True does
    assert len(set(np.concatenate(batches))) == 32
    assert not np.array_equal(np.concatenate(batches), np.concatenate(repeat_batches(40, 16, seed=3, repeat=1)))
    assert derived_seed(3, 0, 1) == derived_seed(3, 0, 1) != derived_seed(3, 1, 0)
    # A batch is the same whoever loads it: one random caption and crop per item, from its own seed.
    first = load_batch(workspace["rows"], batches[0], 3, 0, 0)
    again = load_batch(workspace["rows"], batches[0], 3, 0, 0)
    assert first.captions == again.captions and torch.equal(first.motions, again.motions)
    assert all(length % 4 == 0 for length in first.lengths.tolist())
    with pytest.raises(ValueError, match="multimodality_generations must be > 10"):
        protocol_settings(multimodality_generations=10)


def test_a_perfect_generator_scores_like_the_real_motions(workspace):
    rows, settings = workspace["rows"], protocol_settings()
    embed = ContrastiveCoEmbedder(ContrastiveEvaluatorModel.from_pretrained(workspace["root"] / "evaluator"))
    result = evaluate_repeat(rows, settings, 0, embed, perfect_generator(rows, settings, 0))
    for name in ("top1", "top2", "top3", "matching_score"):
        assert result[name] == pytest.approx(result[f"real_{name}"], abs=1e-6)
    assert abs(result["fid"]) < 1e-5
    assert result["multimodality"] == pytest.approx(0, abs=1e-6)  # 11 identical "generations"
    noisy = evaluate_repeat(rows, settings, 0, embed, perfect_generator(rows, settings, 0, noise=3.0))
    assert noisy["fid"] > 1e-3 and noisy["multimodality"] > 1e-3
    assert noisy["real_top1"] == result["real_top1"]  # the real side does not depend on the generator


def test_every_dataset_format_has_protocol_defaults_and_evaluator_files():
    from moscale.evaluation.t2m_evaluator import DATASET_FOLDERS, load_evaluator_stats
    from moscale.motion.data import FOLDER_FORMATS

    assert set(DEFAULT_GUIDANCE) == set(PAPER_RESULTS) == set(DATASET_FOLDERS) == set(FOLDER_FORMATS)
    for name, folder_format in FOLDER_FORMATS.items():
        mean, std = load_evaluator_stats(name)
        assert mean.shape == std.shape == (folder_format.feature_dim,)
