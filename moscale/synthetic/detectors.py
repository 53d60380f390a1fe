"""Semantic detectors: what happened in a motion, read from its joints (T, 22, 3) alone.

They know nothing of the generator: they see HumanML3D joint positions (metres, y up) at a frame rate, and
report jumps, squats, waves, kicks, raised arms, steps (walking forward or backward, side steps), runs, turns
and standing still, with counts, sides, directions, distances and the order in which they happened.

Every detector asks for the physical signature of its action, so that a motion without the action does not
count as one: a jump is a flight in which both feet leave and land together; a squat is both legs deeply bent
with both feet planted side by side; a wave is a hand held above its shoulder that swings sideways back and forth;
a step is a foot that leaves the floor and lands past the other foot; a turn is a change of heading of at least
45 degrees made on the spot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from .actions import Action
from .body import (
    ANKLE,
    ELBOW,
    HEAD,
    HIP,
    KNEE,
    L_HIP,
    L_SHOULDER,
    PELVIS,
    R_HIP,
    R_SHOULDER,
    SHOULDER,
    SIDE_NAMES,
    TOE,
    WRIST,
)

# Thresholds, in metres and seconds; each is set from what the action means, with a margin on both sides.
AIRBORNE_RISE = 0.035  # a heel (ankle) or toe this far above its resting height is off the floor
STILL_SPEED = 0.6  # m/s; a foot moving slower than this near the floor is planted
STEP_MIN_TRAVEL = 0.08  # a foot move shorter than this is shuffling, not a step
MIN_LANDING_SECONDS = 0.15  # a foot planted for less than this has touched the floor, not landed
STEP_PASS_MARGIN = 0.10  # a step lands at least this far past the other foot (closing a stance does not)
SQUAT_ENTER, SQUAT_EXIT = 0.70, 0.82  # hip-to-ankle height over leg length, both legs
SQUAT_MAX_FEET_SPLIT = 0.30  # feet side by side, unlike a lunge
WAVE_BELOW_SHOULDER = 0.10  # a waving hand is at least about as high as its shoulder, at most this much lower
WAVE_FOREARM_UP = 0.05  # wrist above elbow
WAVE_SWING_DEGREES = 15.0  # sideways sweep of the forearm about the elbow, turning point to turning point
KICK_RISE, KICK_REACH = 0.25, 0.40  # ankle rise and forward reach in front of the pelvis
KICK_MAX_PELVIS_SPEED = 1.0  # m/s; a kick is made from a standing leg, not in a running stride
TURN_MIN_DEGREES = 45.0
TURN_MAX_TRAVEL = 0.5  # a turn on the spot; turning while walking a curve is not a turn action
RUN_SPEED = 2.0  # m/s, peak pelvis speed; brisk walking stays under it
RUN_MIN_DISTANCE = 1.0
STAND_SECONDS, STAND_SPEED = 1.2, 0.1
BOUT_GAP_SECONDS = 1.0


@dataclass
class DetectedAction(Action):
    """One detected action: the fields of `Action`, plus the measured turn in degrees."""

    degrees: float | None = None

    def key(self) -> tuple:
        """What must match the ground truth: name, direction, side, count and (for turns) the angle."""
        return (self.name, self.direction, self.side, self.count, self.angle)


@dataclass
class Detection:
    """Everything the detectors found in one motion."""

    actions: list[DetectedAction]
    turn_degrees: float
    travel_forward: float
    travel_left: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def travel_distance(self) -> float:
        return float(np.hypot(self.travel_forward, self.travel_left))

    @property
    def turn_direction(self) -> str | None:
        if abs(self.turn_degrees) < TURN_MIN_DEGREES:
            return None
        return "left" if self.turn_degrees > 0 else "right"

    @property
    def order(self) -> list[str]:
        return [action.name for action in self.actions]

    def to_dict(self) -> dict:
        return {
            "actions": [action.to_dict() for action in self.actions],
            "order": self.order,
            "counts": self.counts,
            "turn_degrees": round(self.turn_degrees, 1),
            "turn_direction": self.turn_direction,
            "travel_forward": round(self.travel_forward, 3),
            "travel_left": round(self.travel_left, 3),
            "travel_distance": round(self.travel_distance, 3),
        }


# -- signals ----------------------------------------------------------------------------------------------------


def _intervals(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end] (inclusive) of every run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def _heading(joints: np.ndarray) -> np.ndarray:
    """Unwrapped, lightly smoothed heading (radians, positive = turned left from +Z) from hips and shoulders."""
    across = (joints[:, R_HIP] - joints[:, L_HIP]) + (joints[:, R_SHOULDER] - joints[:, L_SHOULDER])
    # forward = up x across
    forward_x, forward_z = across[:, 2], -across[:, 0]
    return gaussian_filter1d(np.unwrap(np.arctan2(forward_x, forward_z)), 1.5, mode="nearest")


def _to_body(vectors_T2: np.ndarray, heading_T: np.ndarray) -> np.ndarray:
    """World xz vectors -> (lateral left, forward) in the frame of the given headings."""
    c, s = np.cos(heading_T), np.sin(heading_T)
    x, z = vectors_T2[..., 0], vectors_T2[..., 1]
    return np.stack([c * x - s * z, s * x + c * z], -1)


class _Motion:
    """Joints plus the derived per-frame signals every detector uses."""

    def __init__(self, joints: np.ndarray, fps: float):
        joints = np.asarray(joints, dtype=np.float64)
        if joints.ndim != 3 or joints.shape[1:] != (22, 3):
            raise ValueError(f"Expected HumanML3D joints of shape (T, 22, 3), got {tuple(joints.shape)}.")
        if len(joints) < 2 or not np.isfinite(joints).all():
            raise ValueError("Joints need at least 2 frames and finite values.")
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive frame rate (20 for HumanML3D joints), got {fps}.")
        self.fps = fps
        self.joints = joints.copy()
        self.joints[..., 1] -= self.joints[:, [ANKLE[0], ANKLE[1], TOE[0], TOE[1]], 1].min()
        self.num_frames = len(joints)
        self.heading = _heading(self.joints)
        self.pelvis_xz = self.joints[:, PELVIS][:, [0, 2]]
        self.leg_length = np.array(
            [
                np.linalg.norm(self.joints[:, KNEE[s]] - self.joints[:, HIP[s]], axis=-1).mean()
                + np.linalg.norm(self.joints[:, ANKLE[s]] - self.joints[:, KNEE[s]], axis=-1).mean()
                for s in (0, 1)
            ]
        )
        ankle_height = self.joints[:, list(ANKLE), 1].T
        toe_height = self.joints[:, list(TOE), 1].T
        self.rise_2T = ankle_height - np.percentile(ankle_height, 5, axis=1)[:, None]
        toe_rise_2T = toe_height - np.percentile(toe_height, 5, axis=1)[:, None]
        foot_speed = np.stack(
            [np.linalg.norm(np.gradient(self.joints[:, ANKLE[s]][:, [0, 2]], axis=0), axis=-1) * fps for s in (0, 1)]
        )
        # Off the floor means heel and toe both up: a raised heel alone (standing on the toes) is not a flight.
        self.airborne_2T = (self.rise_2T > AIRBORNE_RISE) & (toe_rise_2T > AIRBORNE_RISE)
        self.planted_2T = ~self.airborne_2T & (foot_speed < STILL_SPEED)

    def feet_middle(self, frame: int) -> np.ndarray:
        """Middle (x, z) of the two ankles."""
        return self.joints[frame, list(ANKLE)][:, [0, 2]].mean(0)

    def seconds(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.fps)))


# -- detectors --------------------------------------------------------------------------------------------------


def _flights(motion: _Motion) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Flight phases split into jumps (both feet leave and land together) and running strides."""
    jumps, strides = [], []
    both = motion.airborne_2T.all(0)
    together = 3
    for start, end in _intervals(both):
        takeoffs, landings = [], []
        for side in (0, 1):
            air = motion.airborne_2T[side]
            takeoff = start
            while takeoff > 0 and air[takeoff - 1]:
                takeoff -= 1
            landing = end
            while landing + 1 < motion.num_frames and air[landing + 1]:
                landing += 1
            takeoffs.append(takeoff)
            landings.append(landing)
        if abs(takeoffs[0] - takeoffs[1]) <= together and abs(landings[0] - landings[1]) <= together:
            jumps.append((min(takeoffs), max(landings)))
        else:
            strides.append((start, end))
    return jumps, strides


