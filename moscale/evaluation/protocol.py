"""The paper's text-to-motion evaluation protocol for a MoScale pipeline on a HumanML3D-layout test split.

    moscale evaluate --pipeline path/to/pipeline --data_dir data/HumanML3D \
        --evaluator t2m --evaluator_path checkpoint_dir --glove_path glove --output_dir eval/moscale

One repeat = the whole test split, shuffled into batches of 32 (last partial batch dropped), one random caption
and one random crop per item (the authors' evaluation loader), one generation per item at its ground-truth length
with guidance 5 and refinement steps (1, 2, 5, 10), 30 generations per text in the first 3 batches for
MultiModality. Each metric is reported as mean +- 1.96 std / sqrt(repeats) over 20 repeats.

The same protocol runs as `python -m moscale.evaluation.protocol` or `examples/evaluate.py`. It is expensive, so it
runs unchanged on several processes (`torchrun --nproc_per_node N examples/evaluate.py ...` or
`accelerate launch`): the generation jobs are split between processes and the embeddings gathered. Every random
draw comes from a seed derived from (--seed, repeat, batch, generation), never from a stream shared across
batches, so a run gives the same numbers on any number of processes.

Evaluators (`--evaluator`):
- ``t2m``: the standard T2M evaluator (`moscale.evaluation.t2m_evaluator`, `finest.tar` + GloVe); the numbers compare with the
  paper's tables.
- ``contrastive``: a `moscale.evaluation.contrastive_evaluator` model trained with `examples/train_evaluator.py`, for data
  without the standard evaluator; its numbers compare only with runs using the same evaluator weights.

With ``--semantics`` (a procedural dataset's ``semantics.jsonl``), each evaluated generation also goes through
the dataset's detectors, and the semantic accuracy per category and text complexity is reported beside the same
figure for the real motions (the detectors' ceiling); see `moscale.evaluation.semantic_accuracy`.

Outputs in --output_dir: ``results.json`` (settings, environment, every repeat, mean and interval) and
``results.md`` (a Markdown table with the paper's values beside ours).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from moscale.evaluation.metrics import PROTOCOL_BATCH_SIZE, confidence_interval, t2m_metrics
from moscale.evaluation.semantic_accuracy import (
    CATEGORIES,
    detect_actions,
    flatten_accuracy,
    load_semantics,
    semantic_accuracy,
)
from moscale.motion.data import FOLDER_FORMATS, MAX_MOTION_LENGTH, MotionTransform, load_motion_dataset
from moscale.motion.representation import recover_from_ric

logger = logging.getLogger(__name__)

# Table 1 of the paper (HumanML3D and KIT-ML test sets, T2M evaluator); Top-3 on HumanML3D is from its complexity
# table. Values the paper does not report are absent.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "humanml3d": {
        "top1": 0.540,
        "top3": 0.817,
        "fid": 0.046,
        "matching_score": 2.830,
        "diversity": 9.525,
        "multimodality": 0.873,
    },
    "kit-ml": {"top1": 0.442, "fid": 0.173, "matching_score": 2.717},
}
# The authors' guidance scales: 5 on HumanML3D, 3 on KIT-ML.
DEFAULT_GUIDANCE = {"humanml3d": 5.0, "kit-ml": 3.0}
METRIC_NAMES = {
    "top1": "R-precision Top-1 ↑",
    "top2": "R-precision Top-2 ↑",
    "top3": "R-precision Top-3 ↑",
    "fid": "FID ↓",
    "matching_score": "MM-Dist ↓",
    "diversity": "Diversity →",
    "multimodality": "MultiModality ↑",
}


# ----------------------------------------------------------------------------------------------------- settings
@dataclass
class ProtocolSettings:
    """What defines one evaluation run; recorded in results.json."""

    seed: int = 10010
    repeats: int = 20
    batch_size: int = PROTOCOL_BATCH_SIZE
    # None: the pipeline scheduler's own (`moscale evaluate` records the values it used).
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


# ----------------------------------------------------------------------------------------------- co-embeddings
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


class T2MCoEmbedder:
    """The standard T2M evaluator: GloVe + POS text encoder, motions normalised with the evaluator's statistics."""

    def __init__(self, evaluator, word_vectorizer, max_motion_length: int = MAX_MOTION_LENGTH):
        self.evaluator = evaluator
        self.word_vectorizer = word_vectorizer
        self.max_motion_length = max_motion_length

    def __call__(self, captions, tokens, motions, lengths, zero_padding):
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        normalized_BND = self.evaluator.normalize(motions)
        if zero_padding:
            inside_BN = torch.arange(normalized_BND.shape[1], device=normalized_BND.device)[None] < lengths[:, None].to(
                normalized_BND.device
            )
            normalized_BND = normalized_BND * inside_BN[..., None]
        # The authors pad every motion to 196 frames; the evaluator's output does not depend on it, but the
        # convolutions then see the same inputs as theirs.
        missing = self.max_motion_length - normalized_BND.shape[1]
        if missing > 0:
            normalized_BND = torch.nn.functional.pad(normalized_BND, (0, 0, 0, missing))
        word_embs, pos_ohot, cap_lens = self.word_vectorizer.encode_batch(tokens)
        embeddings = self.evaluator.get_co_embeddings(word_embs, pos_ohot, cap_lens, normalized_BND, lengths)
        # Back to the input order; the protocol applies the evaluator's length order itself.
        inverse = torch.argsort(embeddings.order)
        return (
            embeddings.text_embeddings[inverse.to(embeddings.text_embeddings.device)].cpu().numpy(),
            embeddings.motion_embeddings[inverse.to(embeddings.motion_embeddings.device)].cpu().numpy(),
        )


