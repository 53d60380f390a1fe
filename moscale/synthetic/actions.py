"""The action vocabulary and how each action moves the body.

Every action is played onto a `Timeline` from the neutral standing pose back to the neutral standing pose, with
its timing and amplitudes drawn from the clip's random generator and the performer's `Style`. Playing an action
fills in its ground truth: the frames it spans and, for travelling actions, the distance covered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .body import HIP, LEFT, LEG_REACH, RIGHT, SIDE_SIGN, rest_offset, standing_pelvis_height
from .timeline import FPS, GRAVITY, Timeline, keyframes, move_frames, to_world

# name -> (allowed directions, allowed sides, count range or None, allowed turn angles)
VOCABULARY: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, int] | None, tuple[int, ...]]] = {
    "walk": (("forward", "backward"), (), (1, 5), ()),
    "run": (("forward",), (), None, ()),
    "side_step": (("left", "right"), (), (1, 5), ()),
    "jump": (("in_place", "forward"), (), (1, 5), ()),
    "turn": (("left", "right"), (), None, (90, 180)),
    "wave": ((), ("left", "right"), (1, 5), ()),
    "squat": ((), (), (1, 5), ()),
    "kick": ((), ("left", "right"), (1, 3), ()),
    "raise_arms": ((), (), None, ()),
    "stand": ((), (), None, ()),
}


@dataclass
class Action:
    """One action of a clip: what was asked (name, direction, side, count, angle) and where it happened."""

    name: str
    direction: str | None = None
    side: str | None = None
    count: int | None = None
    angle: int | None = None
    start: int = 0
    end: int = 0
    distance: float | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def sample(cls, rng: np.random.Generator, name: str) -> Action:
        directions, sides, counts, angles = VOCABULARY[name]
        return cls(
            name=name,
            direction=str(rng.choice(directions)) if directions else None,
            side=str(rng.choice(sides)) if sides else None,
            count=int(rng.integers(counts[0], counts[1] + 1)) if counts else None,
            angle=int(rng.choice(angles)) if angles else None,
        )


def play(action: Action, timeline: Timeline, rng: np.random.Generator) -> None:
    """Play `action` from `timeline.frame` on, advance the timeline past it and record its frames."""
    action.start = timeline.frame
    _PLAYERS[action.name](action, timeline, rng)
    action.end = timeline.frame


# -- travelling -------------------------------------------------------------------------------------------------


def _stepping(
    tl: Timeline, footprints: list[tuple[int, float, float]], swing: list[int], gap: list[int], lift: float
) -> int:
    """Move feet to body-frame footprints (side, lateral, forward) around the current centre, one after another
    with `swing[i]` frames in the air (more for a long move, see `move_frames`); move i+1 starts `gap[i]` frames
    after move i lands (negative: before it lands, which gives a flight phase). Returns the frame at which the last
    foot lands."""
    start = tl.frame
    landing = start
    for i, (side, lateral, forward) in enumerate(footprints):
        xz = tl.center + to_world([lateral, forward], tl.heading)
        target = np.array([xz[0], tl.foot_pos[side, 1], xz[1]])
        duration = move_frames(float(np.linalg.norm(target - tl.foot_pos[side])), swing[i])
        tl.move_foot(side, start, duration, target, tl.neutral_foot_yaw(side), lift=lift)
        landing = start + duration
        if i + 1 < len(footprints):
            start = landing + gap[i]
    return landing


def _walk(action: Action, tl: Timeline, rng) -> None:
    forward = action.direction == "forward"
    sign = 1.0 if forward else -1.0
    step = rng.uniform(0.45, 0.68) if forward else rng.uniform(0.28, 0.42)
    step *= tl.style.step_scale
    first = int(rng.integers(2))
    lateral = [SIDE_SIGN[s] * tl.style.stance_width / 2 for s in (LEFT, RIGHT)]
    # Step i moves a foot one step past the other; a last move brings the trailing foot alongside.
    footprints = [((first + i) % 2, lateral[(first + i) % 2], sign * step * (i + 1)) for i in range(action.count)]
    closing = (first + action.count) % 2
    footprints.append((closing, lateral[closing], sign * step * action.count))
    swing = [tl.frames(rng.uniform(0.38, 0.48) if forward else rng.uniform(0.45, 0.55)) for _ in footprints]
    gap = [tl.frames(rng.uniform(0.06, 0.14)) for _ in footprints]
    landing = _stepping(tl, footprints, swing, gap, lift=tl.style.lift)
    action.distance = round(step * action.count, 4)
    tl.center = tl.center + to_world([0.0, sign * step * action.count], tl.heading)
    tl.frame = landing + tl.frames(0.15)


def _side_step(action: Action, tl: Timeline, rng) -> None:
    lead = LEFT if action.direction == "left" else RIGHT
    trail = 1 - lead
    sign = SIDE_SIGN[lead]
    step = rng.uniform(0.22, 0.38) * tl.style.step_scale
    half_width = tl.style.stance_width / 2
    footprints = []
    for i in range(action.count):
        footprints.append((lead, SIDE_SIGN[lead] * half_width + sign * step * (i + 1), 0.0))
        footprints.append((trail, SIDE_SIGN[trail] * half_width + sign * step * (i + 1), 0.0))
    swing = [tl.frames(rng.uniform(0.32, 0.42)) for _ in footprints]
    gap = [tl.frames(rng.uniform(0.06, 0.16)) for _ in footprints]
    landing = _stepping(tl, footprints, swing, gap, lift=0.6 * tl.style.lift)
    action.distance = round(step * action.count, 4)
    tl.center = tl.center + to_world([sign * step * action.count, 0.0], tl.heading)
    tl.frame = landing + tl.frames(0.15)


def _run(action: Action, tl: Timeline, rng) -> None:
    strides = int(rng.integers(5, 9))
    cruise = rng.uniform(1.0, 1.3) * tl.style.step_scale
    # Footprint spacing: speed up over two steps, cruise, slow down over one.
    spacing = [0.5 * cruise, 0.8 * cruise] + [cruise] * (strides - 3) + [0.55 * cruise]
    first = int(rng.integers(2))
    lateral = [SIDE_SIGN[s] * 0.6 * tl.style.stance_width / 2 for s in (LEFT, RIGHT)]
    ahead = np.cumsum(spacing)
    footprints = [((first + i) % 2, lateral[(first + i) % 2], float(ahead[i])) for i in range(strides)]
    closing = (first + strides) % 2
    footprints.append((closing, SIDE_SIGN[closing] * tl.style.stance_width / 2, float(ahead[-1])))
    period = int(round(rng.uniform(7.0, 8.0)))
    flight = int(rng.integers(2, 4))
    # Cruising strides leave the ground before the other foot lands (negative gap): a flight phase. The feet
    # share the ground only at the start and in the last, short steps, where they are close enough together.
    swing = [period] + [period + flight + 1] * (strides - 2) + [period + 1, period + 2]
    gap = [1, 0] + [-(flight + 1)] * (strides - 3) + [-1, 1]
    start = tl.frame
    landing = _stepping(tl, footprints, swing, gap, lift=rng.uniform(0.14, 0.24))
    span = landing - start
    lean = rng.uniform(0.1, 0.22) * tl.style.lean
    tl.add(tl.lean_N, start, keyframes([0, 4, span - 4, span + 4], [0.0, lean, lean, 0.0]))
    tl.add(tl.dy_N, start, keyframes([0, 4, span - 4, span + 4], [0.0, -0.04, -0.04, 0.0]))
    # Running arms: elbows bent; the swing itself comes from the legs.
    elbow = keyframes([0, 4, span - 4, span + 4], [tl.style.elbow_rest, 1.4, 1.4, tl.style.elbow_rest])
    tl.elbow_2N[:, start : start + len(elbow)] = elbow
    action.distance = round(float(ahead[-1]), 4)
    tl.center = tl.center + to_world([0.0, float(ahead[-1])], tl.heading)
    tl.frame = landing + tl.frames(0.2)


def _turn(action: Action, tl: Timeline, rng) -> None:
    sign = 1.0 if action.direction == "left" else -1.0
    lead = LEFT if action.direction == "left" else RIGHT
    moves = int(rng.integers(2, 4)) if action.angle == 90 else int(rng.integers(4, 6))
    start_heading = tl.heading
    t = tl.frame
    lift = 0.6 * tl.style.lift
    for i in range(moves):
        side = lead if i % 2 == 0 else 1 - lead
        fraction = min(1.0, (i + 1) / (moves - 1))
        heading = start_heading + sign * np.radians(action.angle) * fraction
        duration = tl.frames(rng.uniform(0.32, 0.42))
        tl.move_foot(
            side, t, duration, tl.neutral_foot(side, heading=heading), tl.neutral_foot_yaw(side, heading), lift=lift
        )
        t += duration + tl.frames(rng.uniform(0.03, 0.1))
    # Both feet now stand neutrally at the new heading; make it the body's heading for the next action.
    tl.heading = start_heading + sign * np.radians(action.angle)
    tl.frame = t + tl.frames(0.15)


# -- in place ---------------------------------------------------------------------------------------------------


def _jump(action: Action, tl: Timeline, rng) -> None:
    forward = action.direction == "forward"
    crouch = rng.uniform(0.08, 0.15)
    extension = 0.006 * min(LEG_REACH)
    t = tl.frame
    down = tl.frames(rng.uniform(0.3, 0.45))
    dy = list(keyframes([0, down], [0.0, -crouch]))
    arms = list(keyframes([0, down], [0.0, -0.5]))
    distance = 0.0
    for _ in range(action.count):
        push = 3
        # 0.3 to 0.45 s in the air: the feet clear the floor by 9 to 23 cm at the top, as real jumps in place do.
        flight = int(rng.integers(6, 10))
        duration = flight / FPS
        height = GRAVITY * duration**2 / 8
        absorb = tl.frames(rng.uniform(0.22, 0.32))
        landing_crouch = rng.uniform(0.06, 0.12)
        leap = rng.uniform(0.3, 0.6) * tl.style.step_scale if forward else 0.0
        takeoff = t + len(dy) - 1 + push
        s = np.linspace(0.0, 1.0, flight + 1)
        dy += list(keyframes([0, push], [dy[-1], extension])[1:])
        dy += list(extension + 4 * height * s[1:] * (1 - s[1:]))
        dy += list(keyframes([0, absorb], [extension, -landing_crouch])[1:])
        arms += list(keyframes([0, push + flight // 2, push + flight + absorb], [arms[-1], 0.8, -0.2])[1:])
        leap_x, leap_z = to_world([0.0, leap], tl.heading)
        for side in (LEFT, RIGHT):
            target = tl.foot_pos[side] + np.array([leap_x, 0.0, leap_z])
            tl.move_foot(side, takeoff, flight, target, lift=height, pitch_peak=0.15, ballistic=True)
        distance += leap
    rise = tl.frames(rng.uniform(0.3, 0.45))
    dy += list(keyframes([0, rise], [dy[-1], 0.0])[1:])
    arms += list(keyframes([0, rise], [arms[-1], 0.0])[1:])
    tl.add(tl.dy_N, t, np.array(dy))
    for side in (LEFT, RIGHT):
        flex = np.array(arms)
        tl.pose_arm(side, t, flex, np.full(len(flex), tl.style.arm_abduct), np.full(len(flex), tl.style.elbow_rest))
    tl.center = tl.center + to_world([0.0, distance], tl.heading)
    action.distance = round(distance, 4)
    tl.frame = t + len(dy) - 1


def _squat(action: Action, tl: Timeline, rng) -> None:
    depth = rng.uniform(0.25, 0.42)
    lean = rng.uniform(0.3, 0.6) * tl.style.lean
    back = rng.uniform(0.04, 0.1)
    arms_forward = rng.uniform(0.3, 1.5)
    keys, values = [0], [0.0]
    for _ in range(action.count):
        down, hold, up = (tl.frames(rng.uniform(low, high)) for low, high in ((0.55, 0.85), (0.0, 0.25), (0.55, 0.85)))
        keys += [keys[-1] + down, keys[-1] + down + hold, keys[-1] + down + hold + up]
        values += [1.0, 1.0, 0.0]
        keys.append(keys[-1] + tl.frames(rng.uniform(0.05, 0.2)))
        values.append(0.0)
    depth_curve = keyframes(keys, values)
    t = tl.frame
    tl.add(tl.dy_N, t, -depth * depth_curve)
    tl.add(tl.lean_N, t, lean * depth_curve)
    tl.shift_N2[t : t + len(depth_curve), 1] -= back * depth_curve
    for side in (LEFT, RIGHT):
        tl.pose_arm(
            side,
            t,
            arms_forward * depth_curve,
            np.full(len(depth_curve), tl.style.arm_abduct),
            tl.style.elbow_rest + 0.3 * depth_curve,
        )
    tl.frame = t + len(depth_curve) - 1


def _kick(action: Action, tl: Timeline, rng) -> None:
    side = LEFT if action.side == "left" else RIGHT
    hip_height = standing_pelvis_height() + rest_offset(HIP[side])[1]
    neutral = tl.neutral_foot(side)
    t = tl.frame
    for _ in range(action.count):
        wind, strike, back = (
            tl.frames(rng.uniform(low, high)) for low, high in ((0.2, 0.3), (0.18, 0.28), (0.35, 0.5))
        )
        behind_xz = neutral[[0, 2]] + to_world([0.0, -rng.uniform(0.12, 0.25)], tl.heading)
        behind = np.array([behind_xz[0], neutral[1] + rng.uniform(0.08, 0.15), behind_xz[1]])
        hip_flexion = rng.uniform(0.9, 1.3)
        reach = 0.93 * LEG_REACH[side]
        kick_xz = neutral[[0, 2]] + to_world([0.0, reach * np.sin(hip_flexion)], tl.heading)
        kick_point = np.array([kick_xz[0], hip_height - reach * np.cos(hip_flexion), kick_xz[1]])
        # However fast the performer, the foot takes long enough not to snap (see `move_frames`).
        wind = move_frames(float(np.linalg.norm(behind - neutral)), wind)
        strike = move_frames(float(np.linalg.norm(kick_point - behind)), strike)
        back = move_frames(float(np.linalg.norm(neutral - kick_point)), back)
        tl.move_foot(side, t, wind, behind, target_pitch=0.3)
        tl.move_foot(side, t + wind, strike, kick_point, target_pitch=0.4)
        tl.move_foot(side, t + wind + strike, back, neutral, target_pitch=0.0)
        span = wind + strike + back
        tl.add(tl.lean_N, t, keyframes([0, wind, wind + strike, span], [0.0, 0.05, -0.15 * tl.style.lean, 0.0]))
        balance = keyframes([0, wind, span], [tl.style.arm_abduct, 0.45, tl.style.arm_abduct])
        for arm in (LEFT, RIGHT):
            tl.pose_arm(arm, t, np.zeros(span + 1), balance, np.full(span + 1, tl.style.elbow_rest))
        t += span + tl.frames(rng.uniform(0.1, 0.2))
    tl.frame = t


# -- arms -------------------------------------------------------------------------------------------------------


def _wave(action: Action, tl: Timeline, rng) -> None:
    side = LEFT if action.side == "left" else RIGHT
    raise_, lower = tl.frames(rng.uniform(0.4, 0.6)), tl.frames(rng.uniform(0.4, 0.6))
    cycle = tl.frames(rng.uniform(0.4, 0.65))
    abduct, flex = rng.uniform(1.6, 2.0), rng.uniform(0.1, 0.5)
    amplitude = rng.uniform(0.4, 0.65)
    waving = cycle * action.count
    keys = [0, raise_, raise_ + waving, raise_ + waving + lower]
    pose = keyframes(keys, [0.0, 1.0, 1.0, 0.0])
    s = np.linspace(0.0, 1.0, waving + 1)
    # Fade the swing in and out over an eighth of a cycle so the hand starts and stops smoothly.
    fade = np.clip(np.minimum(s, 1 - s) * 8 * action.count, 0.0, 1.0)
    swing = np.zeros(len(pose))
    swing[raise_ : raise_ + waving + 1] = amplitude * np.sin(2 * np.pi * action.count * s) * fade
    rest = tl.style
    tl.pose_arm(
        side,
        tl.frame,
        flex * pose,
        rest.arm_abduct + (abduct - rest.arm_abduct) * pose,
        rest.elbow_rest + (np.pi / 2 - rest.elbow_rest) * pose + swing,
        bend_up=pose,
    )
    tl.frame += len(pose) - 1


def _raise_arms(action: Action, tl: Timeline, rng) -> None:
    up, hold, down = (tl.frames(rng.uniform(low, high)) for low, high in ((0.6, 1.0), (0.4, 1.2), (0.6, 1.0)))
    keys = [0, up, up + hold, up + hold + down]
    pose = keyframes(keys, [0.0, 1.0, 1.0, 0.0])
    top_elbow = rng.uniform(0.05, 0.2)
    rest = tl.style
    if rng.random() < 0.5:
        # Raised in front: flexion carries the arm forward and up. Past vertical, a small negative abduction
        # keeps the hands apart (abduction turns an upward arm towards the body's midline otherwise).
        flex = rng.uniform(2.8, 3.0) * pose
        abduct = keyframes(keys, [rest.arm_abduct, -0.15, -0.15, rest.arm_abduct])
    else:
        flex = 0.25 * pose
        abduct = rest.arm_abduct + (rng.uniform(2.6, 2.9) - rest.arm_abduct) * pose
    elbow = rest.elbow_rest + (top_elbow - rest.elbow_rest) * pose
    for side in (LEFT, RIGHT):
        tl.pose_arm(side, tl.frame, flex, abduct, elbow)
    tl.frame += len(pose) - 1


def _stand(action: Action, tl: Timeline, rng) -> None:
    duration = int(round(rng.uniform(1.5, 3.0) * FPS))
    s = np.arange(duration + 1) / FPS
    sway = rng.uniform(0.003, 0.008) * np.sin(2 * np.pi * rng.uniform(0.2, 0.4) * s) * np.sin(np.pi * s / s[-1])
    tl.shift_N2[tl.frame : tl.frame + duration + 1, 0] += sway
    tl.frame += duration


_PLAYERS = {
    "walk": _walk,
    "run": _run,
    "side_step": _side_step,
    "jump": _jump,
    "turn": _turn,
    "wave": _wave,
    "squat": _squat,
    "kick": _kick,
    "raise_arms": _raise_arms,
    "stand": _stand,
}
