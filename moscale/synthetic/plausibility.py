"""Plausibility figures of generated clips: `python -m moscale.synthetic.plausibility --num_clips 1000 --seed 0`.

Per clip: bone-length error, planted-foot height error and sliding, flight outside jumps and runs, jump clearance
and flight time, speed and acceleration peaks (and the farthest any joint moves in one frame, per action), knee,
elbow, hip and trunk angles. Over clips: the worst value of each, and the spread of timing, speed and amplitude
between clips that perform the same action. `failed_checks` says which of the hard limits below a clip breaks.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from moscale.motion.representation import HUMANML3D, HUMANML3D_BONE_LENGTHS

from .body import ANKLE, ANKLE_HEIGHT, ELBOW, HIP, KNEE, PELVIS, SHOULDER, SPINE3, TOE, TOE_HEIGHT, WRIST
from .generator import Clip, generate_clip

_PARENTS = np.array(HUMANML3D.parents)

# Hard limits every generated clip keeps (`failed_checks`). Real jumps in place clear the floor by 10 to 30 cm, and
# a jump lower than a few centimetres is not seen as one; the fastest joint of real HumanML3D clips moves 0.5 m in
# one frame at 20 fps (a hand in a tennis swing), the others at most 0.22 m.
MIN_JUMP_CLEARANCE_M = 0.08
MIN_JUMP_FLIGHT_S = 0.25
MAX_JOINT_STEP_M = 0.5
# Figures whose worst value over clips is their smallest.
_WORST_IS_LOWEST = (
    "lowest_joint_above_floor_m",
    "min_signed_knee_flexion_deg",
    "min_jump_clearance_m",
    "min_jump_flight_s",
)


def _angle_degrees(a, b) -> np.ndarray:
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def signed_knee_flexion(joints: np.ndarray, side: int) -> np.ndarray:
    """Knee flexion (T,) in degrees, negative when the knee bends backwards (about the foot's left-right axis)."""
    thigh = joints[:, KNEE[side]] - joints[:, HIP[side]]
    shin = joints[:, ANKLE[side]] - joints[:, KNEE[side]]
    foot = joints[:, TOE[side]] - joints[:, ANKLE[side]]
    left = np.stack([foot[:, 2], np.zeros(len(foot)), -foot[:, 0]], -1)
    left /= np.linalg.norm(left, axis=-1, keepdims=True)
    sine = (np.cross(thigh, shin) * left).sum(-1)
    return np.degrees(np.arctan2(sine, (thigh * shin).sum(-1)))


def jump_flights(clip: Clip, fps: float = HUMANML3D.fps) -> list[tuple[float, float]]:
    """(clearance in metres, flight time in seconds) of every flight of the clip's jumps. The clearance is the
    highest the lower foot gets over the floor (heel or toe, whichever is lower); the flight time runs from the last
    frame on the floor to the first one back on it."""
    flying = ~clip.stance_2T.any(0)
    above_floor_T = np.minimum(
        clip.joints[:, ANKLE, 1] - np.array(ANKLE_HEIGHT), clip.joints[:, TOE, 1] - TOE_HEIGHT
    ).min(-1)
    flights = []
    for action in clip.actions:
        if action.name != "jump":
            continue
        frames = np.flatnonzero(flying[action.start : action.end + 1]) + action.start
        for phase in np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1):
            if len(phase):
                flights.append((float(above_floor_T[phase].max()), (len(phase) + 1) / fps))
    return flights


def joint_step_by_action(clip: Clip) -> dict[str, float]:
    """The farthest any joint moves in one frame during each action of the clip (metres), by action name."""
    step_T = np.linalg.norm(np.diff(clip.joints, axis=0), axis=-1).max(-1)
    steps: dict[str, float] = {}
    for action in clip.actions:
        steps[action.name] = max(steps.get(action.name, 0.0), float(step_T[action.start : action.end].max()))
    return steps


def failed_checks(clip: Clip, fps: float = HUMANML3D.fps) -> list[str]:
    """What makes the clip implausible, one sentence per broken limit (empty when it passes)."""
    failures = []
    for clearance, flight in jump_flights(clip, fps):
        if clearance < MIN_JUMP_CLEARANCE_M:
            failures.append(f"a jump clears the floor by {clearance:.3f} m (at least {MIN_JUMP_CLEARANCE_M} m)")
        if flight < MIN_JUMP_FLIGHT_S - 1e-9:
            failures.append(f"a jump is {flight:.2f} s in the air (at least {MIN_JUMP_FLIGHT_S} s)")
    step = float(np.linalg.norm(np.diff(clip.joints, axis=0), axis=-1).max())
    if step > MAX_JOINT_STEP_M:
        failures.append(f"a joint moves {step:.3f} m in one frame (at most {MAX_JOINT_STEP_M} m)")
    return failures