class ContrastiveCoEmbedder:
    """A trained `ContrastiveEvaluatorModel` (it normalises raw motions and ignores frames past each length)."""

    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, captions, tokens, motions, lengths, zero_padding):
        text_BE, motion_BE = self.model.get_co_embeddings(list(captions), motions, lengths)
        return text_BE.cpu().numpy(), motion_BE.cpu().numpy()


def load_co_embedder(kind: str, path: str | None, glove_path: str | None, dataset: str, device) -> CoEmbedder:
    """Builds the evaluator named on the command line (see the module docstring)."""
    if kind == "t2m":
        from moscale.evaluation.t2m_evaluator import T2MEvaluator, WordVectorizer

        if path is None or glove_path is None:
            raise ValueError("--evaluator t2m needs --evaluator_path (finest.tar or its folder) and --glove_path.")
        evaluator = T2MEvaluator.from_pretrained(path, dataset=dataset, device=device)
        return T2MCoEmbedder(evaluator, WordVectorizer.from_pretrained(glove_path))
    if kind == "contrastive":
        from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel

        if path is None:
            raise ValueError("--evaluator contrastive needs --evaluator_path (a train_evaluator.py output folder).")
        return ContrastiveCoEmbedder(ContrastiveEvaluatorModel.from_pretrained(path).to(device))
    raise ValueError(f"--evaluator must be 't2m' or 'contrastive', got {kind!r}.")


# -------------------------------------------------------------------------------------------------- generation
MotionGenerator = Callable[[Sequence[str], torch.Tensor, int], torch.Tensor]
"""(captions, lengths (B,), seed) -> RAW motion features (B, N, D), N >= max(lengths); the seed fixes the draw."""


def pipeline_generator(pipeline, settings: ProtocolSettings) -> MotionGenerator:
    """Wraps a `MoScalePipeline` as a `MotionGenerator` with the protocol's sampling settings.

    The random generator lives on the pipeline's device (no host round trip per sampling step); CPU and GPU streams
    differ, so the same seed gives the same numbers on the same kind of device.
    """
    if pipeline.config.motion_mean is None:
        raise ValueError(
            "The pipeline has no motion_mean/motion_std: its outputs stay in the model's normalised space, and the "
            "evaluators need raw features. Save the pipeline with the statistics it was trained with."
        )

    def generate(captions: Sequence[str], lengths: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=pipeline.device).manual_seed(seed)
        output = pipeline(
            prompt=list(captions),
            num_frames=[int(n) for n in lengths],
            guidance_scale=settings.guidance_scale,
            refinement_steps=settings.refinement_steps,
            generator=generator,
            output_type="latent",
        )
        lengths_B = output.lengths
        if settings.generated_padding == "zeros":
            return pipeline.decode_tokens(output.tokens, lengths_B)
        # The decoder's full-length output, frames past each length included, as the authors' evaluation sees it.
        return pipeline.denormalize(pipeline.vq_model.decode(list(output.tokens), lengths_B).float())

    return generate


