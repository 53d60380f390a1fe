"""Semantic detectors: agreement with the generator's ground truth, and no action found where there is none."""

from __future__ import annotations

import numpy as np
import pytest

from moscale.motion.representation import recover_from_ric
from moscale.motion.retarget import bvh_to_features
from moscale.synthetic import Action, detect, generate_clip, make_example
from moscale.synthetic.body import (
    ANKLE,
    ANKLE_HEIGHT,
    FOOT,
    HIP,
    LEFT,
    LEG_REACH,
    RIGHT,
    TOE_HEIGHT,
    WRIST,
    pose_to_joints,
)
from moscale.synthetic.timeline import Style, Timeline, keyframes
from tests.shared_data import SHARED_DATA

REAL_CLIP = SHARED_DATA / "humanml3d_sample" / "new_joints" / "012314.npy"
BVH = SHARED_DATA / "bvh"


def _keys(actions) -> list[tuple]:
    return [(a["name"], a.get("direction"), a.get("side"), a.get("count"), a.get("angle")) for a in actions]


def _single(action: Action, seed: int = 0) -> np.ndarray:
    return generate_clip(np.random.default_rng(seed), [action]).joints


def _custom(build, num_frames: int = 80) -> np.ndarray:
    """Joints of a neutral performer to whom `build(timeline)` adds a movement outside the vocabulary."""
    timeline = Timeline(Style.sample(np.random.default_rng(0)))
    build(timeline)
    channels, _ = timeline.channels(num_frames, 0)
    return pose_to_joints(channels)


def test_agreement_with_ground_truth_on_written_clips():
    # The clips as a dataset stores them: features_from_joints then recover_from_ric.
    examples = [make_example(2024, index) for index in range(40)]
    agree = sum(_keys(e.semantics["actions"]) == _keys(detect(e.joints).to_dict()["actions"]) for e in examples)
    assert agree >= 39


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_counts_of_jumps_squats_waves_and_steps(count):
    detection = detect(_single(Action("jump", direction="in_place", count=count), seed=count))
    assert detection.counts["jumps"] == count and detection.actions[0].direction == "in_place"
    assert detect(_single(Action("squat", count=count), seed=count)).counts["squats"] == count
    waves = detect(_single(Action("wave", side="left", count=count), seed=count))
    assert (waves.counts["waves_left"], waves.counts["waves_right"]) == (count, 0)
    walk = detect(_single(Action("walk", direction="backward", count=count), seed=count))
    assert [(a.name, a.direction, a.count) for a in walk.actions] == [("walk", "backward", count)]
    assert walk.travel_forward < 0


def test_a_kick_wind_up_touching_the_floor_is_not_a_step():
    # Clip 3062 of seed 0: the kicking foot nearly touches the floor behind the body before the kick.
    example = make_example(0, 3062)
    assert _keys(detect(example.joints).to_dict()["actions"]) == _keys(example.semantics["actions"])


def test_turn_angle_direction_travel_and_order():
    rng = np.random.default_rng(5)
    plan = [
        Action("walk", direction="forward", count=4),
        Action("turn", direction="left", angle=180),
        Action("kick", side="right", count=1),
    ]
    clip = generate_clip(rng, plan)
    detection = detect(clip.joints)
    assert detection.order == ["walk", "turn", "kick"]
    assert detection.turn_direction == "left" and abs(detection.turn_degrees - 180) < 15
    assert detection.actions[1].angle == 180 and detection.actions[2].side == "right"
    walked = clip.actions[0].distance
    assert abs(detection.actions[0].distance - walked) < 0.25 * walked
    assert abs(detection.travel_distance - walked) < 0.25 * walked


def test_standing_still_is_only_standing():
    detection = detect(_single(Action("stand")))
    assert detection.order == ["stand"]
    assert not any(detection.counts.values())
    assert abs(detection.turn_degrees) < 1 and detection.travel_distance < 0.02


