"""The procedural dataset: plausibility of the motions, captions, determinism, and the written folder."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from moscale.motion.data import (
    MotionCollator,
    MotionTransform,
    TransformedMotionDataset,
    index_motion_folder,
    load_mean_std,
    load_motion_dataset,
    parse_caption_line,
    read_split,
)
from moscale.motion.representation import HUMANML3D, HUMANML3D_BONE_LENGTHS, features_from_joints, recover_from_ric
from moscale.synthetic import VOCABULARY, Action, caption_line, generate_clip, make_captions, make_example
from moscale.synthetic.__main__ import main as cli_main
from moscale.synthetic.body import (
    ANKLE,
    ANKLE_HEIGHT,
    ELBOW,
    HIP,
    KNEE,
    PELVIS,
    SHOULDER,
    SPINE3,
    TOE,
    TOE_HEIGHT,
    WRIST,
)
from moscale.synthetic.generator import MAX_ROWS, MIN_ROWS
from moscale.synthetic.plausibility import (
    MAX_JOINT_STEP_M,
    MIN_JUMP_CLEARANCE_M,
    MIN_JUMP_FLIGHT_S,
    failed_checks,
    jump_flights,
    signed_knee_flexion,
)
from moscale.synthetic.plausibility import main as plausibility_main
from moscale.synthetic.statistics import dataset_statistics
from moscale.synthetic.statistics import main as statistics_main
from moscale.synthetic.timeline import FPS, GRAVITY
from moscale.synthetic.writer import write_dataset

PARENTS = np.array(HUMANML3D.parents)


def _clips():
    """One clip per action of the vocabulary, then a few random plans of 1 to 3 actions."""
    rng = np.random.default_rng(1234)
    clips = [generate_clip(rng, [Action.sample(rng, name)]) for name in VOCABULARY]
    return clips + [generate_clip(rng) for _ in range(8)]


CLIPS = _clips()


def _angle_degrees(a, b):
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def test_lengths_are_humanml3d_lengths():
    for clip in CLIPS:
        assert MIN_ROWS <= clip.num_rows <= MAX_ROWS
        assert clip.joints.shape == (clip.num_rows + 1, 22, 3)
        for action in clip.actions:
            assert 0 <= action.start < action.end <= clip.num_rows


def test_bone_lengths_are_the_humanml3d_ones_in_every_frame():
    for clip in CLIPS:
        lengths = np.linalg.norm(clip.joints[:, 1:] - clip.joints[:, PARENTS[1:]], axis=-1)
        np.testing.assert_allclose(lengths, np.broadcast_to(HUMANML3D_BONE_LENGTHS[1:], lengths.shape), atol=1e-9)


def test_planted_feet_are_on_the_floor_and_do_not_slide():
    for clip in CLIPS:
        for side in (0, 1):
            planted = clip.stance_2T[side]
            toe, ankle = clip.joints[:, TOE[side]], clip.joints[:, ANKLE[side]]
            np.testing.assert_allclose(toe[planted, 1], TOE_HEIGHT, atol=1e-9)
            np.testing.assert_allclose(ankle[planted, 1], ANKLE_HEIGHT[side], atol=1e-9)
            still = planted[1:] & planted[:-1]
            assert np.abs(np.diff(ankle, axis=0)[still]).max(initial=0.0) < 1e-9
            assert np.abs(np.diff(toe, axis=0)[still]).max(initial=0.0) < 1e-9


def test_both_feet_leave_the_floor_only_in_jumps_and_runs():
    for clip in CLIPS:
        flying = ~clip.stance_2T.any(0)
        allowed = np.zeros(len(flying), dtype=bool)
        for action in clip.actions:
            if action.name in ("jump", "run"):
                allowed[action.start : action.end + 1] = True
        assert not (flying & ~allowed).any()
        # No joint ever goes through the floor.
        assert clip.joints[..., 1].min() >= TOE_HEIGHT - 1e-9
    jumps = [clip for clip in CLIPS if clip.actions[0].name == "jump" and len(clip.actions) == 1]
    assert jumps and (~jumps[0].stance_2T.any(0)).sum() >= jumps[0].actions[0].count * 3


def test_motion_is_smooth():
    for clip in CLIPS:
        velocity = np.linalg.norm(np.diff(clip.joints, axis=0), axis=-1) * 20
        acceleration = np.linalg.norm(np.diff(clip.joints, 2, axis=0), axis=-1) * 400
        # Bounds of fast human motion: the fastest joint of real HumanML3D clips (a hand in a tennis swing) goes
        # 10 m/s, 0.5 m per frame; a kicking foot or a running stride accelerates at about 15 g.
        assert velocity.max() < MAX_JOINT_STEP_M * FPS
        assert acceleration.max() < 150.0


def test_plausibility_checks_pass_on_many_clips():
    rng = np.random.default_rng(2024)
    # Random plans, and the actions the checks are about played many times, some by fast performers.
    clips = [generate_clip(rng) for _ in range(150)]
    for _ in range(15):
        for name in ("jump", "kick", "run"):
            clips.append(generate_clip(rng, [Action.sample(rng, name)]))
    flights = [flight for clip in clips for flight in jump_flights(clip)]
    assert len(flights) > 50
    for clip in clips:
        assert failed_checks(clip) == [], [action.to_dict() for action in clip.actions]
    assert min(clearance for clearance, _ in flights) >= MIN_JUMP_CLEARANCE_M
    assert min(flight for _, flight in flights) >= MIN_JUMP_FLIGHT_S


def _single_action_clip(name: str, seed: int = 5):
    rng = np.random.default_rng(seed)
    return generate_clip(rng, [Action.sample(rng, name)])


def test_jump_flights_are_ballistic():
    clip = _single_action_clip("jump")
    flying = np.flatnonzero(~clip.stance_2T.any(0))
    assert len(flying)
    for phase in np.split(flying, np.flatnonzero(np.diff(flying) > 1) + 1):
        # From take-off to landing the ankles fall with the generator's gravity.
        heights = clip.joints[phase[0] - 1 : phase[-1] + 2][:, ANKLE, 1]
        np.testing.assert_allclose(np.diff(heights, 2, axis=0), -GRAVITY / FPS**2, atol=1e-9)


def test_jump_checks_fail_on_a_low_or_short_jump():
    clip = _single_action_clip("jump")
    assert failed_checks(clip) == []
    flying = ~clip.stance_2T.any(0)
    above_floor = np.minimum(clip.joints[:, ANKLE, 1] - np.array(ANKLE_HEIGHT), clip.joints[:, TOE, 1] - TOE_HEIGHT)
    low = clip.joints.copy()
    # The whole body lowered in the air until its lower foot is at most 4 cm up: a hop barely seen.
    low[flying, :, 1] -= np.clip(above_floor[flying].min(-1) - 0.04, 0.0, None)[:, None]
    failures = failed_checks(replace(clip, joints=low))
    assert failures and all("clears the floor" in failure for failure in failures)

    short = clip.stance_2T.copy()
    for phase in np.split(np.flatnonzero(flying), np.flatnonzero(np.diff(np.flatnonzero(flying)) > 1) + 1):
        short[:, phase[3:]] = True  # back on the floor after 3 frames in the air: 0.2 s
    failures = failed_checks(replace(clip, stance_2T=short))
    assert failures and all("in the air" in failure for failure in failures)


def test_joint_step_check_fails_on_a_snapping_kick():
    clip = _single_action_clip("kick")
    assert failed_checks(clip) == []
    # The same kick played three times as fast: the foot snaps.
    snap = replace(clip, joints=clip.joints[::3], stance_2T=clip.stance_2T[:, ::3], actions=[])
    failures = failed_checks(snap)
    assert len(failures) == 1 and "in one frame" in failures[0]
    assert np.linalg.norm(np.diff(snap.joints, axis=0), axis=-1).max() > MAX_JOINT_STEP_M


def test_joint_angles_stay_in_human_range():
    for clip in CLIPS:
        joints = clip.joints
        for side in (0, 1):
            thigh, shin = joints[:, KNEE[side]] - joints[:, HIP[side]], joints[:, ANKLE[side]] - joints[:, KNEE[side]]
            knee_flexion = _angle_degrees(thigh, shin)
            assert knee_flexion.max() < 145.0
            # The knee bends forwards only (never backwards about the foot's left-right axis).
            assert signed_knee_flexion(joints, side).min() > -1.0
            upper = joints[:, ELBOW[side]] - joints[:, SHOULDER[side]]
            fore = joints[:, WRIST[side]] - joints[:, ELBOW[side]]
            assert _angle_degrees(upper, fore).max() < 145.0
            assert _angle_degrees(thigh, np.array([0.0, -1.0, 0.0])).max() < 120.0
        trunk_lean = _angle_degrees(joints[:, SPINE3] - joints[:, PELVIS], np.array([0.0, 1.0, 0.0]))
        assert trunk_lean.max() < 50.0


def test_clips_vary_in_speed_amplitude_and_style():
    rng = np.random.default_rng(7)
    plan = [Action("walk", direction="forward", count=3)]
    walks = [generate_clip(rng, plan) for _ in range(6)]
    durations = [clip.actions[0].end - clip.actions[0].start for clip in walks]
    distances = [clip.actions[0].distance for clip in walks]
    pelvis_heights = [clip.joints[0, PELVIS, 1] for clip in walks]
    stance_widths = [abs(clip.joints[0, ANKLE[0], 0] - clip.joints[0, ANKLE[1], 0]) for clip in walks]
    arm_swing = [np.ptp(clip.joints[:, WRIST[0], 2] - clip.joints[:, PELVIS, 2]) for clip in walks]
    assert len(set(durations)) >= 4
    assert np.std(distances) > 0.05
    assert np.ptp(stance_widths) > 0.03
    assert np.ptp(arm_swing) > 0.05
    # The performers share one skeleton, so their standing heights agree up to how wide they stand.
    assert np.ptp(pelvis_heights) < 0.01


def test_generation_is_deterministic_for_a_seed():
    first, again, other = make_example(3, 5), make_example(3, 5), make_example(4, 5)
    np.testing.assert_array_equal(first.features, again.features)
    assert first.captions == again.captions and first.semantics == again.semantics
    assert first.semantics != other.semantics


def test_written_features_follow_the_humanml3d_processing():
    example = make_example(0, 1)
    assert example.features.shape == (example.semantics["num_frames"], HUMANML3D.feature_dim)
    assert example.features.dtype == np.float32 and example.joints.dtype == np.float32
    np.testing.assert_array_equal(example.joints, recover_from_ric(example.features))
    # The generated body starts at the origin facing +Z, so processing barely moves it.
    clip = generate_clip(np.random.default_rng([0, 1]))
    processed = recover_from_ric(features_from_joints(clip.joints))
    assert np.abs(processed[0, PELVIS, [0, 2]]).max() < 1e-6
    assert np.abs(processed[0, :, [0, 2]] - clip.joints[0, :, [0, 2]]).max() < 0.005
    assert np.abs(processed[..., 1] - (clip.joints[:-1, :, 1] - TOE_HEIGHT)).max() < 1e-4


def test_captions_name_every_action_in_order_with_its_count():
    rng = np.random.default_rng(0)
    plan = [
        Action("jump", direction="in_place", count=2),
        Action("turn", direction="left", angle=180),
        Action("wave", side="right", count=3),
    ]
    captions = make_captions(plan, rng, num_captions=3)
    assert len(set(captions)) == 3
    for caption in captions:
        connectives = ("then", "next", "later", "after which", "once done", "subsequently")
        assert sum(caption.lower().count(word) for word in connectives) == 2
        assert any(word in caption for word in ("twice", "two times", "2 times", "two jumps", "2 jumps"))
        assert "left" in caption and "right" in caption
        assert any(word in caption for word in ("three times", "3 times", "thrice"))
        parsed = parse_caption_line(caption_line(caption))
        assert parsed.text == caption and parsed.is_whole_motion
        assert all("/" in token for token in parsed.tokens)
    phrasings = {make_captions([Action("squat", count=2)], np.random.default_rng(seed), 1)[0] for seed in range(30)}
    assert len(phrasings) >= 8


def test_an_impossible_plan_is_refused():
    plan = [
        Action("squat", count=5),
        Action("side_step", direction="left", count=5),
        Action("jump", direction="forward", count=5),
    ]
    with pytest.raises(ValueError, match="does not fit"):
        generate_clip(np.random.default_rng(0), plan)


def test_written_folder_loads_and_does_not_depend_on_workers(tmp_path):
    one = write_dataset(tmp_path / "one", 6, seed=9, workers=1, progress=False)
    two = write_dataset(tmp_path / "two", 6, seed=9, workers=2, progress=False)
    for name in ("Mean.npy", "Std.npy", "semantics.jsonl", "train.txt", "val.txt", "test.txt"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    for path in sorted((one / "new_joint_vecs").glob("*.npy")):
        assert path.read_bytes() == (two / "new_joint_vecs" / path.name).read_bytes()

    splits = {split: read_split(one, split) for split in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == [f"{i:06d}" for i in range(6)]
    assert all(splits.values())
    records = [json.loads(line) for line in (one / "semantics.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"{i:06d}" for i in range(6)]
    for record in records:
        features = np.load(one / "new_joint_vecs" / f"{record['id']}.npy")
        assert features.shape == (record["num_frames"], 263)
        assert np.load(one / "new_joints" / f"{record['id']}.npy").shape == (record["num_frames"], 22, 3)
        assert len((one / "texts" / f"{record['id']}.txt").read_text().splitlines()) == 3
    std = np.load(one / "Std.npy")
    assert std.shape == (263,) and (std > 0).all() and len(np.unique(std)) <= 7

    dataset = load_motion_dataset(one, "train", cache_dir=tmp_path / "cache")
    assert len(dataset) == len(splits["train"])
    assert np.asarray(dataset[0]["motion"]).shape[1] == 263


def test_cli_writes_a_folder_that_moscale_data_loads_unchanged(tmp_path):
    root = tmp_path / "data"
    cli_main(["--output_dir", str(root), "--num_clips", "8", "--seed", "2", "--workers", "1"])
    records = {r["id"]: r for r in map(json.loads, (root / "semantics.jsonl").read_text().splitlines())}
    mean, std = load_mean_std(root, HUMANML3D.feature_dim)
    transform = MotionTransform(mean, std, random_crop=False, random_caption=False)
    loaded_ids = []
    for split in ("train", "val", "test"):
        index = index_motion_folder(root, split)
        # No clip is dropped by the HumanML3D length rules, and every caption describes the whole clip.
        assert index.report.items == index.report.whole_motion_items == index.report.motions_listed > 0
        dataset = load_motion_dataset(root, split, cache_dir=tmp_path / "cache")
        for row in dataset.with_format("numpy", columns=["motion"], output_all_columns=True):
            record = records[row["id"]]
            assert record["split"] == split and row["length"] == record["num_frames"]
            np.testing.assert_array_equal(row["motion"], np.load(root / "new_joint_vecs" / f"{row['id']}.npy"))
            assert list(row["captions"]) == record["captions"]
            loaded_ids.append(row["id"])
        batch = MotionCollator()(list(TransformedMotionDataset(dataset, transform)))
        assert batch["motions"].shape[0] == len(dataset) and np.isfinite(batch["motions"].numpy()).all()
    assert sorted(loaded_ids) == sorted(records)


def test_dataset_statistics_count_what_semantics_holds(tmp_path, capsys):
    root = write_dataset(tmp_path / "data", 12, seed=4, workers=1, progress=False)
    records = [json.loads(line) for line in (root / "semantics.jsonl").read_text().splitlines()]
    figures = dataset_statistics(root)
    assert figures["clips"] == 12 and figures["captions"] == 36
    num_actions = [len(r["actions"]) for r in records]
    assert figures["actions_per_clip"] == {n: num_actions.count(n) / 12 for n in sorted(set(num_actions))}
    assert sum(figures["action_share"].values()) == pytest.approx(1.0)
    walks = sum(a["name"] == "walk" for r in records for a in r["actions"]) / sum(num_actions)
    assert figures["action_share"].get("walk", 0.0) == pytest.approx(walks)
    assert set(figures["count_share"]) <= {1, 2, 3, 4, 5}
    assert figures["rows_min"] == min(r["num_frames"] for r in records) >= 40
    assert figures["distinct_captions"] == len({c for r in records for c in r["captions"]})
    statistics_main([str(root)])
    assert "clips: 12" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="semantics.jsonl"):
        dataset_statistics(tmp_path)


@pytest.mark.parametrize("command", [cli_main, plausibility_main, statistics_main])
def test_cli_flags_are_spelled_with_underscores(command, capsys):
    """The project's one flag spelling (--output_dir, --num_clips), as `moscale --help` shows it."""
    with pytest.raises(SystemExit):
        command(["--help"])
    flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", capsys.readouterr().out)
    assert "--help" in flags and not [flag for flag in flags if "-" in flag[2:]], flags


def test_cli_refuses_to_overwrite(tmp_path):
    cli_main(["--output_dir", str(tmp_path / "data"), "--num_clips", "3", "--seed", "2", "--workers", "1"])
    assert len(list((tmp_path / "data" / "texts").glob("*.txt"))) == 3
    with pytest.raises(FileExistsError, match="overwrite"):
        cli_main(["--output_dir", str(tmp_path / "data"), "--num_clips", "3", "--workers", "1"])
    with pytest.raises(SystemExit):
        cli_main(["--output_dir", str(tmp_path / "other"), "--num_clips", "0"])
