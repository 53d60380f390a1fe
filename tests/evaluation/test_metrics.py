"""moscale.evaluation.metrics against the reference values made by running the MoScale authors' evaluation code.

The reference folder (README.md, meta.json, case.safetensors) is `../shared/data/metrics_reference` beside the
repository, or the folder named by MOSCALE_METRICS_FIXTURE. Sizes and seeds are read from the case itself.
"""

import numpy as np
import pytest
import torch
from scipy import linalg

from moscale.evaluation import metrics
from tests.shared_data import load_metrics_case

RTOL = 1e-6


@pytest.fixture(scope="module")
def case():
    return load_metrics_case()


def assert_rel(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=rtol)


def assert_close_to_scale(actual, expected, rtol=RTOL):
    """Elementwise, relative to the array's largest magnitude: entries near 0 have no meaningful relative error."""
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=0, atol=atol)


def batch0(case):
    tensors, meta = case
    size = meta["sizes"]["batch"]
    return tensors["emb.et"][:size], tensors["emb.em"][:size]


def test_distance_matrix_matches_reference_expansion(case):
    tensors, _ = case
    et, em = batch0(case)
    dist = metrics.euclidean_distance_matrix(et, em)
    assert dist.dtype == np.float32
    assert_rel(dist, tensors["pure.batch0.dist"])
    clamped = metrics.euclidean_distance_matrix(torch.from_numpy(et), torch.from_numpy(em), clamp_negative=True)
    assert_rel(clamped, tensors["pure.batch0.dist_gpu_variant"])


def test_r_precision_counts_of_one_batch(case):
    tensors, meta = case
    et, em = batch0(case)
    order = np.argsort(metrics.euclidean_distance_matrix(et, em), axis=1)
    np.testing.assert_array_equal(order, tensors["pure.batch0.argsort"])
    np.testing.assert_array_equal(metrics.top_k_hits(order, 3), tensors["pure.batch0.top_k_mat"])
    counts = metrics.r_precision_counts(et, em)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, tensors["pure.batch0.R_precision_counts"])
    np.testing.assert_array_equal(counts, tensors["pure.batch0.R_precision_counts_gpu_variant"].astype(np.int64))
    np.testing.assert_array_equal(
        metrics.r_precision_counts(et, em, distance="cosine"), tensors["pure.batch0.R_precision_counts_cosine"]
    )
    cosine = metrics.cosine_similarity_matrix(et, em)
    assert_close_to_scale(cosine, tensors["pure.batch0.cosine_sim"])
    assert_rel(np.trace(cosine), meta["scalars"]["pure.batch0.cosine_trace"])


def test_matching_trace_of_one_batch(case):
    tensors, meta = case
    trace = metrics.matching_trace(*batch0(case))
    assert trace.dtype == np.float32
    assert_rel(trace, tensors["pure.batch0.matching_trace"][0])
    assert_rel(trace, meta["scalars"]["pure.batch0.matching_trace"])


def test_activation_statistics(case):
    tensors, meta = case
    scalars = meta["scalars"]
    for name, key in (("real", "emb.em"), ("pred", "emb.em_pred")):
        mu, cov = metrics.activation_statistics(tensors[key])
        assert mu.dtype == np.dtype(scalars["pure.stats.mu_dtype"])
        assert cov.dtype == np.dtype(scalars["pure.stats.cov_dtype"])
        assert_close_to_scale(mu, tensors[f"pure.stats.mu_{name}"])
        assert_rel(np.diagonal(cov), tensors[f"pure.stats.cov_{name}_diag"])
        assert_rel(np.trace(cov), scalars[f"pure.stats.cov_{name}_trace"])
        assert_rel(cov.sum(), scalars[f"pure.stats.cov_{name}_sum"])


def test_fid_matches_reference(case):
    tensors, meta = case
    scalars = meta["scalars"]
    real, pred = tensors["emb.em"], tensors["emb.em_pred"]
    assert_rel(metrics.fid(real, pred), scalars["pure.fid"])
    mu_real, mu_pred = metrics.activation_statistics(real)[0], metrics.activation_statistics(pred)[0]
    mean_term = (mu_real - mu_pred).dot(mu_real - mu_pred)
    assert mean_term.dtype == np.float32
    assert_rel(mean_term, scalars["pure.fid.mean_term_float32"])
    np.testing.assert_allclose(metrics.fid(real, real), scalars["pure.fid_real_vs_real"], atol=1e-5)