def load_pipeline(path: str, dtype: torch.dtype, dataset: str, text_encoder: str | None = None):
    """A `MoScalePipeline` folder, or the two folders `moscale.models.convert_original_checkpoint` writes.

    A converted folder (``vq_model/`` + ``transformer/``, no ``model_index.json``) is assembled into a pipeline
    with the text encoder the transformer was trained with (``transformer.config.text_encoder_name``, or
    ``text_encoder``: a local folder or Hub id holding a T5 encoder and its tokenizer) and the evaluator's
    normalisation statistics: the authors' training scripts normalise motions with those, not with the
    dataset's Mean.npy/Std.npy.
    """
    from moscale.pipelines.pipeline_moscale import MoScalePipeline

    folder = Path(path)
    converted = (folder / "vq_model").is_dir() and (folder / "transformer").is_dir()
    if not converted or (folder / "model_index.json").is_file():
        return MoScalePipeline.from_pretrained(path, dtype=dtype)

    from transformers import AutoTokenizer, T5EncoderModel

    from moscale.evaluation.t2m_evaluator import load_evaluator_stats
    from moscale.models.modeling_moscale import MoScaleForTextToMotion
    from moscale.models.modeling_moscale_vq import MoScaleVQModel

    transformer = MoScaleForTextToMotion.from_pretrained(folder / "transformer", dtype=dtype)
    text_encoder = text_encoder or transformer.config.text_encoder_name
    logger.info("Assembling converted checkpoints in %s with the text encoder %s.", folder, text_encoder)
    mean, std = load_evaluator_stats(dataset)
    return MoScalePipeline(
        vq_model=MoScaleVQModel.from_pretrained(folder / "vq_model", dtype=dtype).eval(),
        transformer=transformer.eval(),
        text_encoder=T5EncoderModel.from_pretrained(text_encoder, dtype=dtype).eval(),
        tokenizer=AutoTokenizer.from_pretrained(text_encoder),
        motion_mean=mean,
        motion_std=std,
    )


def allow_evaluation_lengths(pipeline, shortest_item: int) -> None:
    """Lets the pipeline generate the shortest crops of the evaluation loader, or says why it cannot.

    The loader shortens one clip in three by one unit, so a 40-frame HumanML3D clip is evaluated at 36 frames;
    the authors' model generates it (9 latent steps). A pipeline saved with a larger ``min_num_frames`` guard
    would refuse it, so the guard is lowered for this run, down to the coarsest scale's minimum. Items that could
    be cropped below that minimum are reported before any generation starts.
    """
    unit = pipeline.vq_model.config.unit_length
    units = shortest_item // unit
    shortest_crop = (units - 1 if units > 1 else units) * unit
    floor = unit * pipeline.vq_model.config.scales[0]
    if shortest_crop < floor:
        raise ValueError(
            f"The split has an item of {shortest_item} frames, which the evaluation loader may crop to "
            f"{shortest_crop} frames, but this tokenizer generates at least {floor} frames (its coarsest scale). "
            f"Remove the items shorter than {floor + unit} frames from the split file."
        )
    if pipeline.config.min_num_frames > shortest_crop:
        logger.info(
            "Lowering the pipeline's min_num_frames from %d to %d frames for the evaluation crops.",
            pipeline.config.min_num_frames,
            shortest_crop,
        )
        pipeline.register_to_config(min_num_frames=shortest_crop)


# ------------------------------------------------------------------------------------------------------ protocol
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


