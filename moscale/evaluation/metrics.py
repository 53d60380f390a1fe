"""Text-to-motion evaluation metrics, computed the way the field computes them.

Every function here reproduces the arithmetic of the evaluation code used for the MoScale paper (and, before it,
T2M, T2M-GPT and MoMask): the same float32/float64 split, the same per-batch gallery of 32 candidates for
R-precision, the same random draws for Diversity and MultiModality. The reasons are spelled out in
`docs/evaluation.md`; the numbers are checked against the authors' own code in `tests/evaluation/test_metrics.py`.

Inputs are co-embeddings from the T2M evaluator (`moscale.evaluation.t2m_evaluator.T2MEvaluator`): numpy arrays or torch tensors
of shape (N, D), float32 as the evaluator returns them. Results are numpy scalars/arrays in the dtype the
reference computation produces (float32 for distances, float64 for FID and R-precision).

Random draws take an explicit generator (``rng``):

- an ``int`` seed or a ``numpy.random.RandomState``: draws ``rng.choice(n, k, replace=False)``, which is exactly
  what the reference code draws from numpy's global legacy state after ``np.random.seed(seed)``;
- a ``torch.Generator``: draws ``torch.randperm(n, generator=rng)[:k]``, the reference's torch variant;
- a ``numpy.random.Generator``: draws ``rng.choice(n, k, replace=False)`` (a different stream from the above).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import linalg

__all__ = [
    "CONFIDENCE_Z",
    "MULTIMODALITY_TIMES",
    "PROTOCOL_BATCH_SIZE",
    "R_PRECISION_TOP_K",
    "RandomSource",
    "activation_statistics",
    "as_random_source",
    "confidence_interval",
    "cosine_similarity_matrix",
    "diversity",
    "diversity_times",
    "draw_indices",
    "euclidean_distance_matrix",
    "fid",
    "frechet_distance",
    "matching_score",
    "matching_trace",
    "multimodality",
    "r_precision",
    "r_precision_counts",
    "t2m_metrics",
    "top_k_hits",
]

RandomSource = int | np.random.RandomState | np.random.Generator | torch.Generator

PROTOCOL_BATCH_SIZE = 32
R_PRECISION_TOP_K = 3
MULTIMODALITY_TIMES = 10
CONFIDENCE_Z = 1.96


def _as_numpy(array: Any, name: str, ndim: int) -> np.ndarray:
    """Returns ``array`` as a numpy array without changing its dtype, after checking its rank."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"`{name}` must hold floating-point embeddings, got dtype {array.dtype}.")
    return array


def _check_paired(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    if first.shape != second.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape (row i of one goes with row i of the other), "
            f"got {first.shape} and {second.shape}."
        )