def _group(intervals: list[tuple[int, int]], gap: int) -> list[list[tuple[int, int]]]:
    groups: list[list[tuple[int, int]]] = []
    for interval in sorted(intervals):
        if groups and interval[0] - groups[-1][-1][1] <= gap:
            groups[-1].append(interval)
        else:
            groups.append([interval])
    return groups


def _jump_actions(motion: _Motion, jumps) -> list[DetectedAction]:
    actions = []
    for group in _group(jumps, motion.seconds(BOUT_GAP_SECONDS)):
        forward = 0.0
        for takeoff, landing in group:
            # From the last frame standing on both feet before the jump to the first one after it.
            before, after = takeoff, landing
            while before > 0 and not motion.planted_2T[:, before].all():
                before -= 1
            while after + 1 < motion.num_frames and not motion.planted_2T[:, after].all():
                after += 1
            delta = motion.feet_middle(after) - motion.feet_middle(before)
            forward += _to_body(delta, motion.heading[before])[1]
        per_jump = forward / len(group)
        actions.append(
            DetectedAction(
                "jump",
                direction="forward" if per_jump > 0.12 else "in_place",
                count=len(group),
                start=group[0][0],
                end=group[-1][1],
                distance=round(max(forward, 0.0), 3),
            )
        )
    return actions