def markdown_table(summary: dict[str, dict[str, float]], dataset: str, evaluator: str, repeats: int) -> str:
    """Ours beside the paper's values (only for the T2M evaluator: other evaluators are not comparable)."""
    paper = PAPER_RESULTS.get(dataset, {}) if evaluator == "t2m" else {}
    paper_header = "Paper" if evaluator == "t2m" else "Paper (not comparable: other evaluator)"
    lines = [
        f"| Metric | {paper_header} | Ours (mean ± 95% CI, {repeats} repeats) | Real motions (ours) |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in METRIC_NAMES.items():
        if name not in summary:
            continue
        ours = summary[name]
        real = summary.get(f"real_{name}")
        real_text = f"{real['mean']:.3f} ± {real['ci95']:.3f}" if real else "-"
        paper_text = f"{paper[name]:.3f}" if name in paper else "-"
        lines.append(f"| {label} | {paper_text} | {ours['mean']:.3f} ± {ours['ci95']:.3f} | {real_text} |")
    return "\n".join(lines) + "\n"


def semantic_table(summary: dict[str, dict[str, float]]) -> str:
    """Semantic accuracy (%) per category, overall and by number of actions; real motions in parentheses."""
    complexities = sorted(
        {name.rsplit("_", 1)[1] for name in summary if name.startswith("semantic_") and name[-1].isdigit()}
    )
    header = ["Category", "All texts", *(f"{c} action{'s' if c != '1' else ''}" for c in complexities)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for category in CATEGORIES:
        if f"semantic_{category}" not in summary:
            continue
        cells = [category]
        for suffix in ["", *(f"_{c}" for c in complexities)]:
            ours, real = summary.get(f"semantic_{category}{suffix}"), summary.get(f"real_semantic_{category}{suffix}")
            cells.append("-" if ours is None else f"{100 * ours['mean']:.1f} ({100 * real['mean']:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def environment(accelerator: Accelerator, dtype: torch.dtype) -> dict[str, Any]:
    """What else can change the numbers: versions, device, precision settings, processes."""
    import accelerate
    import diffusers
    import scipy
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "dtype": str(dtype).removeprefix("torch."),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="moscale evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pipeline",
        required=True,
        help="A MoScalePipeline folder or Hub id, or the output folder of moscale.models.convert_original_checkpoint.",
    )
    parser.add_argument(
        "--text_encoder", help="Converted checkpoints only: T5 encoder + tokenizer (default: the one they name)."
    )
    parser.add_argument("--data_dir", type=Path, required=True, help="HumanML3D-layout folder.")
    parser.add_argument("--dataset_format", choices=sorted(FOLDER_FORMATS), default="humanml3d")
    parser.add_argument("--split", default="test")
    parser.add_argument("--evaluator", choices=["t2m", "contrastive"], default="t2m")
    parser.add_argument(
        "--evaluator_path", help="t2m: finest.tar or its checkpoint folder; contrastive: a model folder."
    )
    parser.add_argument("--glove_path", help="t2m only: the folder with our_vab_{data.npy,words.pkl,idx.pkl}.")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--cache_dir", type=Path, default=None, help="Arrow cache of the loaded motions.")
    parser.add_argument("--seed", type=int, default=10010, help="The authors' evaluation seed.")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=PROTOCOL_BATCH_SIZE, help="R-precision gallery size.")
    parser.add_argument("--guidance_scale", type=float, default=None, help="Default: 5 (HumanML3D), 3 (KIT-ML).")
    parser.add_argument(
        "--refinement_steps",
        type=int,
        nargs="+",
        default=None,
        help="Steps per scale, coarse to fine (default: the pipeline scheduler's, (1, 2, 5, 10) for the paper's model).",
    )
    parser.add_argument("--no_multimodality", action="store_true", help="Skip the 30-generation MultiModality runs.")
    parser.add_argument("--multimodality_batches", type=int, default=3)
    parser.add_argument("--multimodality_generations", type=int, default=30)
    parser.add_argument("--generated_padding", choices=["decoder", "zeros"], default="decoder")
    parser.add_argument(
        "--semantics", type=Path, help="A procedural dataset's semantics.jsonl: adds semantic accuracy."
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="Weights and activations of every component; T5 v1.1 encoders are known to overflow in float16, "
        "prefer bfloat16 for half precision.",
    )
    parser.add_argument(
        "--tf32",
        choices=["default", "on", "off"],
        default="default",
        help="TF32 on Ampere+ GPUs for matmuls and convolutions; 'default' keeps PyTorch's defaults (matmuls off, "
        "cuDNN convolutions on), as the authors ran. The flags in effect are recorded.",
    )
    parser.add_argument("--cpu", action="store_true", help="Run on CPU even when a GPU is present.")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict[str, Any]:
    accelerator = Accelerator(cpu=args.cpu)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.tf32 != "default":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    dtype = getattr(torch, args.dtype)
    guidance = args.guidance_scale if args.guidance_scale is not None else DEFAULT_GUIDANCE[args.dataset_format]
    with accelerator.main_process_first():
        rows = load_motion_dataset(args.data_dir, args.split, args.dataset_format, cache_dir=args.cache_dir)
    rows = rows.with_format("numpy", columns=["motion"], output_all_columns=True)
    pipeline = load_pipeline(args.pipeline, dtype, args.dataset_format, args.text_encoder).to(accelerator.device)
    pipeline.set_progress_bar_config(disable=True)
    allow_evaluation_lengths(pipeline, int(min(rows["length"])))
    settings = ProtocolSettings(
        seed=args.seed,
        repeats=args.repeats,
        batch_size=args.batch_size,
        guidance_scale=guidance,
        refinement_steps=tuple(args.refinement_steps or pipeline.scheduler.config.refinement_steps),
        multimodality=not args.no_multimodality,
        multimodality_batches=args.multimodality_batches,
        multimodality_generations=args.multimodality_generations,
        generated_padding=args.generated_padding,
    )

    embed = load_co_embedder(
        args.evaluator, args.evaluator_path, args.glove_path, args.dataset_format, accelerator.device
    )
    generate = pipeline_generator(pipeline, settings)

    semantics = None
    if args.semantics is not None:
        if args.dataset_format != "humanml3d":
            raise ValueError("--semantics needs HumanML3D-skeleton motions (the detectors read 22 joints).")
        semantics = load_semantics(args.semantics)
    fps = FOLDER_FORMATS[args.dataset_format].fps
    num_batches = len(rows) // settings.batch_size
    jobs_per_repeat = len(generation_jobs(num_batches, settings))
    local_jobs = math.ceil(jobs_per_repeat / accelerator.num_processes)
    progress = tqdm(
        total=settings.repeats * local_jobs,
        desc=f"generation batches (process 0 of {accelerator.num_processes})",
        disable=not accelerator.is_local_main_process,
    )
    started = time.time()
    repeats = []
    for repeat in range(settings.repeats):
        repeats.append(evaluate_repeat(rows, settings, repeat, embed, generate, progress, semantics, fps))
        logger.info("repeat %d: %s", repeat, {k: round(v, 4) for k, v in repeats[-1].items()})
    progress.close()

    summary = summarize(repeats)
    results = {
        "pipeline": str(args.pipeline),
        "data_dir": str(args.data_dir),
        "split": args.split,
        "dataset_format": args.dataset_format,
        "evaluator": {"kind": args.evaluator, "path": args.evaluator_path, "glove_path": args.glove_path},
        "semantics": None if args.semantics is None else str(args.semantics),
        "items": len(rows),
        "items_evaluated_per_repeat": num_batches * settings.batch_size,
        "settings": asdict(settings),
        "environment": environment(accelerator, dtype),
        "arguments": {
            name: value if isinstance(value, (int, float, bool, type(None))) else str(value)
            for name, value in vars(args).items()
        },
        "seconds": time.time() - started,
        "summary": summary,
        "repeats": repeats,
        "paper": PAPER_RESULTS.get(args.dataset_format, {}) if args.evaluator == "t2m" else {},
    }
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))
        table = markdown_table(summary, args.dataset_format, args.evaluator, settings.repeats)
        if semantics is not None:
            table += "\nSemantic accuracy, % (real motions, the detectors' ceiling, in parentheses):\n\n"
            table += semantic_table(summary)
        (args.output_dir / "results.md").write_text(table)
        print(table)
    accelerator.wait_for_everyone()
    return results


def command_line(argv: list[str] | None = None) -> dict[str, Any]:
    """`moscale evaluate ...` / `python -m moscale.evaluation.protocol ...`."""
    return main(parse_args(argv))


if __name__ == "__main__":
    command_line()
