"""Pictures of motions: animated GIF / MP4 of skeletons and still PNG strips of key frames.

    from moscale.motion.render import render_animation, render_keyframes
    render_animation([joints_a, joints_b], "compare.gif", captions=["generated", "ground truth"])
    render_keyframes(joints, "strip.png", captions="a person waves", num_keyframes=6)

Motions are joint positions (T, J, 3), y up (HumanML3D: 22 joints, metres, 20 fps; KIT-ML: 21 joints), or
un-normalised features (T, 263) / (T, 251), which are turned into joints with `recover_from_ric`. Each motion
gets its own panel with the same camera: the skeleton (left side blue, right side red), the ground plane, and the
root's path on the ground (the part already walked drawn solid). Command line:
`moscale render MOTION.npy [MORE.npy ...] --output_path FILE.{gif,mp4,png} [--caption TEXT ...]`.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from moscale.motion.representation import recover_from_ric, skeleton_for

# Kinematic chains come in the order right leg, left leg, spine, right arm, left arm for both skeletons.
_CHAIN_COLORS = ("#d62728", "#1f77b4", "#3a3a3a", "#d62728", "#1f77b4")
_FEATURE_DIMS = {263: 22, 251: 21}


def as_joints(motion) -> np.ndarray:
    """(T, J, 3) joints from joints or un-normalised features (T, 263 or 251), numpy or torch."""
    if hasattr(motion, "detach"):
        motion = motion.detach().cpu().numpy()
    motion = np.asarray(motion, dtype=np.float32)
    if motion.ndim == 2 and motion.shape[1] in _FEATURE_DIMS:
        motion = recover_from_ric(motion, _FEATURE_DIMS[motion.shape[1]])
    if motion.ndim != 3 or motion.shape[2] != 3 or motion.shape[1] not in (21, 22):
        raise ValueError(f"expected joints (T, 22 or 21, 3) or features (T, 263 or 251), got shape {motion.shape}")
    if len(motion) == 0 or not np.isfinite(motion).all():
        raise ValueError("the motion is empty or contains NaN / infinite values")
    return motion


def _as_motion_list(motions) -> list[np.ndarray]:
    if isinstance(motions, (list, tuple)):
        return [as_joints(m) for m in motions]
    return [as_joints(motions)]


def _captions(captions, count: int) -> list[str]:
    if captions is None:
        return [""] * count
    if isinstance(captions, str):
        captions = [captions]
    if len(captions) != count:
        raise ValueError(f"got {len(captions)} captions for {count} motions: give one caption per motion")
    return list(captions)


class _SkeletonPanel:
    """One 3D axes showing one motion; `show(frame)` moves the skeleton and the walked part of the path.

    With `follow`, the view is a window of fixed size centred on the body (for motions that travel far);
    otherwise it covers the whole path. Ground, grid and path are cut to the view by hand, because mplot3d
    draws lines and polygons past the axes limits.
    """

    _GRID_LINES = 9

    def __init__(self, ax, joints_TJ3: np.ndarray, caption: str, title_width: int, follow: bool | None = None):
        self.ax, self.joints = ax, joints_TJ3
        self.chains = skeleton_for(joints_TJ3.shape[1]).kinematic_chain
        # Plot axes (x, -z, y): matplotlib's vertical axis is its third one, and flipping z keeps the turn proper
        # (a plain swap would mirror left and right). HumanML3D bodies face +z, so towards the default camera.
        floor = joints_TJ3[..., 1].min()
        self.points = joints_TJ3[..., [0, 2, 1]] * np.array([1.0, -1.0, 1.0]) - np.array([0.0, 0.0, floor])
        low, high = self.points.min(axis=(0, 1)), self.points.max(axis=(0, 1))
        top = high[2] * 1.05
        extent = (high - low)[:2].max()
        self.follow = extent > 1.5 * top if follow is None else follow
        self.radius = 0.5 * top if self.follow else max(extent / 2.0, 0.4 * top) * 1.1
        self.spacing = self.radius * 2.0 / (self._GRID_LINES - 1)
        self.center = (low[:2] + high[:2]) / 2.0
        ax.set_zlim(0.0, top)
        # Equal scale on all axes and no empty sky above the body.
        ax.set_box_aspect((2 * self.radius, 2 * self.radius, top), zoom=1.3 if self.follow else 1.1)
        ax.set_axis_off()
        ax.view_init(elev=15, azim=-65)
        # Draw in a fixed order (ground, grid, path, skeleton): mplot3d's depth sorting can put the ground in
        # front of the feet.
        ax.computed_zorder = False
        self.ground = Poly3DCollection([np.zeros((4, 3))], facecolor="#e3e3e3", edgecolor="#bdbdbd", zorder=0)
        ax.add_collection3d(self.ground)
        self.grid = [ax.plot([], [], [], color="#cacaca", lw=0.5, zorder=1)[0] for _ in range(2 * self._GRID_LINES)]
        (self.path,) = ax.plot([], [], [], color="#ffbf69", lw=1.0, zorder=2)
        (self.walked,) = ax.plot([], [], [], color="#ff7f0e", lw=1.8, zorder=3)
        self.bones = [
            ax.plot([], [], [], color=color, lw=2.5, solid_capstyle="round", zorder=4 + i)[0]
            for i, color in enumerate(_CHAIN_COLORS[: len(self.chains)])
        ]
        ax.set_title("\n".join(textwrap.wrap(caption, title_width)), fontsize=9)
        self._look_at(self.center)

    def _look_at(self, center: np.ndarray) -> None:
        low, high = center - self.radius, center + self.radius
        self.ax.set_xlim(low[0], high[0])
        self.ax.set_ylim(low[1], high[1])
        self.ground.set_verts(
            [[(low[0], low[1], 0), (high[0], low[1], 0), (high[0], high[1], 0), (low[0], high[1], 0)]]
        )
        # Grid lines stay put on the ground while the view moves over it.
        for axis in range(2):
            first = np.ceil(low[axis] / self.spacing) * self.spacing
            for k, line in enumerate(self.grid[axis * self._GRID_LINES : (axis + 1) * self._GRID_LINES]):
                at = first + k * self.spacing
                ends = np.array([low[1 - axis], high[1 - axis]])
                xy = (np.full(2, at), ends) if axis == 0 else (ends, np.full(2, at))
                line.set_data_3d(*xy, np.zeros(2))
                line.set_visible(at <= high[axis])
        self.view_low, self.view_high = low, high

    def _inside(self, xy_N2: np.ndarray) -> np.ndarray:
        """The points, with those outside the view replaced by NaN (which breaks the line there)."""
        outside = ((xy_N2 < self.view_low) | (xy_N2 > self.view_high)).any(axis=-1)
        return np.where(outside[:, None], np.nan, xy_N2)

    def show(self, frame: int) -> None:
        frame = min(frame, len(self.points) - 1)  # shorter motions hold their last pose
        if self.follow:
            self._look_at(self.points[frame, 0, :2])
        for line, chain in zip(self.bones, self.chains):
            xyz = self.points[frame, list(chain)]
            line.set_data_3d(xyz[:, 0], xyz[:, 1], xyz[:, 2])
        path = self._inside(self.points[:, 0, :2])
        self.path.set_data_3d(path[:, 0], path[:, 1], np.zeros(len(path)))
        walked = path[: frame + 1]
        self.walked.set_data_3d(walked[:, 0], walked[:, 1], np.zeros(len(walked)))


def _new_figure(width: float, height: float, dpi: int) -> Figure:
    # A bare Figure on the Agg canvas draws into memory without touching pyplot's global state or backend.
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _figure_pixels(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def render_animation(
    motions,
    path: str | Path,
    captions=None,
    fps: float = 20.0,
    panel_size: float = 3.2,
    dpi: int = 80,
    step: int = 1,
) -> Path:
    """Animate one motion or several side by side into a .gif or .mp4 file.

    Args:
        motions: a motion (joints (T, J, 3) or features) or a list of them; shorter ones hold their last pose.
        path: output file; the suffix (.gif or .mp4) picks the format.
        captions: a caption or one per motion, shown as panel titles.
        fps: frames per second of the motions (HumanML3D: 20).
        panel_size: inches per panel (times `dpi` pixels).
        step: draw every `step`-th frame (the playback speed stays right); 2 halves the size of a GIF.
    """
    path = Path(path)
    if step < 1:
        raise ValueError(f"step must be a positive integer, got {step}")
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"animation files must end in .gif or .mp4, got {path.name!r}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    motions = _as_motion_list(motions)
    captions = _captions(captions, len(motions))
    fig = _new_figure(panel_size * len(motions), panel_size + 0.3, dpi)
    panels = [
        _SkeletonPanel(
            fig.add_subplot(1, len(motions), i + 1, projection="3d"), joints, caption, title_width=int(panel_size * 12)
        )
        for i, (joints, caption) in enumerate(zip(motions, captions))
    ]
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.88, wspace=0)
    counter = fig.text(0.99, 0.01, "", ha="right", va="bottom", fontsize=7, color="#777777")
    num_frames = max(len(m) for m in motions)
    if path.suffix.lower() == ".gif":
        # GIF frame durations are whole hundredths of a second; imageio takes milliseconds.
        writer = imageio.get_writer(path, mode="I", duration=1000.0 * step / fps, loop=0)
    else:
        writer = imageio.get_writer(
            path, fps=fps / step, codec="libx264", quality=7, macro_block_size=1, pixelformat="yuv420p"
        )
    with writer:
        for frame in range(0, num_frames, step):
            for panel in panels:
                panel.show(frame)
            counter.set_text(f"{frame / fps:4.1f} s")
            pixels = _figure_pixels(fig)
            # yuv420p needs even sides.
            writer.append_data(pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2])
    return path


def render_keyframes(
    motions,
    path: str | Path,
    captions=None,
    num_keyframes: int = 5,
    fps: float = 20.0,
    panel_size: float = 2.0,
    dpi: int = 90,
) -> Path:
    """A still image (.png): `num_keyframes` evenly spaced poses per motion, one row per motion.

    Args:
        motions: a motion (joints (T, J, 3) or features) or a list of them.
        path: output .png file.
        captions: a caption or one per motion, written above its row.
        num_keyframes: poses per row, from the first frame to the last.
        fps: frame rate, for the time written under each pose.
        panel_size: inches per pose.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"key-frame strips are written as .png, got {path.name!r}")
    if num_keyframes < 1:
        raise ValueError(f"num_keyframes must be at least 1, got {num_keyframes}")
    motions = _as_motion_list(motions)
    captions = _captions(captions, len(motions))
    row_height = 0.8 * panel_size + 0.3  # the flat 3D box leaves the top of a square panel empty
    fig = _new_figure(panel_size * num_keyframes, row_height * len(motions), dpi)
    rows = fig.subfigures(len(motions), 1, squeeze=False)[:, 0]
    for subfig, joints, caption in zip(rows, motions, captions):
        subfig.suptitle(caption, fontsize=10, y=0.99, va="top")
        subfig.subplots_adjust(left=0, right=1, bottom=0, top=1.0 - 0.3 / row_height, wspace=0)
        frames = np.linspace(0, len(joints) - 1, num_keyframes).round().astype(int)
        for column, frame in enumerate(frames):
            ax = subfig.add_subplot(1, num_keyframes, column + 1, projection="3d")
            # Every pose gets the same body-sized window, centred on it, whatever the length of the path.
            _SkeletonPanel(ax, joints, "", title_width=1, follow=True).show(int(frame))
            ax.text2D(0.08, 0.9, f"{frame / fps:.1f} s", transform=ax.transAxes, fontsize=8, color="#555555")
    fig.savefig(path, dpi=dpi)
    return path