def as_random_source(rng: RandomSource) -> np.random.RandomState | np.random.Generator | torch.Generator:
    """Turns an int seed into a ``numpy.random.RandomState``; checks and returns any other generator unchanged.

    Call it once per stream: every later draw must come from the same object, as in the reference.
    """
    if isinstance(rng, (np.random.RandomState, np.random.Generator, torch.Generator)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.RandomState(int(rng))
    raise TypeError(
        "`rng` must be an int seed, a numpy.random.RandomState, a numpy.random.Generator or a torch.Generator, "
        f"got {type(rng).__name__}."
    )


def draw_indices(rng: RandomSource, population: int, count: int) -> np.ndarray:
    """Draws ``count`` distinct indices out of ``range(population)`` from ``rng`` (see the module docstring).

    An int seed starts a new stream on every call; pass a generator to continue one.
    """
    if count > population:
        raise ValueError(f"Cannot draw {count} distinct indices out of {population}.")
    rng = as_random_source(rng)
    if isinstance(rng, torch.Generator):
        return torch.randperm(population, generator=rng, device=rng.device)[:count].cpu().numpy()
    return np.asarray(rng.choice(population, count, replace=False), dtype=np.int64)


def euclidean_distance_matrix(embeddings1_ND: Any, embeddings2_MD: Any, clamp_negative: bool = False) -> np.ndarray:
    """Pairwise Euclidean distances, ``dist[i, j] = ||embeddings1[i] - embeddings2[j]||``, shape (N, M).

    Computed as ``sqrt(-2 a.b + |a|^2 + |b|^2)`` in the input dtype, with the three terms added in that order: this
    expansion (rather than a direct difference) is what the reference numbers are made of. When cancellation makes
    the sum slightly negative the reference gives NaN; ``clamp_negative=True`` clamps at 0 first, as the reference's
    torch variant does.
    """
    a_ND = _as_numpy(embeddings1_ND, "embeddings1", 2)
    b_MD = _as_numpy(embeddings2_MD, "embeddings2", 2)
    if a_ND.shape[1] != b_MD.shape[1]:
        raise ValueError(f"Embedding sizes differ: {a_ND.shape[1]} and {b_MD.shape[1]}.")
    squared_NM = -2 * np.dot(a_ND, b_MD.T) + np.sum(np.square(a_ND), axis=1, keepdims=True)
    squared_NM = squared_NM + np.sum(np.square(b_MD), axis=1)
    if clamp_negative:
        squared_NM = np.maximum(squared_NM, 0)
    return np.sqrt(squared_NM)


def cosine_similarity_matrix(embeddings1_ND: Any, embeddings2_MD: Any) -> np.ndarray:
    """Pairwise cosine similarities of L2-normalised rows, shape (N, M), in the input dtype."""
    a_ND = _as_numpy(embeddings1_ND, "embeddings1", 2)
    b_MD = _as_numpy(embeddings2_MD, "embeddings2", 2)
    a_ND = a_ND / np.linalg.norm(a_ND, axis=-1, keepdims=True)
    b_MD = b_MD / np.linalg.norm(b_MD, axis=-1, keepdims=True)
    return np.dot(a_ND, b_MD.T)


def top_k_hits(order_NN: np.ndarray, top_k: int) -> np.ndarray:
    """Boolean (N, top_k): entry [i, k-1] says whether candidate i is among the first k of row i of ``order``.

    ``order[i]`` ranks the candidates for query i (an argsort of its distances), so the matrix is cumulative along
    its columns.
    """
    order_NN = np.asarray(order_NN)
    if order_NN.ndim != 2 or order_NN.shape[1] < top_k:
        raise ValueError(f"`order` must be (N, >= top_k={top_k}), got shape {order_NN.shape}.")
    is_self_NK = order_NN[:, :top_k] == np.arange(order_NN.shape[0])[:, None]
    return np.logical_or.accumulate(is_self_NK, axis=1)


def r_precision_counts(
    text_embeddings_BD: Any,
    motion_embeddings_BD: Any,
    top_k: int = R_PRECISION_TOP_K,
    distance: str = "euclidean",
) -> np.ndarray:
    """R-precision hit counts for ONE batch, int64 (top_k,): how many texts find their own motion in the top k.

    Each text ranks all the motions of its batch (the gallery is the batch, 32 motions in the standard protocol).
    The counts are divided by the number of texts only after summing over batches (`t2m_metrics`).
    ``distance`` is ``"euclidean"`` (the MoScale/T2M protocol) or ``"cosine"`` (ranks by -cosine similarity).
    """
    text_BD = _as_numpy(text_embeddings_BD, "text_embeddings", 2)
    motion_BD = _as_numpy(motion_embeddings_BD, "motion_embeddings", 2)
    _check_paired(text_BD, motion_BD, ("text_embeddings", "motion_embeddings"))
    if not 1 <= top_k <= text_BD.shape[0]:
        raise ValueError(f"`top_k` must lie in [1, batch size {text_BD.shape[0]}], got {top_k}.")
    if distance == "euclidean":
        dist_BB = euclidean_distance_matrix(text_BD, motion_BD)
    elif distance == "cosine":
        dist_BB = -cosine_similarity_matrix(text_BD, motion_BD)
    else:
        raise ValueError(f"`distance` must be 'euclidean' or 'cosine', got {distance!r}.")
    order_BB = np.argsort(dist_BB, axis=1)
    return top_k_hits(order_BB, top_k).sum(axis=0)


def matching_trace(text_embeddings_BD: Any, motion_embeddings_BD: Any) -> np.floating:
    """Sum over i of ``||text_i - motion_i||`` (the trace of the distance matrix) for one batch, in the input dtype."""
    text_BD = _as_numpy(text_embeddings_BD, "text_embeddings", 2)
    motion_BD = _as_numpy(motion_embeddings_BD, "motion_embeddings", 2)
    _check_paired(text_BD, motion_BD, ("text_embeddings", "motion_embeddings"))
    return euclidean_distance_matrix(text_BD, motion_BD).trace()


def _batches(num_rows: int, batch_size: int) -> range:
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    if num_rows == 0 or num_rows % batch_size:
        raise ValueError(
            f"Got {num_rows} embeddings, not a positive multiple of batch_size={batch_size}. The standard loader "
            f"drops the last partial batch (drop_last=True): pass only the first "
            f"{num_rows // batch_size * batch_size} rows."
        )
    return range(0, num_rows, batch_size)


def r_precision(
    text_embeddings_ND: Any,
    motion_embeddings_ND: Any,
    batch_size: int = PROTOCOL_BATCH_SIZE,
    top_k: int = R_PRECISION_TOP_K,
    distance: str = "euclidean",
) -> np.ndarray:
    """R-precision top-1..top_k over a set, float64 (top_k,): per-batch hit counts summed, divided by N.

    Rows are taken in order in batches of ``batch_size``; N must be a multiple of it.
    """
    text_ND = _as_numpy(text_embeddings_ND, "text_embeddings", 2)
    motion_ND = _as_numpy(motion_embeddings_ND, "motion_embeddings", 2)
    _check_paired(text_ND, motion_ND, ("text_embeddings", "motion_embeddings"))
    hits = sum(
        r_precision_counts(text_ND[s : s + batch_size], motion_ND[s : s + batch_size], top_k, distance)
        for s in _batches(len(text_ND), batch_size)
    )
    return hits / len(text_ND)


def matching_score(
    text_embeddings_ND: Any, motion_embeddings_ND: Any, batch_size: int = PROTOCOL_BATCH_SIZE
) -> np.floating:
    """MM-Dist: mean distance between paired text and motion embeddings.

    Accumulated as the reference does: per-batch traces summed in the embedding dtype (float32), divided by N.
    """
    text_ND = _as_numpy(text_embeddings_ND, "text_embeddings", 2)
    motion_ND = _as_numpy(motion_embeddings_ND, "motion_embeddings", 2)
    _check_paired(text_ND, motion_ND, ("text_embeddings", "motion_embeddings"))
    total = text_ND.dtype.type(0)
    for start in _batches(len(text_ND), batch_size):
        total = total + matching_trace(text_ND[start : start + batch_size], motion_ND[start : start + batch_size])
    return total / len(text_ND)


def activation_statistics(embeddings_ND: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (in the input dtype) and unbiased covariance (float64, divides by N-1) of the rows."""
    emb_ND = _as_numpy(embeddings_ND, "embeddings", 2)
    if len(emb_ND) < 2:
        raise ValueError(f"Need at least 2 embeddings for a covariance, got {len(emb_ND)}.")
    return np.mean(emb_ND, axis=0), np.cov(emb_ND, rowvar=False)


def frechet_distance(
    mu1_D: np.ndarray, sigma1_DD: np.ndarray, mu2_D: np.ndarray, sigma2_DD: np.ndarray, eps: float = 1e-6
) -> np.float64:
    """Frechet distance ``|mu1-mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))`` between two Gaussians.

    The matrix square root is scipy's ``sqrtm`` of the product. If it is not finite (a singular product), it is
    recomputed with ``eps`` added to both diagonals. A complex result is accepted only when every diagonal
    imaginary part is below 1e-3 (then its real part is used); otherwise a ValueError is raised.
    """
    mu1_D, mu2_D = np.atleast_1d(mu1_D), np.atleast_1d(mu2_D)
    sigma1_DD, sigma2_DD = np.atleast_2d(sigma1_DD), np.atleast_2d(sigma2_DD)
    if mu1_D.shape != mu2_D.shape:
        raise ValueError(f"Mean vectors differ in shape: {mu1_D.shape} and {mu2_D.shape}.")
    if sigma1_DD.shape != sigma2_DD.shape or sigma1_DD.shape != (mu1_D.shape[0],) * 2:
        raise ValueError(
            f"Covariances must both be ({mu1_D.shape[0]}, {mu1_D.shape[0]}), got {sigma1_DD.shape} and "
            f"{sigma2_DD.shape}."
        )
    diff_D = mu1_D - mu2_D
    covmean_DD = linalg.sqrtm(sigma1_DD.dot(sigma2_DD))
    if not np.isfinite(covmean_DD).all():
        offset_DD = np.eye(sigma1_DD.shape[0]) * eps
        covmean_DD = linalg.sqrtm((sigma1_DD + offset_DD).dot(sigma2_DD + offset_DD))
    if np.iscomplexobj(covmean_DD):
        if not np.allclose(np.diagonal(covmean_DD).imag, 0, atol=1e-3):
            raise ValueError(
                f"FID: the matrix square root has an imaginary part of {np.max(np.abs(covmean_DD.imag)):.3g}; the "
                "covariances are too ill-conditioned (too few embeddings for their dimension?)."
            )
        covmean_DD = covmean_DD.real
    return diff_D.dot(diff_D) + np.trace(sigma1_DD) + np.trace(sigma2_DD) - 2 * np.trace(covmean_DD)


def fid(real_embeddings_ND: Any, generated_embeddings_MD: Any) -> np.float64:
    """FID between the real and the generated motion embeddings (real set first, as in the reference)."""
    mu_real, sigma_real = activation_statistics(real_embeddings_ND)
    mu_gen, sigma_gen = activation_statistics(generated_embeddings_MD)
    if mu_real.shape != mu_gen.shape:
        raise ValueError(f"Embedding sizes differ: {mu_real.shape[0]} and {mu_gen.shape[0]}.")
    return frechet_distance(mu_real, sigma_real, mu_gen, sigma_gen)


def diversity_times(num_samples: int) -> int:
    """Number of Diversity pairs in the standard protocol: 300 when there are more than 300 samples, else 100."""
    return 300 if num_samples > 300 else 100


def diversity(embeddings_ND: Any, times: int, rng: RandomSource) -> np.floating:
    """Mean distance between ``times`` random pairs of rows.

    Two independent index draws of ``times`` distinct rows each (so a pair may be a row with itself).
    Requires N > times.
    """
    emb_ND = _as_numpy(embeddings_ND, "embeddings", 2)
    if emb_ND.shape[0] <= times:
        raise ValueError(f"Diversity needs more than times={times} embeddings, got {emb_ND.shape[0]}.")
    rng = as_random_source(rng)
    first_K = draw_indices(rng, emb_ND.shape[0], times)
    second_K = draw_indices(rng, emb_ND.shape[0], times)
    return linalg.norm(emb_ND[first_K] - emb_ND[second_K], axis=1).mean()


def multimodality(embeddings_TRD: Any, rng: RandomSource, times: int = MULTIMODALITY_TIMES) -> np.floating:
    """Mean distance between ``times`` random pairs of generations of the same text.

    ``embeddings_TRD`` holds R generations for each of T texts. The same ``times`` column pairs are used for every
    text. Requires R > times.
    """
    emb_TRD = _as_numpy(embeddings_TRD, "embeddings", 3)
    if emb_TRD.shape[1] <= times:
        raise ValueError(f"MultiModality needs more than times={times} generations per text, got {emb_TRD.shape[1]}.")
    rng = as_random_source(rng)
    first_K = draw_indices(rng, emb_TRD.shape[1], times)
    second_K = draw_indices(rng, emb_TRD.shape[1], times)
    return linalg.norm(emb_TRD[:, first_K] - emb_TRD[:, second_K], axis=2).mean()


def t2m_metrics(
    text_embeddings: Any,
    motion_embeddings: Any,
    generated_text_embeddings: Any,
    generated_motion_embeddings: Any,
    rng: RandomSource,
    multimodality_embeddings: Any | None = None,
    batch_size: int = PROTOCOL_BATCH_SIZE,
) -> dict[str, Any]:
    """One repeat of the standard protocol from the evaluator's co-embeddings of a whole test set.

    Rows are in loader order (batch b is rows ``batch_size*b ...``). ``generated_text_embeddings`` are the text
    embeddings returned beside the generated motions' embeddings (the same texts, in the evaluator's output order).
    ``multimodality_embeddings`` (T, R, D), if given, are R generations for each of T texts.

    Random draws come from ``rng`` in the reference order: MultiModality (if any), Diversity of the real set, then
    Diversity of the generated set.

    Returns a dict with ``r_precision`` and ``r_precision_real`` (float64 (3,), top-1/2/3), ``matching_score`` and
    ``matching_score_real`` (MM-Dist), ``fid``, ``diversity``, ``diversity_real`` and ``multimodality`` (absent when
    no multimodality embeddings are given). Unsuffixed names are for the generated motions.
    """
    text_ND = _as_numpy(text_embeddings, "text_embeddings", 2)
    motion_ND = _as_numpy(motion_embeddings, "motion_embeddings", 2)
    gen_text_ND = _as_numpy(generated_text_embeddings, "generated_text_embeddings", 2)
    gen_motion_ND = _as_numpy(generated_motion_embeddings, "generated_motion_embeddings", 2)
    _check_paired(text_ND, motion_ND, ("text_embeddings", "motion_embeddings"))
    _check_paired(text_ND, gen_text_ND, ("text_embeddings", "generated_text_embeddings"))
    _check_paired(text_ND, gen_motion_ND, ("text_embeddings", "generated_motion_embeddings"))
    # One stream for all the draws below, as in the reference, not one fresh stream per metric.
    rng = as_random_source(rng)

    results: dict[str, Any] = {
        "r_precision_real": r_precision(text_ND, motion_ND, batch_size),
        "r_precision": r_precision(gen_text_ND, gen_motion_ND, batch_size),
        "matching_score_real": matching_score(text_ND, motion_ND, batch_size),
        "matching_score": matching_score(gen_text_ND, gen_motion_ND, batch_size),
        "fid": fid(motion_ND, gen_motion_ND),
    }
    if multimodality_embeddings is not None:
        results["multimodality"] = multimodality(multimodality_embeddings, rng)
    times = diversity_times(len(motion_ND))
    results["diversity_real"] = diversity(motion_ND, times, rng)
    results["diversity"] = diversity(gen_motion_ND, times, rng)
    return results


def confidence_interval(values: Any) -> tuple[float, float]:
    """Mean and 95% half-width ``1.96 * std / sqrt(n)`` of repeated results (population std, ddof=0).

    This is how the paper tables report "mean +- interval" over the 20 evaluation repeats.
    """
    values_R = np.asarray(values, dtype=np.float64)
    if values_R.ndim != 1 or values_R.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-D sequence, got shape {values_R.shape}.")
    return float(values_R.mean()), float(values_R.std() * CONFIDENCE_Z / np.sqrt(values_R.size))