def _run_actions(motion: _Motion, strides) -> list[DetectedAction]:
    """Runs: at least two flights with alternating feet, reaching running speed, covering some distance."""
    speed = np.linalg.norm(np.gradient(gaussian_filter1d(motion.pelvis_xz, 2.0, axis=0), axis=0), axis=-1) * motion.fps
    moving = speed > 0.5
    actions = []
    for group in _group(strides, motion.seconds(BOUT_GAP_SECONDS)):
        if len(group) < 2:
            continue
        # The run spans the whole bout of motion around its flights.
        start, end = group[0][0], group[-1][1]
        while start > 0 and moving[start - 1]:
            start -= 1
        while end + 1 < motion.num_frames and moving[end + 1]:
            end += 1
        delta = _to_body(motion.pelvis_xz[end] - motion.pelvis_xz[start], motion.heading[start])
        if speed[start : end + 1].max() < RUN_SPEED or np.hypot(*delta) < RUN_MIN_DISTANCE:
            continue
        lateral, forward = delta
        if abs(forward) >= abs(lateral):
            direction = "forward" if forward > 0 else "backward"
        else:
            direction = "left" if lateral > 0 else "right"
        actions.append(
            DetectedAction("run", direction=direction, start=start, end=end, distance=round(float(np.hypot(*delta)), 3))
        )
    return actions


def _squat_actions(motion: _Motion, flights) -> list[DetectedAction]:
    compression = np.stack(
        [(motion.joints[:, HIP[s], 1] - motion.joints[:, ANKLE[s], 1]) / motion.leg_length[s] for s in (0, 1)]
    ).max(0)
    split = np.abs(
        _to_body(motion.joints[:, ANKLE[0]][:, [0, 2]] - motion.joints[:, ANKLE[1]][:, [0, 2]], motion.heading)[:, 1]
    )
    near_flight = np.zeros(motion.num_frames, dtype=bool)
    for start, end in flights:
        near_flight[max(0, start - motion.seconds(0.5)) : end + motion.seconds(0.5) + 1] = True
    squats, inside, start = [], False, 0
    for t in range(motion.num_frames):
        grounded = motion.planted_2T[:, t].all() and split[t] < SQUAT_MAX_FEET_SPLIT and not near_flight[t]
        if not inside and compression[t] < SQUAT_ENTER and grounded:
            inside, start = True, t
        elif inside and (compression[t] > SQUAT_EXIT or t == motion.num_frames - 1):
            inside = False
            squats.append((start, t))
    return [
        DetectedAction("squat", count=len(group), start=group[0][0], end=group[-1][1])
        for group in _group(squats, motion.seconds(BOUT_GAP_SECONDS))
    ]


def _hand_actions(motion: _Motion) -> list[DetectedAction]:
    """Waves (one hand up, its forearm sweeping from side to side) and raising both arms above the head."""
    joints = motion.joints
    above_head = [(joints[:, WRIST[s], 1] > joints[:, HEAD, 1]) for s in (0, 1)]
    actions = []
    both_up = above_head[0] & above_head[1]
    for start, end in _intervals(both_up):
        if end - start + 1 >= motion.seconds(0.3):
            actions.append(DetectedAction("raise_arms", start=start, end=end))
    # A waving hand is about as high as its shoulder or higher, with its forearm up; the forearm then sweeps from
    # side to side about the elbow, which shows as its tilt in the body's frontal plane.
    raised = [
        (joints[:, WRIST[s], 1] > joints[:, SHOULDER[s], 1] - WAVE_BELOW_SHOULDER)
        & (joints[:, WRIST[s], 1] > joints[:, ELBOW[s], 1] + WAVE_FOREARM_UP)
        for s in (0, 1)
    ]
    for side in (0, 1):
        for start, end in _intervals(raised[side] & ~raised[1 - side]):
            if end - start + 1 < motion.seconds(0.4):
                continue
            frames = np.arange(start, end + 1)
            forearm = joints[frames, WRIST[side]] - joints[frames, ELBOW[side]]
            lateral = _to_body(forearm[:, [0, 2]], motion.heading[frames])[:, 0]
            tilt = np.degrees(np.unwrap(np.arctan2(lateral, forearm[:, 1])))
            cycles = _count_cycles(tilt, WAVE_SWING_DEGREES)
            if cycles >= 1:
                actions.append(DetectedAction("wave", side=SIDE_NAMES[side], count=cycles, start=start, end=end))
    return actions