def test_a_raised_hand_held_still_is_not_a_wave():
    def hold_hand_up(timeline):
        up = keyframes([0, 10, 50, 60], [0.0, 1.0, 1.0, 0.0])
        style = timeline.style
        timeline.pose_arm(RIGHT, 5, 0.3 * up, style.arm_abduct + 1.6 * up, style.elbow_rest + 1.3 * up, bend_up=up)

    detection = detect(_custom(hold_hand_up))
    assert detection.counts["waves_right"] == 0 and detection.counts["waves_left"] == 0
    assert "raise_arms" not in detection.order


def test_a_shallow_knee_bend_is_not_a_squat():
    def bob(timeline):
        timeline.add(timeline.dy_N, 5, -0.12 * keyframes([0, 10, 20, 30, 40, 50], [0, 1, 0, 1, 0, 0]))

    assert detect(_custom(bob)).counts["squats"] == 0


def test_a_deep_lunge_is_not_a_squat():
    def lunge(timeline):
        forward = timeline.foot_pos[LEFT] + np.array([0.0, 0.0, 0.75])
        timeline.move_foot(LEFT, 5, 12, forward, lift=0.08)
        timeline.add(timeline.dy_N, 17, -0.30 * keyframes([0, 10, 25, 35], [0, 1, 1, 0]))
        timeline.move_foot(LEFT, 55, 12, forward - np.array([0.0, 0.0, 0.75]), lift=0.08)

    joints = _custom(lunge, 90)
    # As deep as a squat (hips under 70 % of the leg length above the ankles), but with the feet split.
    hip_height = (joints[:, HIP, 1] - joints[:, ANKLE, 1]).min(0)
    assert (hip_height < 0.7 * np.array(LEG_REACH)).all()
    detection = detect(joints)
    assert detection.counts["squats"] == detection.counts["jumps"] == detection.counts["kicks"] == 0


def test_arms_swinging_below_the_shoulders_are_not_a_wave():
    def low_swing(timeline):
        style = timeline.style
        swing = np.sin(np.linspace(0, 6 * np.pi, 61))
        held = keyframes([0, 8, 52, 60], [0, 1, 1, 0])
        abduct = style.arm_abduct + held * (0.4 + 0.4 * swing)
        timeline.pose_arm(RIGHT, 5, 0.2 * held, abduct, style.elbow_rest + 0.3 * held)

    joints = _custom(low_swing, 90)
    assert np.ptp(joints[:, WRIST[RIGHT], 0]) > 0.25  # the hand does sweep from side to side
    detection = detect(joints)
    assert detection.counts["waves_left"] == detection.counts["waves_right"] == 0
    assert "raise_arms" not in detection.order


def test_a_foot_lifted_and_put_back_is_not_a_step_or_a_kick():
    def lift_and_replace(timeline):
        home = timeline.foot_pos[RIGHT].copy()
        for repeat in range(3):
            timeline.move_foot(RIGHT, 5 + 20 * repeat, 8, home + np.array([0.0, 0.15, 0.05]))
            timeline.move_foot(RIGHT, 13 + 20 * repeat, 8, home)

    detection = detect(_custom(lift_and_replace, 90))
    assert detection.counts["steps"] == detection.counts["kicks"] == detection.counts["jumps"] == 0
    assert not {"walk", "side_step", "run"} & set(detection.order)


def test_rising_onto_the_toes_is_not_a_jump():
    def calf_raise(timeline):
        rise = 0.06 * keyframes([0, 8, 16, 24, 32], [0, 1, 0, 1, 0])
        for side in (LEFT, RIGHT):
            ankle = timeline.ankle_2N3[side, 5 : 5 + len(rise)]
            ankle[:, 1] += rise
            # Pitch the foot down just enough to keep the toe on the floor.
            pitch = np.arcsin((ANKLE_HEIGHT[side] + rise - TOE_HEIGHT) / FOOT[side]) - np.arcsin(
                (ANKLE_HEIGHT[side] - TOE_HEIGHT) / FOOT[side]
            )
            timeline.foot_pitch_2N[side, 5 : 5 + len(rise)] = pitch

    detection = detect(_custom(calf_raise))
    assert detection.counts["jumps"] == 0 and "run" not in detection.order


