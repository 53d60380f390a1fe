"""Prompt following: the per-category judge on real procedural clips, the prompt sets, and a run on a tiny pipeline."""

import numpy as np
import pytest

from moscale.evaluation import prompt_following as pf
from moscale.evaluation.semantic_accuracy import detect_actions
from moscale.synthetic import generate_clip, write_dataset
from tests.helpers import tiny_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural")
    write_dataset(folder, num_clips=200, seed=5)
    return folder


def test_judge_agrees_with_the_truth_of_real_clips_and_not_with_another_clips_truth():
    clips = [generate_clip(np.random.default_rng([3, i])) for i in range(60)]
    truths = [[a.to_dict() for a in clip.actions] for clip in clips]
    detections = [detect_actions(clip.joints) for clip in clips]
    own, other, judged = 0, 0, 0
    for category in pf.CATEGORIES:
        for i, truth in enumerate(truths):
            if pf.judged_fact(category, truth) is None:
                continue
            judged += 1
            own += pf.agrees(category, truth, detections[i])
            other += pf.agrees(category, truth, detections[(i + 1) % len(clips)])
    assert judged > 60
    assert own == judged  # the detectors read the generator's clips exactly
    assert other < 0.6 * judged


def test_procedural_clips_pass_every_plausibility_limit_and_a_sliding_foot_fails_one(dataset):
    from moscale.motion.representation import recover_from_ric
    from moscale.synthetic.body import TOE

    for index in range(0, 200, 10):
        joints = np.load(dataset / "new_joints" / f"{index:06d}.npy")
        figures = pf.motion_plausibility(joints)
        assert all(figures[name] <= limit for name, limit in pf.PLAUSIBILITY_LIMITS.items()), (index, figures)
    clip = recover_from_ric(np.load(dataset / "new_joint_vecs" / "000000.npy"))
    assert pf.motion_plausibility(clip)["foot_slide_m"] <= pf.PLAUSIBILITY_LIMITS["foot_slide_m"]
    sliding = clip.copy()
    sliding[:, TOE[0], 0] += 0.04 * np.arange(len(sliding))  # one toe drifts 4 cm per frame along the floor
    assert pf.motion_plausibility(sliding)["foot_slide_m"] > pf.PLAUSIBILITY_LIMITS["foot_slide_m"]


def test_judge_reads_each_category():
    truth = [{"name": "jump", "direction": "in_place", "count": 2}, {"name": "turn", "direction": "left", "angle": 90}]
    assert pf.judged_fact("jump_count_2", truth) == 0 and pf.judged_fact("jump_count_3", truth) is None
    assert pf.judged_fact("turn_direction", truth) == 1 and pf.judged_fact("order_2", truth) == 0
    detected = [{"name": "jump", "direction": "in_place", "count": 3}, {"name": "turn", "direction": "left"}]
    assert not pf.agrees("jump_count_2", truth, detected)
    assert pf.agrees("turn_direction", truth, detected) and pf.agrees("order_2", truth, detected)
    assert not pf.agrees("order_2", truth, detected[::-1])


def test_prompt_sets_cover_every_category_and_unseen_phrasings_are_not_dataset_captions(dataset):
    from moscale.evaluation.semantic_accuracy import load_semantics

    captions = {c for record in load_semantics(dataset).values() for c in record["captions"]}
    unseen = pf.unseen_prompts(20, captions)
    common = ("turn_direction", "wave_hand", "travel_direction", "order_2", "order_3")
    seen = pf.test_split_prompts(dataset, 20, seed=0, categories=common)
    assert set(unseen) == set(pf.CATEGORIES) and set(seen) == set(common)
    for prompts in (unseen, seen):
        for category, items in prompts.items():
            assert len(items) == 20
            assert all(pf.judged_fact(category, item["actions"]) is not None for item in items)
    assert all(item["prompt"] not in captions for items in unseen.values() for item in items)
    with pytest.raises(AssertionError, match="is a caption of the dataset"):
        pf.unseen_prompts(2, {"a person spins to the left"})
    semantics = load_semantics(dataset)
    val_ids = set((dataset / "val.txt").read_text().split())
    val_captions = {semantics[i]["captions"][0] for i in val_ids}
    val = pf.test_split_prompts(dataset, 5, seed=0, categories=("travel_direction",), split="val")
    assert all(item["prompt"] in val_captions for item in val["travel_direction"])
    assert not any(item["prompt"] in val_captions for item in seen["travel_direction"])
    with pytest.raises(FileNotFoundError, match=r"validation\.txt not found.*\(train, val, test\)"):
        pf.test_split_prompts(dataset, 5, seed=0, split="validation")


def test_a_run_on_a_tiny_pipeline_reports_every_category(dataset):
    pipe = tiny_pipeline()
    categories = ("turn_direction", "order_2", "wave_hand", "jump_count_1")
    sets = {"test_split": pf.test_split_prompts(dataset, 3, seed=1, categories=categories)}
    result = pf.evaluate_prompt_following(pipe, sets, seed=0, refinement_steps=(1, 1, 1, 1))
    entry = result["sets"]["test_split"]
    assert set(entry["categories"]) == set(categories)
    assert all(0.0 <= v["agreement"] <= 1.0 and v["samples"] == 3 for v in entry["categories"].values())
    assert set(entry["plausible_fraction"]) == set(pf.PLAUSIBILITY_LIMITS)
    for category, figures in entry["categories"].items():
        asked = [len(item["actions"]) for item in sets["test_split"][category]]
        parts = figures["by_num_actions"]
        assert {n: part["samples"] for n, part in parts.items()} == {str(n): asked.count(n) for n in set(asked)}
        agreed = sum(part["agreement"] * part["samples"] for part in parts.values())
        assert agreed == pytest.approx(figures["agreement"] * figures["samples"])
    errors = entry["categories"]["jump_count_1"]["count_errors"]
    assert list(errors) == list(pf.COUNT_ERRORS) and sum(errors.values()) == 3
    assert errors["right"] == round(3 * entry["categories"]["jump_count_1"]["agreement"])
    assert "count_errors" not in entry["categories"]["order_2"]
    table = pf.format_table(result)
    assert "test_split" in table and "| counts, in prompts of" in table and "| counts: one off |" in table