def _count_cycles(signal: np.ndarray, prominence: float) -> int:
    """Back-and-forth cycles of a swinging signal: the fewer of its prominent maxima and minima.

    Raising or lowering the hand leans the forearm to one side, which can add one turning point on one side
    (a hump where the hand passes back through the centre), never one on each side.
    """
    maxima, _ = find_peaks(signal, prominence=prominence)
    minima, _ = find_peaks(-signal, prominence=prominence)
    return min(len(maxima), len(minima))


def _kick_actions(motion: _Motion) -> list[DetectedAction]:
    speed = np.linalg.norm(np.gradient(motion.pelvis_xz, axis=0), axis=-1) * motion.fps
    actions = []
    for side in (0, 1):
        reach = _to_body(motion.joints[:, ANKLE[side]][:, [0, 2]] - motion.pelvis_xz, motion.heading)[:, 1]
        kicking = (motion.rise_2T[side] > KICK_RISE) & (reach > KICK_REACH) & motion.planted_2T[1 - side]
        kicking &= speed < KICK_MAX_PELVIS_SPEED
        for group in _group(_intervals(kicking), motion.seconds(BOUT_GAP_SECONDS)):
            actions.append(
                DetectedAction("kick", side=SIDE_NAMES[side], count=len(group), start=group[0][0], end=group[-1][1])
            )
    return actions


def _turn_actions(motion: _Motion) -> list[DetectedAction]:
    rate = np.abs(np.gradient(motion.heading)) * motion.fps
    actions = []
    for group in _group(_intervals(rate > np.radians(20.0)), motion.seconds(0.5)):
        start, end = group[0][0], group[-1][1]
        before, after = max(0, start - 2), min(motion.num_frames - 1, end + 2)
        degrees = float(np.degrees(motion.heading[after] - motion.heading[before]))
        travel = float(np.linalg.norm(motion.pelvis_xz[after] - motion.pelvis_xz[before]))
        if abs(degrees) < TURN_MIN_DEGREES or travel > TURN_MAX_TRAVEL:
            continue
        actions.append(
            DetectedAction(
                "turn",
                direction="left" if degrees > 0 else "right",
                angle=90 if abs(degrees) < 135 else 180,
                start=start,
                end=end,
                degrees=round(degrees, 1),
            )
        )
    return actions


def _foot_moves(motion: _Motion) -> list[tuple[int, int, int]]:
    """(side, lift-off frame, landing frame) of every foot that leaves the floor and lands elsewhere."""
    moves = []
    for side in (0, 1):
        # A foot lands when it stays planted a while: a touch of a frame or two (the wind-up of a kick, a foot
        # brushing the floor) does not end its move.
        moving = ~motion.planted_2T[side]
        for start, end in _intervals(motion.planted_2T[side]):
            if end - start + 1 < motion.seconds(MIN_LANDING_SECONDS) and 0 < start and end < motion.num_frames - 1:
                moving[start : end + 1] = True
        for start, end in _intervals(moving):
            lift, land = max(0, start - 1), min(motion.num_frames - 1, end + 1)
            travel = np.linalg.norm(motion.joints[land, ANKLE[side]][[0, 2]] - motion.joints[lift, ANKLE[side]][[0, 2]])
            if travel >= STEP_MIN_TRAVEL:
                moves.append((side, lift, land))
    return sorted(moves, key=lambda move: move[1])


