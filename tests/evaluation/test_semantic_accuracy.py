"""Semantic accuracy from the procedural dataset's detectors, alone and inside the evaluation protocol."""

import json

import numpy as np
import pytest
import torch

from moscale.evaluation.contrastive_evaluator import ContrastiveEvaluatorModel
from moscale.evaluation.semantic_accuracy import (
    detect_actions,
    flatten_accuracy,
    load_semantics,
    score_clip,
    semantic_accuracy,
)
from moscale.motion.data import load_motion_dataset
from moscale.synthetic import write_dataset
from tests.helpers import tiny_contrastive_config

WAVE = {"name": "wave", "side": "left", "count": 2}
WALK = {"name": "walk", "direction": "forward", "count": 3}
TURN = {"name": "turn", "direction": "right", "angle": 90}


def test_score_clip_per_category():
    truth = [WAVE, WALK, TURN]
    perfect = score_clip(truth, [WAVE, WALK, TURN])
    assert perfect == {
        "action": (3, 3), "count": (2, 2), "side": (1, 1), "direction": (2, 2), "angle": (1, 1),
        "order": (1, 1), "exact": (1, 1),
    }  # fmt: skip
    wrong_count = score_clip(truth, [{**WAVE, "count": 3}, WALK, TURN])
    assert wrong_count["count"] == (1, 2) and wrong_count["side"] == (1, 1) and wrong_count["exact"] == (0, 1)
    swapped = score_clip(truth, [WALK, WAVE, TURN])
    assert swapped["action"] == (3, 3) and swapped["count"] == (2, 2) and swapped["order"] == (0, 1)
    missing = score_clip(truth, [WAVE, TURN])
    assert missing["action"] == (2, 3) and missing["direction"] == (1, 2) and missing["order"] == (0, 1)
    # An extra detection spoils only the exact match.
    extra = score_clip(truth, [{"name": "stand"}, WAVE, WALK, {"name": "jump", "count": 1}, TURN])
    assert extra["order"] == (1, 1) and extra["action"] == (3, 3) and extra["exact"] == (0, 1)
    # Two asked walks go with the first and second detected walks, in that order.
    walks = score_clip([WALK, {**WALK, "direction": "backward"}], [WALK, {**WALK, "direction": "backward"}])
    assert walks["direction"] == (2, 2)
    assert "order" not in score_clip([WAVE], [WAVE]) and "angle" not in score_clip([WAVE], [WAVE])
    with pytest.raises(ValueError, match="without actions"):
        score_clip([], [WAVE])


def test_semantic_accuracy_by_complexity():
    pairs = [([WAVE], [WAVE]), ([WAVE], [{**WAVE, "side": "right"}]), ([WAVE, WALK], [WALK, WAVE])]
    result = semantic_accuracy(pairs)
    assert result["motions"] == 3
    assert result["overall"]["side"] == pytest.approx(2 / 3)
    assert result["by_complexity"]["1"]["side"] == 0.5 and result["by_complexity"]["2"]["side"] == 1.0
    assert result["by_complexity"]["2"]["order"] == 0.0 and "order" not in result["by_complexity"]["1"]
    assert result["support"]["overall"]["action"] == 4
    flat = flatten_accuracy(result)
    assert flat["semantic_side"] == pytest.approx(2 / 3) and flat["semantic_order_2"] == 0.0
    with pytest.raises(ValueError, match="No motion"):
        semantic_accuracy([])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """112 procedural clips, all in the test split (Diversity needs more than 100 items)."""
    root = write_dataset(tmp_path_factory.mktemp("synthetic") / "data", 112, seed=0, workers=1, progress=False)
    ids = list(load_semantics(root))
    (root / "test.txt").write_text("\n".join(ids) + "\n")
    return root


def test_detectors_read_the_real_motions_and_tell_clips_apart(synthetic):
    semantics = load_semantics(synthetic / "semantics.jsonl")
    ids = sorted(semantics)[:30]
    detected = [detect_actions(np.load(synthetic / "new_joints" / f"{clip}.npy")) for clip in ids]
    truth = [semantics[clip]["actions"] for clip in ids]
    matched = semantic_accuracy(zip(truth, detected))
    # Each motion judged against ANOTHER clip's text: the metric must see the difference.
    mismatched = semantic_accuracy(zip(truth, detected[1:] + detected[:1]))
    assert matched["overall"]["exact"] >= 0.9, matched
    assert mismatched["overall"]["exact"] < 0.3 and mismatched["overall"]["action"] < matched["overall"]["action"] - 0.3


def test_load_semantics_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="moscale.synthetic"):
        load_semantics(tmp_path)
    (tmp_path / "semantics.jsonl").write_text(json.dumps({"id": "1"}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_semantics(tmp_path)


def test_protocol_reports_semantic_accuracy(synthetic, tmp_path):
    from moscale.evaluation.co_embedders import ContrastiveCoEmbedder
    from moscale.evaluation.protocol import ProtocolSettings, evaluate_repeat, load_batch, repeat_batches, summarize
    from moscale.evaluation.report import semantic_table

    rows = load_motion_dataset(synthetic, "test", cache_dir=tmp_path).with_format(
        "numpy", columns=["motion"], output_all_columns=True
    )
    settings = ProtocolSettings(seed=1, repeats=1, batch_size=16, multimodality=False)
    batches = {}
    for batch, indices in enumerate(repeat_batches(len(rows), 16, settings.seed, 0)):
        data = load_batch(rows, indices, settings.seed, 0, batch)
        batches[(tuple(data.captions), tuple(data.lengths.tolist()))] = data.motions

    def faithful(captions, lengths, seed):  # returns each text's own (real) motion
        return batches[(tuple(captions), tuple(lengths.tolist()))]

    def shuffled(captions, lengths, seed):  # returns another text's motion, cut to this text's length
        motions = batches[(tuple(captions), tuple(lengths.tolist()))].roll(1, dims=0)
        inside = (torch.arange(motions.shape[1])[None] < lengths[:, None])[..., None]
        return motions * inside

    embed = ContrastiveCoEmbedder(ContrastiveEvaluatorModel(tiny_contrastive_config()))
    semantics = load_semantics(synthetic)
    good = evaluate_repeat(rows, settings, 0, embed, faithful, semantics=semantics)
    bad = evaluate_repeat(rows, settings, 0, embed, shuffled, semantics=semantics)
    for name in ("action", "count", "direction", "order", "exact", "exact_1", "exact_2", "exact_3"):
        assert good[f"semantic_{name}"] == good[f"real_semantic_{name}"]
        assert bad[f"real_semantic_{name}"] == good[f"real_semantic_{name}"]
    assert good["semantic_exact"] >= 0.9
    assert bad["semantic_exact"] < good["semantic_exact"] - 0.5
    table = semantic_table(summarize([good]))
    assert table.splitlines()[0] == "| Category | All texts | 1 action | 2 actions | 3 actions |"
    assert any(line.startswith("| exact | ") for line in table.splitlines())