def test_a_wrong_count_is_told_apart_as_one_off_another_actions_or_missing():
    truth = [{"name": "side_step", "count": 3}, {"name": "jump", "count": 1}, {"name": "stand"}]

    def outcome(jumps):
        detected = [{"name": "side_step", "count": 2}, {"name": "stand"}]
        if jumps is not None:
            detected.insert(1, {"name": "jump", "count": jumps})
        return pf.count_error("jump_count_1", truth, detected)

    assert outcome(1) == "right"
    assert outcome(2) == "one off"
    assert outcome(3) == "another action's count"  # the side steps' 3
    assert outcome(4) == "other"
    assert outcome(None) == "action missing"
    # A count both one off and another action's: counted as the other action's.
    truth = [{"name": "squat", "count": 2}, {"name": "jump", "count": 1}]
    assert pf.count_error("jump_count_1", truth, [{"name": "squat", "count": 2}, {"name": "jump", "count": 2}]) == (
        "another action's count"
    )


def test_counts_are_pooled_by_the_number_of_actions_a_prompt_asks_for():
    def category(parts):
        return {"by_num_actions": {n: {"agreement": a, "samples": k} for n, (a, k) in parts.items()}}

    result = {
        "sets": {
            "test_split": {
                "categories": {
                    "jump_count_2": category({"1": (1.0, 2), "2": (0.25, 4)}),
                    "wave_count_3": category({"1": (0.5, 2), "3": (0.0, 1)}),
                    "order_2": category({"2": (1.0, 5)}),  # not a count: left out
                }
            },
            "unseen": {"categories": {"jump_count_2": category({"1": (0.0, 3)})}},
        }
    }
    assert pf.pooled_count_errors(result) == {}  # no count_errors recorded: no rows
    assert pf.counts_by_num_actions(result) == {
        "1": ["75% (n=4)", "0% (n=3)"],
        "2": ["25% (n=4)", "-"],
        "3": ["0% (n=1)", "-"],
    }


def test_a_category_gets_the_same_clips_and_seeds_whichever_others_are_evaluated(dataset, tmp_path):
    import json

    both = pf.test_split_prompts(dataset, 4, seed=2, categories=("turn_direction", "order_2"))
    alone = pf.test_split_prompts(dataset, 4, seed=2, categories=("order_2",))
    assert list(alone) == ["order_2"] and alone["order_2"] == both["order_2"]
    with pytest.raises(ValueError, match="unknown categories"):
        pf.test_split_prompts(dataset, 4, seed=2, categories=("jump_count_9",))

    tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    common = ["--data_dir", str(dataset), "--model", str(tmp_path / "pipeline"), "--samples_per_category", "2"]
    sampling = ["--refinement_steps", "1", "1", "1", "1", "--temperature", "0.5", "--guidance_scale", "2"]
    for name, categories in (("both", ["turn_direction", "order_2"]), ("alone", ["order_2"])):
        pf.main([*common, *sampling, "--categories", *categories, "--output_dir", str(tmp_path / name)])
    runs = {name: json.loads((tmp_path / name / "result.json").read_text()) for name in ("both", "alone")}
    assert runs["alone"]["sampling"] == {"guidance_scale": 2.0, "refinement_steps": [1, 1, 1, 1], "temperature": 0.5}
    for set_name in ("test_split", "unseen"):
        assert list(runs["both"]["sets"][set_name]["categories"]) == ["turn_direction", "order_2"]
        alone, both = runs["alone"]["sets"][set_name], runs["both"]["sets"][set_name]
        assert alone["categories"] == {"order_2": both["categories"]["order_2"]}
        assert alone["failure_examples"].get("order_2") == both["failure_examples"].get("order_2")
    split_only = [*common, *sampling, "--categories", "order_2", "--split_only"]
    pf.main([*split_only, "--output_dir", str(tmp_path / "split_only")])
    only = json.loads((tmp_path / "split_only" / "result.json").read_text())
    assert list(only["sets"]) == ["test_split"] and only["sets"]["test_split"] == runs["alone"]["sets"]["test_split"]
    with pytest.raises(SystemExit):
        pf.main([*common[:-1], "0"])  # no samples per category
    table = (tmp_path / "alone" / "table.md").read_text()
    assert "| order_2 |" in table and "turn_direction" not in table


def test_every_unseen_prompt_uses_a_word_the_caption_grammar_never_produces():
    from moscale.synthetic import captions

    grammar = [text for templates in captions._TEMPLATES.values() for text in templates]
    grammar += captions._JOINS + [subject for subject, _ in captions._SUBJECTS]
    grammar += [phrase for phrases in captions._TIMES.values() for phrase in phrases]
    grammar = " | ".join(grammar).lower()
    for word in pf.HELD_OUT_WORDS:
        assert word not in grammar, word
    for category, templates in pf._unseen_templates().items():
        for text, _ in templates:
            assert any(word in text for word in pf.HELD_OUT_WORDS), (category, text)