def test_fid_from_float64_statistics_matches_torch_variant(case):
    tensors, meta = case

    def stats64(x):
        x = torch.from_numpy(x).double()
        centered = x - x.mean(0)
        return x.mean(0).numpy(), (centered.T @ centered / (len(x) - 1)).numpy()

    fid = metrics.frechet_distance(*stats64(tensors["emb.em"]), *stats64(tensors["emb.em_pred"]))
    assert_rel(fid, meta["scalars"]["pure.fid_gpu_variant_stats"])


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_fid_retries_a_singular_product_with_eps_on_the_diagonal():
    nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
    identity = np.eye(2)
    mu = np.zeros(2)
    assert not np.isfinite(linalg.sqrtm(nilpotent @ identity)).all()
    offset = 1e-6 * np.eye(2)
    root = linalg.sqrtm((nilpotent + offset) @ (identity + offset)).real
    expected = np.trace(nilpotent) + np.trace(identity) - 2 * np.trace(root)
    assert_rel(metrics.frechet_distance(mu, nilpotent, mu, identity), expected)


def test_fid_rejects_a_large_imaginary_part():
    with pytest.raises(ValueError, match="imaginary part"):
        metrics.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_fid_rejects_mismatched_statistics():
    with pytest.raises(ValueError, match="Mean vectors"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="Covariances"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


def test_diversity_with_numpy_legacy_seed(case):
    tensors, meta = case
    seed, times = meta["seeds"]["div_seed"], meta["scalars"]["pure.diversity_times"]
    num = tensors["emb.em"].shape[0]
    rng = np.random.RandomState(seed)
    np.testing.assert_array_equal(metrics.draw_indices(rng, num, times), tensors["pure.diversity.first_indices"])
    np.testing.assert_array_equal(metrics.draw_indices(rng, num, times), tensors["pure.diversity.second_indices"])
    value = metrics.diversity(tensors["emb.em"], times, rng=seed)
    assert value.dtype == np.dtype(meta["scalars"]["pure.diversity_dtype"])
    assert_rel(value, meta["scalars"]["pure.diversity"])


def test_diversity_with_torch_generator(case):
    tensors, meta = case
    seed, times = meta["seeds"]["gpu_div_seed"], meta["scalars"]["pure.diversity_times"]
    num = tensors["emb.em"].shape[0]
    generator = torch.Generator().manual_seed(seed)
    np.testing.assert_array_equal(
        metrics.draw_indices(generator, num, times), tensors["pure.diversity_gpu_variant.first_indices"]
    )
    np.testing.assert_array_equal(
        metrics.draw_indices(generator, num, times), tensors["pure.diversity_gpu_variant.second_indices"]
    )
    value = metrics.diversity(tensors["emb.em"], times, rng=torch.Generator().manual_seed(seed))
    assert_rel(value, meta["scalars"]["pure.diversity_gpu_variant"])


def test_multimodality(case):
    tensors, meta = case
    mm = tensors["emb.mm"]
    rng = np.random.RandomState(meta["seeds"]["mm_seed"])
    times = meta["sizes"]["mm_times"]
    for key in ("first_indices", "second_indices"):
        expected = tensors[f"pure.multimodality.{key}"]
        np.testing.assert_array_equal(metrics.draw_indices(rng, mm.shape[1], times), expected)
    value = metrics.multimodality(mm, rng=meta["seeds"]["mm_seed"], times=times)
    assert value.dtype == np.dtype(meta["scalars"]["pure.multimodality_dtype"])
    assert_rel(value, meta["scalars"]["pure.multimodality"])


def test_protocol_accumulation_matches_evaluation_moscale(case):
    tensors, meta = case
    scalars, sizes = meta["scalars"], meta["sizes"]
    batch = sizes["batch"]
    et, em, et_pred, em_pred = (tensors[f"emb.{k}"] for k in ("et", "em", "et_pred", "em_pred"))
    for b in range(sizes["num_batches"]):
        rows = slice(b * batch, (b + 1) * batch)
        np.testing.assert_array_equal(
            metrics.r_precision_counts(et[rows], em[rows]), tensors["loop.per_batch.R_counts_real"][b]
        )
        np.testing.assert_array_equal(
            metrics.r_precision_counts(et_pred[rows], em_pred[rows]), tensors["loop.per_batch.R_counts_pred"][b]
        )
        assert_rel(metrics.matching_trace(et[rows], em[rows]), tensors["loop.per_batch.matching_trace_real"][b])
        assert_rel(
            metrics.matching_trace(et_pred[rows], em_pred[rows]), tensors["loop.per_batch.matching_trace_pred"][b]
        )

    results = metrics.t2m_metrics(
        et,
        em,
        et_pred,
        em_pred,
        rng=meta["seeds"]["loop_seed"],
        multimodality_embeddings=tensors["emb.mm"],
        batch_size=batch,
    )
    assert scalars["loop.nb_sample"] == len(et)
    assert scalars["loop.diversity_times"] == metrics.diversity_times(len(et))
    assert results["r_precision"].dtype == np.float64
    assert_rel(results["r_precision_real"], tensors["loop.R_precision_real"])
    assert_rel(results["r_precision"], tensors["loop.R_precision_pred"])
    assert_rel(results["r_precision"], scalars["loop.R_precision_pred"])
    for ours, theirs in (("matching_score", "pred"), ("matching_score_real", "real")):
        assert results[ours].dtype == np.dtype(scalars[f"loop.matching_score_{theirs}_dtype"])
        assert_rel(results[ours], scalars[f"loop.matching_score_{theirs}"])
    assert_rel(results["fid"], scalars["loop.fid"])
    assert_rel(results["multimodality"], scalars["loop.multimodality"])
    assert_rel(results["diversity_real"], scalars["loop.diversity_real"])
    assert_rel(results["diversity"], scalars["loop.diversity_pred"])


def test_draw_order_of_the_protocol_is_one_stream(case):
    tensors, meta = case
    num, times = tensors["emb.em"].shape[0], meta["scalars"]["loop.diversity_times"]
    repeats = tensors["emb.mm"].shape[1]
    rng = np.random.RandomState(meta["seeds"]["loop_seed"])
    for key, population, count in (
        ("mm.first", repeats, meta["sizes"]["mm_times"]),
        ("mm.second", repeats, meta["sizes"]["mm_times"]),
        ("div_real.first", num, times),
        ("div_real.second", num, times),
        ("div_pred.first", num, times),
        ("div_pred.second", num, times),
    ):
        np.testing.assert_array_equal(metrics.draw_indices(rng, population, count), tensors[f"loop.rng.{key}"])


def test_set_level_r_precision_and_matching_score_accept_torch(case):
    tensors, meta = case
    et, em = (torch.from_numpy(tensors[k]) for k in ("emb.et", "emb.em"))
    assert_rel(metrics.r_precision(et, em, batch_size=meta["sizes"]["batch"]), tensors["loop.R_precision_real"])
    assert_rel(metrics.matching_score(et, em), meta["scalars"]["loop.matching_score_real"])


def test_t2m_metrics_without_multimodality_draws_diversity_first(case):
    tensors, meta = case
    seed = meta["seeds"]["loop_seed"]
    em, em_pred = tensors["emb.em"], tensors["emb.em_pred"]
    results = metrics.t2m_metrics(tensors["emb.et"], em, tensors["emb.et_pred"], em_pred, rng=seed)
    assert "multimodality" not in results
    rng = np.random.RandomState(seed)
    times = metrics.diversity_times(len(em))
    assert results["diversity_real"] == metrics.diversity(em, times, rng)
    assert results["diversity"] == metrics.diversity(em_pred, times, rng)


def test_confidence_interval():
    mean, half_width = metrics.confidence_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half_width == pytest.approx(1.96 * np.sqrt(1.25) / 2.0, rel=1e-12)
    assert metrics.confidence_interval([0.5] * 20) == (0.5, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.confidence_interval([])


def test_bad_inputs_are_rejected_with_clear_errors(case):
    tensors, _ = case
    em, et = tensors["emb.em"], tensors["emb.et"]
    with pytest.raises(ValueError, match="same shape"):
        metrics.r_precision_counts(et[:32], em[:31])
    with pytest.raises(ValueError, match="multiple of batch_size=32"):
        metrics.r_precision(et[:40], em[:40])
    with pytest.raises(ValueError, match="multiple of batch_size=32"):
        metrics.matching_score(et[:0], em[:0])
    with pytest.raises(ValueError, match="2 dimensions"):
        metrics.euclidean_distance_matrix(em[0], em)
    with pytest.raises(ValueError, match="Embedding sizes differ"):
        metrics.euclidean_distance_matrix(em[:, :10], em)
    with pytest.raises(ValueError, match="floating-point"):
        metrics.fid(em.astype(np.int64), em)
    with pytest.raises(ValueError, match="more than times=300"):
        metrics.diversity(em[:300], 300, rng=0)
    with pytest.raises(ValueError, match="more than times=10 generations"):
        metrics.multimodality(tensors["emb.mm"][:, :10], rng=0)
    with pytest.raises(ValueError, match="3 dimensions"):
        metrics.multimodality(em, rng=0)
    with pytest.raises(TypeError, match="rng"):
        metrics.diversity(em, 10, rng=0.5)
    with pytest.raises(ValueError, match="'euclidean' or 'cosine'"):
        metrics.r_precision_counts(et[:32], em[:32], distance="l1")
    with pytest.raises(ValueError, match="top_k"):
        metrics.r_precision_counts(et[:4], em[:4], top_k=5)