def test_running_has_no_jumps_kicks_or_counted_steps():
    detection = detect(_single(Action("run", direction="forward"), seed=3))
    assert detection.order == ["run"] and detection.actions[0].direction == "forward"
    assert detection.counts["jumps"] == detection.counts["kicks"] == detection.counts["steps"] == 0


def test_detection_ignores_where_the_motion_is_and_which_way_it_faces():
    clip = generate_clip(
        np.random.default_rng(11),
        [Action("side_step", direction="right", count=3), Action("jump", direction="forward", count=2)],
    )
    angle = np.radians(73.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    moved = clip.joints @ rotation.T + np.array([3.0, 0.2, -2.0])
    expected = _keys([a.to_dict() for a in clip.actions])
    assert _keys(detect(clip.joints).to_dict()["actions"]) == expected
    assert _keys(detect(moved).to_dict()["actions"]) == expected


def test_millimetre_jitter_changes_nothing():
    rng = np.random.default_rng(0)
    for seed in range(6):
        example = make_example(77, seed)
        noisy = example.joints + rng.normal(0.0, 0.002, example.joints.shape)
        assert _keys(detect(noisy).to_dict()["actions"]) == _keys(example.semantics["actions"])


def test_real_humanml3d_clip():
    # Clip 012314: "walking sideways and almost falling", "lunges and hits something, then backing up",
    # "playing tennis". No jump, squat, wave, kick, raised arms, run or turn on the spot happens in it.
    joints = np.load(REAL_CLIP)
    for motion in (joints, joints[::-1].copy()):
        detection = detect(motion)
        assert detection.counts["jumps"] == detection.counts["squats"] == detection.counts["kicks"] == 0
        assert detection.counts["waves_left"] == detection.counts["waves_right"] == 0
        assert not {"run", "turn", "raise_arms"} & set(detection.order)
    # What it does contain: stepping sideways, then stepping back.
    detection = detect(joints)
    assert [(a.name, a.direction) for a in detection.actions] == [("side_step", "left"), ("walk", "backward")]


def _bvh_actions(name: str) -> list[tuple]:
    detection = detect(recover_from_ric(bvh_to_features(BVH / name)))
    assert detection.counts["squats"] == detection.counts["kicks"] == 0
    return [action.key() for action in detection.actions]


def test_real_motion_capture():
    # CMU jumping jacks: six two-footed flights (three jacks, out and in), arms over the head; nothing else.
    assert _bvh_actions("cmu_jumping_jacks.bvh") == [
        ("jump", "in_place", None, 6, None),
        ("raise_arms", None, None, None, None),
    ]
    # A performer stands, then waves the right hand three times (hand at shoulder height, forearm up).
    assert _bvh_actions("wave_hello.bvh") == [("stand", None, None, None, None), ("wave", None, "right", 3, None)]
    # CMU 01_01: ten two-footed forward jumps, with a turn around after the fourth and the seventh.
    assert _bvh_actions("cmu_01_01.bvh") == [
        ("jump", "forward", None, 4, None),
        ("turn", "right", None, None, 180),
        ("jump", "forward", None, 3, None),
        ("turn", "left", None, None, 180),
        ("jump", "forward", None, 3, None),
    ]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\(T, 22, 3\)"):
        detect(np.zeros((10, 21, 3)))
    with pytest.raises(ValueError, match="finite"):
        detect(np.full((10, 22, 3), np.nan))
    with pytest.raises(ValueError, match="positive frame rate"):
        detect(np.zeros((10, 22, 3)), fps=0)
