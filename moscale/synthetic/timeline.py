"""A timeline of pose channels that actions write into, frame by frame, and turn into joints.

Actions are played one after another. Each starts and ends in the neutral standing pose (feet side by side under
the pelvis, arms down), so any two actions join without a jump. Feet are moved explicitly: a foot is planted
(in stance) except while an action moves it, so planted feet never slide. The pelvis follows the feet: its
horizontal position is the weighted middle of the feet (a planted foot weighs more, which shifts the weight onto
the standing leg), its heading is the mean heading of the feet, and its height is capped so that every planted
foot stays within reach of its hip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, minimum_filter1d

from .body import (
    ANKLE_HEIGHT,
    L_HIP,
    LEFT,
    LEG_REACH,
    R_HIP,
    RIGHT,
    SIDE_SIGN,
    PoseChannels,
    rest_offset,
    standing_pelvis_height,
)

FPS = 20
# Room for a plan's actions until one ends past the longest clip (the plan then stops): 202 frames plus the
# longest single action (five slow squats, about 420 frames).
BUFFER_FRAMES = 1024
GRAVITY = 9.81
# A planted leg stretches to at most this fraction of its reach (a knee bent about 8 degrees).
PLANTED_REACH = 0.997
# The farthest an ankle moved by an action goes in one frame (8 m/s). The fastest joint of real HumanML3D clips
# moves 0.5 m per frame (a hand in a tennis swing); this leaves room for the knee and toe, which swing faster than
# the ankle when the leg unfolds or the foot pitches.
MAX_ANKLE_STEP = 0.4


def min_jerk(num: int) -> np.ndarray:
    """num + 1 samples of the minimum-jerk ramp from 0 to 1 (zero velocity and acceleration at both ends)."""
    s = np.linspace(0.0, 1.0, num + 1)
    return s**3 * (10 - 15 * s + 6 * s**2)


# Largest fraction of a minimum-jerk move made in one frame, for moves of n or more frames (index n): sampled
# ramps are not monotonic in n (2 frames move half the way per frame, 3 frames 58 % in the middle one).
_MIN_JERK_PEAK = np.maximum.accumulate([np.diff(min_jerk(n)).max() for n in range(399, 0, -1)])[::-1]
_MIN_JERK_PEAK = np.concatenate([[np.inf], _MIN_JERK_PEAK])


def move_frames(distance: float, frames: int) -> int:
    """`frames`, or more if a minimum-jerk move over `distance` metres in `frames` would move the ankle farther
    than MAX_ANKLE_STEP in one frame."""
    return max(frames, int(np.argmax(_MIN_JERK_PEAK * distance <= MAX_ANKLE_STEP)))


def keyframes(frames: list[int], values: list[float]) -> np.ndarray:
    """A curve through (frame, value) keys, eased with minimum-jerk segments; frames are offsets from 0."""
    curve = np.full(frames[-1] + 1, float(values[-1]))
    for (f0, v0), (f1, v1) in zip(zip(frames[:-1], values[:-1]), zip(frames[1:], values[1:])):
        curve[f0 : f1 + 1] = v0 + (v1 - v0) * min_jerk(f1 - f0)
    return curve


def to_world(local_xz, heading: float) -> np.ndarray:
    """Body-frame (lateral x, forward z) offsets -> world xz offsets for a body with the given heading."""
    local_xz = np.asarray(local_xz, dtype=np.float64)
    c, s = np.cos(heading), np.sin(heading)
    return np.stack([c * local_xz[..., 0] + s * local_xz[..., 1], -s * local_xz[..., 0] + c * local_xz[..., 1]], -1)


@dataclass
class Style:
    """How one performer moves; drawn once per clip so that clips differ in speed, amplitude and posture."""

    speed: float
    stance_width: float
    toe_out: float
    step_scale: float
    lift: float
    arm_swing: float
    arm_abduct: float
    elbow_rest: float
    lean: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        return cls(
            speed=rng.uniform(0.8, 1.25),
            stance_width=rng.uniform(0.16, 0.26),
            toe_out=rng.uniform(0.0, 0.15),
            step_scale=rng.uniform(0.85, 1.15),
            lift=rng.uniform(0.05, 0.11),
            arm_swing=rng.uniform(0.4, 0.9),
            arm_abduct=rng.uniform(0.05, 0.2),
            elbow_rest=rng.uniform(0.1, 0.35),
            lean=rng.uniform(0.7, 1.3),
        )


class Timeline:
    """Pose channels being written by actions; `self.frame` is where the next action starts."""

    def __init__(self, style: Style, tempo: float = 1.0):
        self.style = style
        self.tempo = tempo
        self.frame = 0
        n = BUFFER_FRAMES
        self.center = np.zeros(2)
        self.heading = 0.0
        self.foot_pos = np.zeros((2, 3))
        self.foot_yaw = np.zeros(2)
        self.foot_pitch = np.zeros(2)
        for side in (LEFT, RIGHT):
            self.foot_pos[side] = self.neutral_foot(side)
            self.foot_yaw[side] = self.neutral_foot_yaw(side)
        self.ankle_2N3 = np.broadcast_to(self.foot_pos[:, None], (2, n, 3)).copy()
        self.foot_yaw_2N = np.broadcast_to(self.foot_yaw[:, None], (2, n)).copy()
        self.foot_pitch_2N = np.zeros((2, n))
        self.stance_2N = np.ones((2, n), dtype=bool)
        self.dy_N = np.zeros(n)
        self.lean_N = np.zeros(n)
        self.shift_N2 = np.zeros((n, 2))
        self.arm_flex_2N = np.zeros((2, n))
        self.arm_abduct_2N = np.full((2, n), style.arm_abduct)
        self.elbow_2N = np.full((2, n), style.elbow_rest)
        self.bend_up_2N = np.zeros((2, n))
        # 1 where an action poses the arms itself, which turns off the walking arm swing there.
        self.arm_posed_2N = np.zeros((2, n))

    # -- timing -------------------------------------------------------------------------------------------------

    def frames(self, seconds: float) -> int:
        """Frames for a duration at this performer's speed (at least 2)."""
        return max(2, int(round(seconds * FPS / (self.style.speed * self.tempo))))

    # -- feet ---------------------------------------------------------------------------------------------------

    def neutral_foot(self, side: int, center=None, heading: float | None = None) -> np.ndarray:
        """Ankle position (3,) of a foot in the neutral stance around `center` (xz) at `heading`."""
        center = self.center if center is None else center
        heading = self.heading if heading is None else heading
        xz = center + to_world([SIDE_SIGN[side] * self.style.stance_width / 2, 0.0], heading)
        return np.array([xz[0], ANKLE_HEIGHT[side], xz[1]])

    def neutral_foot_yaw(self, side: int, heading: float | None = None) -> float:
        heading = self.heading if heading is None else heading
        return heading + SIDE_SIGN[side] * self.style.toe_out

    def move_foot(
        self,
        side: int,
        start: int,
        duration: int,
        target,
        target_yaw: float | None = None,
        lift: float = 0.0,
        target_pitch: float = 0.0,
        pitch_peak: float = 0.0,
        ballistic: bool = False,
    ) -> None:
        """Move a foot's ankle to `target` (3,) over frames [start, start + duration]; it is planted after.

        The path is a minimum-jerk line plus an arc of height `lift`; `ballistic` makes it a free flight
        (constant horizontal speed, parabolic height), as in a jump.
        """
        target = np.asarray(target, dtype=np.float64)
        target_yaw = self.foot_yaw[side] if target_yaw is None else target_yaw
        s = np.linspace(0.0, 1.0, duration + 1)
        ramp = s if ballistic else min_jerk(duration)
        arc = 4 * s * (1 - s) if ballistic else np.sin(np.pi * s)
        path = self.foot_pos[side] + (target - self.foot_pos[side]) * ramp[:, None]
        path[:, 1] += lift * arc
        frames = slice(start, start + duration + 1)
        self.ankle_2N3[side, frames] = path
        self.ankle_2N3[side, start + duration + 1 :] = target
        eased = min_jerk(duration)
        self.foot_yaw_2N[side, frames] = self.foot_yaw[side] + (target_yaw - self.foot_yaw[side]) * eased
        self.foot_yaw_2N[side, start + duration + 1 :] = target_yaw
        pitch = self.foot_pitch[side] + (target_pitch - self.foot_pitch[side]) * eased + pitch_peak * np.sin(np.pi * s)
        self.foot_pitch_2N[side, frames] = pitch
        self.foot_pitch_2N[side, start + duration + 1 :] = target_pitch
        # A foot is airborne strictly between its start and landing, and also at an end that is off the floor
        # (a kick chains several moves through the air).
        first = start if self.foot_pos[side, 1] > ANKLE_HEIGHT[side] + 1e-6 else start + 1
        last = start + duration if target[1] > ANKLE_HEIGHT[side] + 1e-6 else start + duration - 1
        self.stance_2N[side, first : last + 1] = False
        self.foot_pos[side], self.foot_yaw[side], self.foot_pitch[side] = target, target_yaw, target_pitch

    # -- body channels ------------------------------------------------------------------------------------------

    def add(self, channel: np.ndarray, start: int, values: np.ndarray) -> None:
        """Add `values` to a per-frame channel from frame `start` on."""
        channel[start : start + len(values)] += values

    def pose_arm(self, side: int, start: int, flex, abduct, elbow, bend_up=None) -> None:
        """Set one arm's angles from frame `start` on (arrays of equal length; they should start and end at rest)."""
        frames = slice(start, start + len(flex))
        self.arm_flex_2N[side, frames] = flex
        self.arm_abduct_2N[side, frames] = abduct
        self.elbow_2N[side, frames] = elbow
        if bend_up is not None:
            self.bend_up_2N[side, frames] = bend_up
        self.arm_posed_2N[side, frames] = 1.0

    # -- output -------------------------------------------------------------------------------------------------

    def channels(self, num_frames: int, start_pad: int) -> tuple[PoseChannels, np.ndarray]:
        """Pose channels of frames [-start_pad, num_frames - start_pad) and the (2, T) stance mask."""
        frames = np.arange(num_frames) - start_pad
        frames = np.clip(frames, 0, BUFFER_FRAMES - 1)
        stance_2T = self.stance_2N[:, frames]
        ankle_2T3 = self.ankle_2N3[:, frames]

        # Pelvis heading: the mean heading of the feet, smoothed.
        yaw_T = gaussian_filter1d(self.foot_yaw_2N[:, frames].mean(0), 2.0, mode="nearest")
        # Pelvis xz: the middle of the feet, weighted towards planted feet.
        weight_2T = np.where(stance_2T, 1.0, 0.25)
        middle_T2 = (weight_2T[..., None] * ankle_2T3[..., [0, 2]]).sum(0) / weight_2T.sum(0)[:, None]
        middle_T2 = gaussian_filter1d(middle_T2, 2.0, axis=0, mode="nearest")
        middle_T2 += to_world(self.shift_N2[frames], yaw_T)

        pelvis_T3 = np.zeros((num_frames, 3))
        pelvis_T3[:, [0, 2]] = middle_T2
        design_T = standing_pelvis_height() + self.dy_N[frames]
        pelvis_T3[:, 1] = np.minimum(design_T, self._reach_cap(middle_T2, yaw_T, ankle_2T3, stance_2T))
        # Smooth the height lightly; the cap was eroded over a wider window, so the result stays under it.
        pelvis_T3[:, 1] = gaussian_filter1d(pelvis_T3[:, 1], 1.0, mode="nearest", truncate=3.0)

        # Walking arm swing: each arm swings opposite to the leg on its side, unless an action poses the arm.
        forward_T2 = np.stack([np.sin(yaw_T), np.cos(yaw_T)], -1)
        split_T = ((ankle_2T3[LEFT][:, [0, 2]] - ankle_2T3[RIGHT][:, [0, 2]]) * forward_T2).sum(-1)
        # Saturate smoothly: long running strides must not fling the arms, nor stop them with a jolt.
        swing_T = 0.8 * np.tanh(self.style.arm_swing * split_T / 0.8)
        arm_flex_2T = self.arm_flex_2N[:, frames] + (1.0 - self.arm_posed_2N[:, frames]) * np.stack([-swing_T, swing_T])

        channels = PoseChannels(
            pelvis_T3=pelvis_T3,
            yaw_T=yaw_T,
            lean_T=self.lean_N[frames],
            ankle_2T3=ankle_2T3,
            foot_yaw_2T=self.foot_yaw_2N[:, frames],
            foot_pitch_2T=self.foot_pitch_2N[:, frames],
            arm_flex_2T=arm_flex_2T,
            arm_abduct_2T=self.arm_abduct_2N[:, frames],
            elbow_2T=self.elbow_2N[:, frames],
            bend_up_2T=self.bend_up_2N[:, frames],
        )
        return channels, stance_2T

    def _reach_cap(self, middle_T2, yaw_T, ankle_2T3, stance_2T, radius: int = 3) -> np.ndarray:
        """Highest pelvis at each frame that keeps every planted ankle within PLANTED_REACH of its leg's reach."""
        cap_T = np.full(len(yaw_T), np.inf)
        for side, hip in ((LEFT, L_HIP), (RIGHT, R_HIP)):
            offset = rest_offset(hip)
            hip_xz_T2 = middle_T2 + to_world(np.broadcast_to(offset[[0, 2]], middle_T2.shape), yaw_T)
            horizontal_T = np.linalg.norm(hip_xz_T2 - ankle_2T3[side][:, [0, 2]], axis=-1)
            vertical_T = np.sqrt(np.clip((PLANTED_REACH * LEG_REACH[side]) ** 2 - horizontal_T**2, 0.0, None))
            side_cap_T = ankle_2T3[side, :, 1] + vertical_T - offset[1]
            cap_T = np.where(stance_2T[side], np.minimum(cap_T, side_cap_T), cap_T)
        finite = np.isfinite(cap_T)
        cap_T = np.where(finite, cap_T, 10.0)
        return minimum_filter1d(cap_T, 2 * radius + 1, mode="nearest")