def main(argv: list[str] | None = None) -> None:
    """`moscale render`: .npy motions -> a GIF, MP4 or key-frame PNG."""
    parser = argparse.ArgumentParser(prog="moscale render", description=__doc__.split("\n\n")[0])
    parser.add_argument("motions", nargs="+", help=".npy joints (T, 22, 3) or un-normalised features (T, 263)")
    parser.add_argument("--output_path", required=True, help="output .gif, .mp4 or .png (key frames)")
    parser.add_argument("--caption", action="append", default=None, help="one per motion, in order")
    parser.add_argument("--fps", type=float, default=20.0)
    parser.add_argument("--keyframes", type=int, default=5, help="poses per row of a .png strip")
    parser.add_argument("--panel_size", type=float, default=None, help="inches per panel")
    parser.add_argument("--dpi", type=int, default=None, help="pixels per inch")
    parser.add_argument("--step", type=int, default=1, help="animate every n-th frame (smaller GIF files)")
    args = parser.parse_args(argv)
    motions = [np.load(path) for path in args.motions]
    size = {k: v for k, v in (("panel_size", args.panel_size), ("dpi", args.dpi)) if v is not None}
    if Path(args.output_path).suffix.lower() == ".png":
        render_keyframes(motions, args.output_path, args.caption, args.keyframes, args.fps, **size)
    else:
        render_animation(motions, args.output_path, args.caption, args.fps, step=args.step, **size)
    print(f"wrote {args.output_path}")


if __name__ == "__main__":
    main()
