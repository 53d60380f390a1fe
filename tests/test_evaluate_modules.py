"""The `evaluate` modules in metrics/ load offline and reproduce the reference values of the metrics case.

The reference folder is `../shared/data/metrics_reference` beside the repository, or MOSCALE_METRICS_FIXTURE.
"""

import evaluate
import numpy as np
import pytest

from tests.shared_data import ROOT, load_metrics_case

RTOL = 1e-6


@pytest.fixture(scope="module")
def case():
    return load_metrics_case()


def load(name: str) -> evaluate.EvaluationModule:
    return evaluate.load(str(ROOT / "metrics" / name))


def test_r_precision_module(case):
    tensors, meta = case
    batch = meta["sizes"]["batch"]
    module = load("r_precision")
    for text_key, motion_key, expected_key in (
        ("emb.et", "emb.em", "loop.R_precision_real"),
        ("emb.et_pred", "emb.em_pred", "loop.R_precision_pred"),
    ):
        result = module.compute(
            text_embeddings=tensors[text_key], motion_embeddings=tensors[motion_key], batch_size=batch
        )
        np.testing.assert_allclose([result["top1"], result["top2"], result["top3"]], tensors[expected_key], rtol=RTOL)


def test_r_precision_module_accumulates_batches_like_one_call(case):
    tensors, meta = case
    batch = meta["sizes"]["batch"]
    module = load("r_precision")
    for start in range(0, len(tensors["emb.et"]), batch):
        module.add_batch(
            text_embeddings=tensors["emb.et_pred"][start : start + batch],
            motion_embeddings=tensors["emb.em_pred"][start : start + batch],
        )
    result = module.compute(batch_size=batch)
    np.testing.assert_allclose(list(result.values()), meta["scalars"]["loop.R_precision_pred"], rtol=RTOL)


def test_mm_dist_module(case):
    tensors, meta = case
    module = load("mm_dist")
    result = module.compute(
        text_embeddings=tensors["emb.et_pred"],
        motion_embeddings=tensors["emb.em_pred"],
        batch_size=meta["sizes"]["batch"],
    )
    np.testing.assert_allclose(result["mm_dist"], meta["scalars"]["loop.matching_score_pred"], rtol=RTOL)


def test_fid_module(case):
    tensors, meta = case
    result = load("fid").compute(predictions=tensors["emb.em_pred"], references=tensors["emb.em"])
    np.testing.assert_allclose(result["fid"], meta["scalars"]["pure.fid"], rtol=RTOL)


def test_diversity_module(case):
    tensors, meta = case
    module = load("diversity")
    result = module.compute(
        embeddings=tensors["emb.em"], seed=meta["seeds"]["div_seed"], times=meta["scalars"]["pure.diversity_times"]
    )
    np.testing.assert_allclose(result["diversity"], meta["scalars"]["pure.diversity"], rtol=RTOL)
    with pytest.raises(ValueError, match="seed"):
        module.compute(embeddings=tensors["emb.em"])


def test_multimodality_module(case):
    tensors, meta = case
    module = load("multimodality")
    result = module.compute(
        embeddings=tensors["emb.mm"], seed=meta["seeds"]["mm_seed"], times=meta["sizes"]["mm_times"]
    )
    np.testing.assert_allclose(result["multimodality"], meta["scalars"]["pure.multimodality"], rtol=RTOL)
    with pytest.raises(ValueError, match="seed"):
        module.compute(embeddings=tensors["emb.mm"][:4])
    generations = tensors["emb.mm"].shape[1]
    with pytest.raises(ValueError, match="same number of generations"):
        module.compute(embeddings=[tensors["emb.mm"][0], tensors["emb.mm"][1][: generations - 1]], seed=0)


def test_modules_reject_partial_batches(case):
    tensors, _ = case
    with pytest.raises(ValueError, match="multiple of batch_size"):
        load("r_precision").compute(text_embeddings=tensors["emb.et"][:40], motion_embeddings=tensors["emb.em"][:40])
    with pytest.raises(ValueError, match="multiple of batch_size"):
        load("mm_dist").compute(text_embeddings=tensors["emb.et"][:40], motion_embeddings=tensors["emb.em"][:40])