def _step_actions(motion: _Motion, busy: np.ndarray) -> list[DetectedAction]:
    """Walking forward/backward and side steps, from foot moves outside other actions."""
    actions: list[DetectedAction] = []
    # Frame at which each bout's feet are last put down: its last step, or the closing move that follows it.
    settled: list[int] = []
    gap = motion.seconds(BOUT_GAP_SECONDS)
    for side, lift, land in _foot_moves(motion):
        if busy[lift : land + 1].any():
            continue
        travel = motion.joints[land, ANKLE[side]][[0, 2]] - motion.joints[lift, ANKLE[side]][[0, 2]]
        direction_xz = travel / np.linalg.norm(travel)
        # Where the moved foot lands relative to the other one, minus where it would stand in a neutral stance.
        feet = motion.joints[land, ANKLE[side]][[0, 2]] - motion.joints[land, ANKLE[1 - side]][[0, 2]]
        hips = motion.joints[land, HIP[side]][[0, 2]] - motion.joints[land, HIP[1 - side]][[0, 2]]
        last = actions[-1] if actions else None
        if float((feet - hips) @ direction_xz) <= STEP_PASS_MARGIN:
            if last is not None and lift - settled[-1] <= gap:
                settled[-1] = land  # closing the stance after the bout's steps
            continue
        lateral, forward = _to_body(travel, motion.heading[lift])
        if abs(forward) >= abs(lateral):
            name, direction = "walk", "forward" if forward > 0 else "backward"
        else:
            name, direction = "side_step", "left" if lateral > 0 else "right"
        if last and (last.name, last.direction) == (name, direction) and lift - last.end <= gap:
            last.count += 1
            last.end = settled[-1] = land
        else:
            actions.append(DetectedAction(name, direction=direction, count=1, start=lift, end=land))
            settled.append(land)
    for action, end in zip(actions, settled):
        # How far the feet moved from standing before the first step to standing after the last move.
        delta = _to_body(motion.feet_middle(end) - motion.feet_middle(action.start), motion.heading[action.start])
        action.distance = round(float(np.hypot(*delta)), 3)
    return actions


def _stand_actions(motion: _Motion, busy: np.ndarray) -> list[DetectedAction]:
    # Smoothed first, so that measurement jitter of a few millimetres does not read as motion.
    smooth = gaussian_filter1d(motion.joints, 2.0, axis=0, mode="nearest")
    speed = np.linalg.norm(np.diff(smooth, axis=0), axis=-1).max(-1) * motion.fps
    still = np.concatenate([speed < STAND_SPEED, [speed[-1] < STAND_SPEED]]) & ~busy
    return [
        DetectedAction("stand", start=start, end=end)
        for start, end in _intervals(still)
        if end - start + 1 >= motion.seconds(STAND_SECONDS)
    ]


def _merge_repeats(actions: list[DetectedAction], gap: int) -> list[DetectedAction]:
    """Join neighbouring detections of the same action (e.g. slow squats far apart) into one counted action."""
    merged: list[DetectedAction] = []
    for action in actions:
        last = merged[-1] if merged else None
        same = last is not None and (last.name, last.direction, last.side) == (
            action.name,
            action.direction,
            action.side,
        )
        if same and action.name != "turn" and action.start - last.end <= gap:
            last.end = max(last.end, action.end)
            if last.count is not None:
                last.count += action.count
            if last.distance is not None:
                last.distance = round(last.distance + action.distance, 3)
        else:
            merged.append(action)
    return merged


def detect(joints, fps: float = 20.0) -> Detection:
    """Detect the actions in a motion of HumanML3D joints (T, 22, 3), metres, y up, at `fps` frames per second."""
    motion = _Motion(joints, fps)
    jumps, strides = _flights(motion)
    actions = _jump_actions(motion, jumps) + _run_actions(motion, strides)
    actions += _squat_actions(motion, jumps + strides) + _hand_actions(motion) + _kick_actions(motion)
    actions += _turn_actions(motion)
    busy = np.zeros(motion.num_frames, dtype=bool)
    for action in actions:
        busy[action.start : action.end + 1] = True
    steps = _step_actions(motion, busy)
    for action in steps:
        busy[action.start : action.end + 1] = True
    actions += steps + _stand_actions(motion, busy)
    actions = _merge_repeats(sorted(actions, key=lambda action: action.start), motion.seconds(2.5))

    net = _to_body(motion.pelvis_xz[-1] - motion.pelvis_xz[0], motion.heading[0])
    counts = {
        "jumps": sum(a.count for a in actions if a.name == "jump"),
        "squats": sum(a.count for a in actions if a.name == "squat"),
        "waves_left": sum(a.count for a in actions if a.name == "wave" and a.side == "left"),
        "waves_right": sum(a.count for a in actions if a.name == "wave" and a.side == "right"),
        "kicks": sum(a.count for a in actions if a.name == "kick"),
        "steps": sum(a.count for a in actions if a.name in ("walk", "side_step")),
    }
    return Detection(
        actions, float(np.degrees(motion.heading[-1] - motion.heading[0])), float(net[1]), float(net[0]), counts
    )