def clip_figures(clip: Clip, fps: float = HUMANML3D.fps) -> dict[str, float]:
    """The plausibility figures of one clip (metres, m/s, m/s^2, degrees)."""
    joints = clip.joints
    lengths = np.linalg.norm(joints[:, 1:] - joints[:, _PARENTS[1:]], axis=-1)
    figures = {"bone_length_error_m": float(np.abs(lengths - HUMANML3D_BONE_LENGTHS[1:]).max())}

    height_error, slide = 0.0, 0.0
    for side in (0, 1):
        planted = clip.stance_2T[side]
        height_error = max(
            height_error,
            np.abs(joints[planted, TOE[side], 1] - TOE_HEIGHT).max(initial=0.0),
            np.abs(joints[planted, ANKLE[side], 1] - ANKLE_HEIGHT[side]).max(initial=0.0),
        )
        still = planted[1:] & planted[:-1]
        for joint in (ANKLE[side], TOE[side]):
            slide = max(slide, np.linalg.norm(np.diff(joints[:, joint], axis=0)[still], axis=-1).max(initial=0.0))
    figures["planted_foot_height_error_m"] = float(height_error)
    figures["planted_foot_slide_m_per_frame"] = float(slide)

    flying = ~clip.stance_2T.any(0)
    allowed = np.zeros(len(flying), dtype=bool)
    for action in clip.actions:
        if action.name in ("jump", "run"):
            allowed[action.start : action.end + 1] = True
    figures["flight_frames_outside_jumps_and_runs"] = int((flying & ~allowed).sum())
    figures["lowest_joint_above_floor_m"] = float(joints[..., 1].min() - TOE_HEIGHT)

    flights = jump_flights(clip, fps)
    if flights:
        figures["min_jump_clearance_m"] = min(clearance for clearance, _ in flights)
        figures["min_jump_flight_s"] = min(flight for _, flight in flights)
    figures["max_joint_step_m"] = float(np.linalg.norm(np.diff(joints, axis=0), axis=-1).max())
    figures["max_joint_speed_m_s"] = float(np.linalg.norm(np.diff(joints, axis=0), axis=-1).max() * fps)
    figures["max_joint_acceleration_m_s2"] = float(np.linalg.norm(np.diff(joints, 2, axis=0), axis=-1).max() * fps**2)

    knee, elbow, hip, knee_bend = [], [], [], []
    for side in (0, 1):
        thigh = joints[:, KNEE[side]] - joints[:, HIP[side]]
        shin = joints[:, ANKLE[side]] - joints[:, KNEE[side]]
        knee.append(_angle_degrees(thigh, shin).max())
        knee_bend.append(signed_knee_flexion(joints, side).min())
        hip.append(_angle_degrees(thigh, np.array([0.0, -1.0, 0.0])).max())
        upper = joints[:, ELBOW[side]] - joints[:, SHOULDER[side]]
        elbow.append(_angle_degrees(upper, joints[:, WRIST[side]] - joints[:, ELBOW[side]]).max())
    figures["max_knee_flexion_deg"] = float(max(knee))
    figures["min_signed_knee_flexion_deg"] = float(min(knee_bend))
    figures["max_elbow_flexion_deg"] = float(max(elbow))
    figures["max_hip_flexion_deg"] = float(max(hip))
    figures["max_trunk_lean_deg"] = float(
        _angle_degrees(joints[:, SPINE3] - joints[:, PELVIS], np.array([0.0, 1.0, 0.0])).max()
    )
    return figures


def summary(num_clips: int, seed: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Worst value of each figure over `num_clips` clips, and per action the spread between clips of its
    duration per repetition (s), for travelling actions its distance per step or stride (m), and the farthest any
    joint moves in one frame (m, the worst clip)."""
    worst: dict[str, float] = {"clips_failing_a_check": 0}
    per_action: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for index in range(num_clips):
        clip = generate_clip(np.random.default_rng([seed, index]))
        worst["clips_failing_a_check"] += bool(failed_checks(clip))
        for name, value in clip_figures(clip).items():
            pick = min if name in _WORST_IS_LOWEST else max
            worst[name] = pick(worst.get(name, value), value)
        for name, step in joint_step_by_action(clip).items():
            per_action[name]["max_joint_step_m"].append(step)
        for action in clip.actions:
            repetitions = action.count or 1
            seconds = (action.end - action.start) / HUMANML3D.fps
            per_action[action.name]["seconds_per_repetition"].append(seconds / repetitions)
            if action.distance and action.name != "run":
                per_action[action.name]["metres_per_repetition"].append(action.distance / repetitions)
    spread = {}
    for name, stats in sorted(per_action.items()):
        steps = stats.pop("max_joint_step_m")
        spread[name] = {
            f"{key} (5%, 50%, 95%)": tuple(round(float(v), 2) for v in np.percentile(values, [5, 50, 95]))
            for key, values in stats.items()
        }
        spread[name]["max_joint_step_m (worst clip)"] = round(max(steps), 3)
    return worst, spread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moscale.synthetic.plausibility",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--num_clips", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    worst, spread = summary(args.num_clips, args.seed)
    print(f"worst value over {args.num_clips} clips (seed {args.seed}):")
    for name, value in worst.items():
        print(f"  {name}: {value:.4g}")
    print("spread between clips, per action:")
    for name, stats in spread.items():
        print(f"  {name}: " + "; ".join(f"{key} {value}" for key, value in stats.items()))


if __name__ == "__main__":
    main()
