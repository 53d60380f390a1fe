"""The paper's text-to-motion evaluation protocol: what one run is (`ProtocolSettings`) and how it runs
(`evaluate_repeat`, `summarize`).

One repeat = the whole test split, shuffled into batches of 32 (last partial batch dropped), one random caption
and one random crop per item (the authors' evaluation loader), one generation per item at its ground-truth length
with guidance 5 (3 on KIT-ML) and the pipeline's own refinement schedule ((1, 2, 5, 10) for the paper's model),
30 generations per text in the first 3 batches for MultiModality. Each metric is reported as
mean +- 1.96 std / sqrt(repeats) over 20 repeats.

The protocol sees a model through a `MotionGenerator` (`moscale.evaluation.generation` wraps a pipeline) and an
evaluator through a `CoEmbedder` (`moscale.evaluation.co_embedders`). It runs unchanged on several processes: the
generation jobs are split between processes and the embeddings gathered. Every random draw comes from a seed
derived from (seed, repeat, batch, generation), never from a stream shared across batches, so a run gives the same
numbers on any number of processes. With the ground truth of a procedural dataset (``semantics``), each evaluated
generation also goes through the dataset's detectors (`moscale.evaluation.semantic_accuracy`).

`moscale evaluate` (`moscale.evaluation.evaluate_cli`) is the command; `moscale.evaluation.report` writes the results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from moscale.evaluation.metrics import PROTOCOL_BATCH_SIZE, confidence_interval, t2m_metrics
from moscale.evaluation.semantic_accuracy import detect_actions, flatten_accuracy, semantic_accuracy
from moscale.motion.data import MotionTransform
from moscale.motion.representation import recover_from_ric

# The authors' guidance scales: 5 on HumanML3D, 3 on KIT-ML.
DEFAULT_GUIDANCE = {"humanml3d": 5.0, "kit-ml": 3.0}


@dataclass
class ProtocolSettings:
    """What defines one evaluation run; recorded in results.json."""

    seed: int = 10010
    repeats: int = 20
    batch_size: int = PROTOCOL_BATCH_SIZE
    # None: the pipeline scheduler's own (5 and (1, 2, 5, 10) for the paper's model); results.json records which.
    guidance_scale: float | None = None
    refinement_steps: tuple[int, ...] | None = None
    multimodality: bool = True
    multimodality_batches: int = 3
    multimodality_generations: int = 30
    # "decoder": the evaluator sees the decoder's output past each motion's end, as in the authors' evaluation;
    # "zeros": those frames are zero, as for the ground-truth motions.
    generated_padding: str = "decoder"

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.batch_size < 2:
            raise ValueError(f"repeats must be >= 1 and batch_size >= 2, got {self.repeats} and {self.batch_size}.")
        if self.multimodality and self.multimodality_generations <= 10:
            raise ValueError(
                "MultiModality draws 10 pairs among the generations of each text: multimodality_generations must "
                f"be > 10, got {self.multimodality_generations}."
            )
        if self.multimodality_batches < 1:
            raise ValueError(f"multimodality_batches must be >= 1, got {self.multimodality_batches}.")
        if self.generated_padding not in ("decoder", "zeros"):
            raise ValueError(f"generated_padding must be 'decoder' or 'zeros', got {self.generated_padding!r}.")


def derived_seed(*key: int) -> int:
    """A 63-bit seed that depends only on ``key`` (e.g. seed, repeat, batch, generation), not on any stream state."""
    return int(np.random.SeedSequence(list(key)).generate_state(2, np.uint64)[0] >> np.uint64(1))


# Tags that keep the seed families apart.
_DATA, _GENERATION, _METRICS = 0, 1, 2


class CoEmbedder(Protocol):
    """Text and motion co-embeddings of a batch, both (B, E) float32 numpy arrays in the INPUT order.

    ``motions`` are RAW features (B, N, D). With ``zero_padding`` the frames past each length are set to zero in
    the evaluator's normalised units (how the test loader pads real motions); without it they are used as given.
    """

    def __call__(
        self,
        captions: Sequence[str],
        tokens: Sequence[Sequence[str]],
        motions: torch.Tensor,
        lengths: torch.Tensor,
        zero_padding: bool,
    ) -> tuple[np.ndarray, np.ndarray]: ...


MotionGenerator = Callable[[Sequence[str], torch.Tensor, int], torch.Tensor]
"""(captions, lengths (B,), seed) -> RAW motion features (B, N, D), N >= max(lengths); the seed fixes the draw."""


@dataclass
class EvaluationBatch:
    ids: list[str]
    captions: list[str]
    tokens: list[list[str]]
    motions: torch.Tensor  # raw features (B, N, D), zero past each length
    lengths: torch.Tensor  # (B,) frames, multiples of the unit length


def repeat_batches(num_items: int, batch_size: int, seed: int, repeat: int) -> list[np.ndarray]:
    """The item indices of each batch of one repeat: a seeded shuffle, the last partial batch dropped."""
    order = np.random.default_rng(derived_seed(seed, repeat, _DATA)).permutation(num_items)
    usable = num_items // batch_size * batch_size
    return [order[start : start + batch_size] for start in range(0, usable, batch_size)]


def load_batch(rows, indices: np.ndarray, seed: int, repeat: int, batch: int) -> EvaluationBatch:
    """Reads the items of one batch: one random caption and one random crop per item (the authors' loader)."""
    feature_dim = rows.features["motion"].shape[1]
    transform = MotionTransform(
        np.zeros(feature_dim), np.ones(feature_dim), seed=derived_seed(seed, repeat, _DATA, batch)
    )
    items = transform(rows[[int(i) for i in indices]])
    lengths = torch.tensor(items["length"], dtype=torch.long)
    motions = torch.zeros(len(lengths), int(lengths.max()), feature_dim)
    for row, motion in enumerate(items["motion"]):
        motions[row, : len(motion)] = torch.from_numpy(np.asarray(motion))
    return EvaluationBatch(items["id"], items["caption"], items["tokens"], motions, lengths)


def generation_jobs(num_batches: int, settings: ProtocolSettings) -> list[tuple[int, int]]:
    """(batch, generation) pairs of one repeat: 30 generations for each MultiModality batch, one for the others.

    Every job costs one batched generation, so splitting the list evenly balances the processes.
    """
    mm_batches = settings.multimodality_batches if settings.multimodality else 0
    if mm_batches > num_batches:
        raise ValueError(f"MultiModality uses {mm_batches} batches but the split has only {num_batches}.")
    return [
        (batch, generation)
        for batch in range(num_batches)
        for generation in range(settings.multimodality_generations if batch < mm_batches else 1)
    ]


def detect_batch(motions_BND: torch.Tensor, lengths_B: torch.Tensor, fps: float) -> list[list[dict[str, Any]]]:
    """The procedural detectors' actions for each motion of a batch (raw HumanML3D features, cut at its length)."""
    joints_BNJ3 = recover_from_ric(motions_BND.detach().float().cpu(), joints_num=22).numpy()
    return [detect_actions(joints_BNJ3[row, :length], fps) for row, length in enumerate(lengths_B.tolist())]


def run_job(
    rows, job, settings, repeat, embed: CoEmbedder, generate: MotionGenerator, semantics_fps: float | None = None
) -> dict[str, Any]:
    """One generation of one batch, embedded; the job of the last generation also embeds the real motions.

    With ``semantics_fps`` the kept generation and the real motions also go through the procedural detectors.
    """
    batch, generation = job
    indices = repeat_batches(len(rows), settings.batch_size, settings.seed, repeat)[batch]
    data = load_batch(rows, indices, settings.seed, repeat, batch)
    seed = derived_seed(settings.seed, repeat, _GENERATION, batch, generation)
    generated = generate(data.captions, data.lengths, seed)
    zero_padding = settings.generated_padding == "zeros"
    _, generated_motion = embed(data.captions, data.tokens, generated, data.lengths, zero_padding)
    result = {"batch": batch, "generation": generation, "generated": generated_motion}
    multimodal = settings.multimodality and batch < settings.multimodality_batches
    if generation == (settings.multimodality_generations - 1 if multimodal else 0):
        result["text"], result["real"] = embed(data.captions, data.tokens, data.motions, data.lengths, True)
        # The evaluator returns rows sorted by descending motion length; Diversity samples rows, so keep that order.
        result["order"] = np.argsort(-data.lengths.numpy(), kind="stable")
        if semantics_fps is not None:
            result["ids"] = data.ids
            result["detected"] = detect_batch(generated, data.lengths, semantics_fps)
            result["detected_real"] = detect_batch(data.motions, data.lengths, semantics_fps)
    return result


def assemble(results: list[dict[str, Any]], num_batches: int) -> dict[str, np.ndarray]:
    """Gathered job results -> embedding sets in batch order (rows of each batch in the evaluator's order)."""
    by_job = {(r["batch"], r["generation"]): r for r in results}
    text, real, generated, multimodal = [], [], [], []
    for batch in range(num_batches):
        generations = sorted(g for b, g in by_job if b == batch)
        final = by_job[(batch, generations[-1])]
        order = final["order"]
        text.append(final["text"][order])
        real.append(final["real"][order])
        # As in the authors' loop, a MultiModality batch's prediction is its last generation.
        generated.append(final["generated"][order])
        if len(generations) > 1:
            multimodal.append(np.stack([by_job[(batch, g)]["generated"][order] for g in generations], axis=1))
    sets = {"text": np.concatenate(text), "real": np.concatenate(real), "generated": np.concatenate(generated)}
    if multimodal:
        sets["multimodal"] = np.concatenate(multimodal)
    return sets


def semantic_scores(results: list[dict[str, Any]], semantics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Semantic accuracy of the kept generations and of the real motions, flattened (``semantic_count_2``, ...)."""
    truth, generated, real = [], [], []
    for result in results:
        if "detected" not in result:
            continue
        for item_id, detected, detected_real in zip(result["ids"], result["detected"], result["detected_real"]):
            if item_id not in semantics:
                raise ValueError(f"Item {item_id!r} has no ground truth in the semantics file: is it the right one?")
            truth.append(semantics[item_id]["actions"])
            generated.append(detected)
            real.append(detected_real)
    return {
        **flatten_accuracy(semantic_accuracy(zip(truth, generated))),
        **flatten_accuracy(semantic_accuracy(zip(truth, real)), prefix="real_semantic"),
    }


def evaluate_repeat(
    rows,
    settings: ProtocolSettings,
    repeat: int,
    embed: CoEmbedder,
    generate: MotionGenerator,
    progress=None,
    semantics: dict[str, dict[str, Any]] | None = None,
    fps: float = 20.0,
) -> dict[str, float]:
    """One repeat of the protocol on the processes of the current `PartialState`; every process gets the result.

    ``semantics`` (from `load_semantics`) adds the semantic accuracy of the generations and of the real motions.
    """
    state = PartialState()
    num_batches = len(rows) // settings.batch_size
    if num_batches == 0:
        raise ValueError(f"The split has {len(rows)} items, fewer than one batch of {settings.batch_size}.")
    jobs = generation_jobs(num_batches, settings)
    local: list[dict[str, Any]] = []
    with state.split_between_processes(jobs) as my_jobs:
        for job in my_jobs:
            local.append(run_job(rows, job, settings, repeat, embed, generate, fps if semantics else None))
            if progress is not None:
                progress.update(1)
    gathered = gather_object(local) if state.num_processes > 1 else local
    sets = assemble(gathered, num_batches)
    metrics = t2m_metrics(
        sets["text"],
        sets["real"],
        sets["text"],  # the authors embed the same words again for the generated motions: identical rows
        sets["generated"],
        rng=derived_seed(settings.seed, repeat, _METRICS) % 2**32,
        multimodality_embeddings=sets.get("multimodal"),
        batch_size=settings.batch_size,
    )
    flat = {
        "top1": metrics["r_precision"][0],
        "top2": metrics["r_precision"][1],
        "top3": metrics["r_precision"][2],
        "fid": metrics["fid"],
        "matching_score": metrics["matching_score"],
        "diversity": metrics["diversity"],
        "real_top1": metrics["r_precision_real"][0],
        "real_top2": metrics["r_precision_real"][1],
        "real_top3": metrics["r_precision_real"][2],
        "real_matching_score": metrics["matching_score_real"],
        "real_diversity": metrics["diversity_real"],
    }
    if "multimodality" in metrics:
        flat["multimodality"] = metrics["multimodality"]
    if semantics is not None:
        flat.update(semantic_scores(gathered, semantics))
    return {name: float(value) for name, value in flat.items()}


def summarize(repeats: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and 95% half-width (1.96 std / sqrt(repeats), population std) of every metric.

    A metric missing from some repeats (a semantic category with no applicable item in that repeat's batches) is
    summarised over the repeats that have it; ``repeats`` records how many.
    """
    summary = {}
    for name in dict.fromkeys(name for values in repeats for name in values):
        present = [values[name] for values in repeats if name in values]
        mean, half_width = confidence_interval(present)
        summary[name] = {"mean": mean, "ci95": half_width, "repeats": len(present)}
    return summary
