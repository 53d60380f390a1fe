"""Whole clips: a random plan of 1 to 3 actions played by a random performer, as joints plus ground truth."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .actions import VOCABULARY, Action, play
from .body import pose_to_joints
from .timeline import Style, Timeline

# A clip has 40 to 196 feature rows, like the HumanML3D clips loaders keep; T rows are made from T + 1 frames.
MIN_ROWS, MAX_ROWS = 40, 196
# Tempo multipliers tried, in order, when a plan played at the performer's own speed is too long or too short.
_TEMPOS = (1.0, 1.25, 1.5, 0.8, 0.65)
_MAX_PAD = 12


@dataclass
class Clip:
    """One generated motion: raw joints (T + 1, 22, 3), the actions with their frames, and the planted feet."""

    joints: np.ndarray
    actions: list[Action]
    stance_2T: np.ndarray
    style: Style
    ik_clamped_frames: int

    @property
    def num_rows(self) -> int:
        """Number of feature rows (and of `new_joints` frames) this clip makes."""
        return len(self.joints) - 1


def sample_plan(rng: np.random.Generator, names: tuple[str, ...] | None = None) -> list[Action]:
    """1 to 3 actions; the same action never follows itself (two groups of jumps would read as one)."""
    names = tuple(VOCABULARY) if names is None else names
    length = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    plan: list[Action] = []
    while len(plan) < length:
        name = str(rng.choice(names))
        if plan and plan[-1].name == name:
            if len(names) == 1:
                break
            continue
        plan.append(Action.sample(rng, name))
    return plan


def _play_plan(plan: list[Action], style: Style, tempo: float, rng: np.random.Generator):
    timeline = Timeline(style, tempo)
    actions = [replace(action) for action in plan]
    for i, action in enumerate(actions):
        if i:
            timeline.frame += int(rng.integers(2, 7))
        play(action, timeline, rng)
    return timeline, actions


def generate_clip(rng: np.random.Generator, plan: list[Action] | None = None) -> Clip:
    """A clip of 40 to 196 rows. A plan that fits at no tempo is replaced by a new one (unless `plan` is given,
    in which case a ValueError says it cannot fit)."""
    while True:
        actions_plan = sample_plan(rng) if plan is None else plan
        style = Style.sample(rng)
        for tempo in _TEMPOS:
            timeline, actions = _play_plan(actions_plan, style, tempo, rng)
            start_pad, end_pad = int(rng.integers(0, 9)), int(rng.integers(0, 9))
            rows = timeline.frame + start_pad + end_pad
            if rows < MIN_ROWS and rows + 2 * _MAX_PAD - start_pad - end_pad >= MIN_ROWS:
                missing = MIN_ROWS - rows
                start_pad += missing // 2
                end_pad += missing - missing // 2
                rows = MIN_ROWS
            if MIN_ROWS <= rows <= MAX_ROWS:
                channels, stance_2T = timeline.channels(rows + 1, start_pad)
                joints = pose_to_joints(channels)
                for action in actions:
                    action.start += start_pad
                    action.end += start_pad
                return Clip(joints, actions, stance_2T, style, channels.ik_clamped_frames)
        if plan is not None:
            raise ValueError(f"The plan {[a.name for a in plan]} does not fit in {MIN_ROWS}..{MAX_ROWS} rows.")
