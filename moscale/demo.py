"""The MoScale web demo: a Gradio app over `MoScalePipeline` (`moscale demo`, and `app.py` for a Hugging Face Space).

The Generate tab turns prompts (one per line) into one animation with a panel per prompt, and offers each motion as
a BVH file, joint positions (.npy) and features (.npy). The Edit tab regenerates a span of seconds of a generated or
uploaded motion under a new prompt (the pipeline's `source_motion` and `edit_spans`) and shows source and result side
by side. Bad input is reported in the page (`gr.Error`), never as a traceback.

    moscale demo                          # the bundled model, http://127.0.0.1:7860
    moscale demo --model PATH_OR_HUB_ID --host 0.0.0.0 --port 8000

Gradio is an optional extra (`pip install "moscale[demo]"`); nothing else in the package imports this module.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

try:
    import gradio as gr
except ImportError as error:
    raise ImportError('the MoScale demo needs Gradio: pip install "moscale[demo]"') from error

import moscale.pretrained
from moscale.cli import _slug
from moscale.motion.bvh_export import joints_to_bvh
from moscale.motion.render import render_animation
from moscale.motion.representation import HUMANML3D, features_from_joints
from moscale.motion.retarget import bvh_to_features

MAX_PROMPTS = 4
MAX_KEPT_MOTIONS = 12
"""Motions of a browser session offered as edit sources; older ones drop out."""
FRAME_STEP = 2
"""Animations draw every other frame: half the rendering time and GIF size, at the same playback speed."""
KEEP_OUTPUTS_S = 3600
"""Output folders older than this are deleted when a new one is made (Gradio serves its own copies)."""
HUMANML3D_LIMITS = (40, 196, 120, 4, 20.0)
"""(min, max, default frames, frames per token, fps) shown while no model is loaded."""


@dataclass
class Motion:
    """A motion made in this browser session, kept so that the Edit tab can start from it."""

    label: str
    features: np.ndarray  # (frames, D) in the pipeline's output space


def load_pipeline(model: str | None, device: str):
    """(pipeline, None), or (None, the message that says why not: the page shows it instead of the controls' work)."""
    from moscale.pipelines.pipeline_moscale import MoScalePipeline

    try:
        source = str(moscale.pretrained.bundled_pipeline_path()) if model is None else model
        pipe = MoScalePipeline.from_pretrained(source)
    except (OSError, ValueError) as error:
        return None, str(error)
    if pipe.config.motion_mean is None:
        return None, (
            f"the pipeline {source} has no normalisation statistics (motion_mean, motion_std), so its motions "
            "cannot be turned into skeletons: save it with the statistics of its training data"
        )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # the page shows the progress instead
    return pipe, None


class MotionDemo:
    """What the page does, apart from its layout: checks the inputs, samples, writes and renders the files."""

    def __init__(self, pipe, load_error: str | None, device: str):
        self.pipe, self.load_error, self.device = pipe, load_error, device
        self.output_root = Path(tempfile.mkdtemp(prefix="moscale-demo-"))
        if pipe is None:
            self.min_frames, self.max_frames, self.default_frames, self.unit, self.fps = HUMANML3D_LIMITS
        else:
            vq_config = pipe.vq_model.config
            self.min_frames, self.max_frames = pipe.config.min_num_frames, vq_config.max_motion_length
            self.default_frames, self.unit, self.fps = pipe.config.default_num_frames, vq_config.unit_length, pipe.fps

    @property
    def has_length_estimator(self) -> bool:
        return self.pipe is not None and self.pipe.length_estimator is not None

    @property
    def default_refinement_steps(self) -> str:
        return "" if self.pipe is None else ", ".join(map(str, self.pipe.scheduler.config.refinement_steps))

    @property
    def default_guidance_scale(self) -> float:
        return 5.0 if self.pipe is None else self.pipe.scheduler.config.guidance_scale

    # ------------------------------------------------------------------------------------------------ inputs
    def _require_pipeline(self):
        if self.pipe is None:
            raise gr.Error(f"No model is loaded: {self.load_error}")
        return self.pipe

    def _num_frames(self, seconds) -> int:
        low, high = self.min_frames / self.fps, self.max_frames / self.fps
        frames = None if seconds is None else round(float(seconds) * self.fps / self.unit) * self.unit
        if frames is None or not self.min_frames <= frames <= self.max_frames:
            raise gr.Error(
                f"A length of {seconds} s is out of range: this model makes motions of {low:g} to {high:g} s"
            )
        return frames

    def _sampling_args(self, seed, guidance_scale, refinement_steps: str) -> dict:
        if seed is None or float(seed) != int(seed) or not 0 <= int(seed) < 2**63:
            raise gr.Error(f"The seed must be a whole number from 0 to 2^63 - 1, got {seed}")
        num_scales = len(self.pipe.vq_model.config.scales)
        try:
            steps = [int(part) for part in refinement_steps.replace(",", " ").split()]
        except ValueError:
            steps = []
        if len(steps) != num_scales or min(steps) < 1:
            raise gr.Error(
                f"Refinement steps {refinement_steps!r}: give {num_scales} whole numbers >= 1 separated by commas, "
                f"one per scale from coarse to fine (this model's own: {self.default_refinement_steps})"
            )
        return {
            "generator": torch.Generator(device=self.device).manual_seed(int(seed)),
            "guidance_scale": float(guidance_scale),
            "refinement_steps": steps,
        }

    def _prompts(self, text: str) -> list[str]:
        prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not prompts:
            raise gr.Error("Type a prompt first, for example 'a person jumps twice' (one motion per line).")
        if len(prompts) > MAX_PROMPTS:
            raise gr.Error(f"{len(prompts)} prompts: the demo makes at most {MAX_PROMPTS} motions at once.")
        return prompts

    def _source_features(self, upload, choice: str | None, motions: list[Motion]) -> np.ndarray:
        """The edit source: the uploaded file when there is one, else the chosen motion of this session."""
        if upload is not None:
            features = self._uploaded_features(Path(upload))
        else:
            chosen = [motion for motion in motions if motion.label == choice]
            if not chosen:
                raise gr.Error("Choose a motion to edit: generate one first, or upload a .bvh or .npy file.")
            features = chosen[0].features
        # The pipeline edits whole tokens of a supported length: cut the source to one.
        frames = min(len(features), self.max_frames) // self.unit * self.unit
        if frames < self.min_frames:
            raise gr.Error(
                f"The source is {len(features) / self.fps:g} s long; editing needs at least "
                f"{self.min_frames / self.fps:g} s."
            )
        if frames < len(features):
            gr.Warning(f"The source is cut to its first {frames / self.fps:g} s, the longest motion this model makes.")
        return features[:frames]

    def _uploaded_features(self, path: Path) -> np.ndarray:
        motion_dim = self.pipe.vq_model.config.motion_dim
        humanml3d = motion_dim == HUMANML3D.feature_dim
        try:
            if path.suffix.lower() == ".bvh" and humanml3d:
                return bvh_to_features(path)
            if path.suffix.lower() == ".npy":
                array = np.load(path, allow_pickle=False).astype(np.float32)
                if array.ndim == 2 and array.shape[1] == motion_dim:
                    return array
                if humanml3d and array.shape[1:] == (HUMANML3D.joints_num, 3):
                    return features_from_joints(array)
        except ValueError as error:
            raise gr.Error(f"Could not read {path.name}: {error}") from error
        joints = f" or joints (frames, {HUMANML3D.joints_num}, 3), or a .bvh file" if humanml3d else ""
        raise gr.Error(f"Upload a .npy file of features (frames, {motion_dim}){joints}; got {path.name}.")

    # ------------------------------------------------------------------------------------------------ work
    def _sample(self, progress, task: str, **pipeline_args):
        pipe = self.pipe
        total_steps, num_scales = sum(pipeline_args["refinement_steps"]), len(pipe.vq_model.config.scales)

        def report(pipe, step, scale_index, outputs):
            progress((step + 1) / total_steps, desc=f"{task}: scale {scale_index + 1} of {num_scales}")

        try:
            return pipe(output_type="np", callback_on_step_end=report, **pipeline_args)
        except ValueError as error:  # the pipeline's own checks name the problem and the fix
            raise gr.Error(str(error)) from error

    def _new_output_folder(self) -> Path:
        for old in self.output_root.iterdir():
            if time.time() - old.stat().st_mtime > KEEP_OUTPUTS_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.output_root))

    def _write_files(self, folder: Path, stem: str, features_ND: np.ndarray, joints_NJ3: np.ndarray) -> list[Path]:
        paths = [folder / f"{stem}.bvh", folder / f"{stem}_joints.npy", folder / f"{stem}_features.npy"]
        if joints_NJ3.shape[1] == HUMANML3D.joints_num:
            joints_to_bvh(joints_NJ3, paths[0], fps=self.fps)
        else:  # the BVH skeleton is HumanML3D's
            paths.pop(0)
        np.save(paths[-2], joints_NJ3)
        np.save(paths[-1], features_ND)
        return paths

    @staticmethod
    def _kept(motions: list[Motion], new: list[Motion]):
        motions = (motions + new)[-MAX_KEPT_MOTIONS:]
        labels = [motion.label for motion in motions]
        return motions, gr.Dropdown(choices=labels, value=labels[-1])

    def generate(
        self,
        prompts_text: str,
        seconds,
        length_from_text: bool,
        seed,
        guidance_scale,
        refinement_steps: str,
        motions: list[Motion],
        progress=gr.Progress(),
    ):
        """Prompts -> (animation, files, kept motions, edit-source choices, summary)."""
        self._require_pipeline()
        prompts = self._prompts(prompts_text)
        num_frames = None if length_from_text and self.has_length_estimator else self._num_frames(seconds)
        sampling = self._sampling_args(seed, guidance_scale, refinement_steps)
        started = time.perf_counter()
        out = self._sample(progress, "sampling", prompt=prompts, num_frames=num_frames, **sampling)
        sampled_s = time.perf_counter() - started

        progress(None, desc="rendering")
        folder, files, new, joints = self._new_output_folder(), [], [], []
        for index, (prompt, length) in enumerate(zip(prompts, out.lengths.tolist())):
            features_ND, joints_NJ3 = out.features[index, :length], out.joints[index, :length]
            files += self._write_files(folder, _slug(prompt, index), features_ND, joints_NJ3)
            new.append(Motion(f"{len(motions) + index + 1}. {prompt} ({length / self.fps:g} s)", features_ND))
            joints.append(joints_NJ3)
        animation = render_animation(joints, folder / "motions.gif", captions=prompts, fps=self.fps, step=FRAME_STEP)
        lengths = ", ".join(f"{length / self.fps:g} s" for length in out.lengths.tolist())
        summary = f"Sampled in {sampled_s:.1f} s; lengths {lengths}."
        return str(animation), [str(path) for path in files], *self._kept(motions, new), summary

    def edit(
        self,
        choice: str | None,
        upload,
        prompt: str,
        start_s,
        end_s,
        seed,
        guidance_scale,
        refinement_steps: str,
        motions: list[Motion],
        progress=gr.Progress(),
    ):
        """Regenerate [start_s, end_s) of the source under `prompt` -> (side-by-side animation, files, kept motions,
        edit-source choices, summary)."""
        self._require_pipeline()
        prompt = " ".join(self._prompts(prompt))  # one caption, whatever the line breaks
        source_ND = self._source_features(upload, choice, motions)
        sampling = self._sampling_args(seed, guidance_scale, refinement_steps)
        out = self._sample(
            progress,
            "editing",
            prompt=prompt,
            source_motion=source_ND,
            edit_spans=[(float(start_s), float(end_s))],
            num_frames=len(source_ND),
            **sampling,
        )

        progress(None, desc="rendering")
        folder, frames = self._new_output_folder(), len(source_ND)
        features_ND, joints_NJ3 = out.features[0, :frames], out.joints[0, :frames]
        files = self._write_files(folder, _slug(f"edited {prompt}", 0), features_ND, joints_NJ3)
        animation = render_animation(
            [source_ND, joints_NJ3],
            folder / "source_and_edit.gif",
            captions=["source", f"edited: {prompt}"],
            fps=self.fps,
            step=FRAME_STEP,
        )
        label = f"{len(motions) + 1}. edited: {prompt} ({frames / self.fps:g} s)"
        summary = f"Regenerated {float(start_s):g} s to {float(end_s):g} s of a {frames / self.fps:g} s motion."
        return (
            str(animation),
            [str(path) for path in files],
            *self._kept(motions, [Motion(label, features_ND)]),
            summary,
        )


def build_demo(model: str | None = None, device: str | None = None) -> gr.Blocks:
    """The demo page over `model` (a pipeline folder or Hub id; None: the bundled model)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, load_error = load_pipeline(model, device)
    if load_error:
        print(f"moscale demo: no model loaded: {load_error}", file=sys.stderr)
    work = MotionDemo(pipe, load_error, device)
    low, high, step = work.min_frames / work.fps, work.max_frames / work.fps, work.unit / work.fps

    with gr.Blocks(title="MoScale: text to motion") as demo:
        gr.Markdown(
            "# MoScale: text to motion\nDescribe a motion, one per line; download it as BVH (Blender, Unity, "
            "Unreal) or as joint positions and features (.npy)."
        )
        if load_error:
            gr.Markdown(f"**No model is loaded.** {load_error}", elem_id="load-error")
        motions = gr.State([])
        with gr.Row():
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            guidance_scale = gr.Slider(
                0.0, 10.0, value=work.default_guidance_scale, step=0.5, label="Guidance scale (0: none)"
            )
            refinement_steps = gr.Textbox(
                label="Refinement steps per scale, coarse to fine", value=work.default_refinement_steps
            )
        with gr.Tabs():
            with gr.Tab("Generate"):
                prompts = gr.Textbox(
                    label="Prompts (one motion per line)",
                    lines=3,
                    placeholder="a person jumps twice\na person waves with the left hand",
                    elem_id="prompts",
                )
                with gr.Row():
                    seconds = gr.Slider(
                        low, high, value=work.default_frames / work.fps, step=step, label="Length (seconds)"
                    )
                    length_from_text = gr.Checkbox(
                        label="Length from the text", value=work.has_length_estimator, visible=work.has_length_estimator
                    )
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                animation = gr.Image(label="Animation", type="filepath", elem_id="animation", interactive=False)
                files = gr.File(
                    label="Downloads: BVH, joints and features",
                    file_count="multiple",
                    elem_id="files",
                    interactive=False,
                )
                summary = gr.Markdown(elem_id="summary")
            with gr.Tab("Edit"):
                with gr.Row():
                    source_choice = gr.Dropdown(label="Source: a motion generated here", choices=[], elem_id="source")
                    source_upload = gr.File(
                        label="...or upload one (.bvh, or .npy features or joints)", file_types=[".bvh", ".npy"]
                    )
                with gr.Row():
                    start_s = gr.Slider(0.0, high, value=2.0, step=step, label="Regenerate from (seconds)")
                    end_s = gr.Slider(0.0, high, value=4.0, step=step, label="...to (seconds)")
                edit_prompt = gr.Textbox(label="Prompt for the regenerated span", elem_id="edit-prompt")
                edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                edit_animation = gr.Image(
                    label="Source and result", type="filepath", elem_id="edit-animation", interactive=False
                )
                edit_files = gr.File(
                    label="Downloads of the result", file_count="multiple", elem_id="edit-files", interactive=False
                )
                edit_summary = gr.Markdown(elem_id="edit-summary")

        generate_button.click(
            work.generate,
            inputs=[prompts, seconds, length_from_text, seed, guidance_scale, refinement_steps, motions],
            outputs=[animation, files, motions, source_choice, summary],
        )
        edit_button.click(
            work.edit,
            inputs=[
                source_choice,
                source_upload,
                edit_prompt,
                start_s,
                end_s,
                seed,
                guidance_scale,
                refinement_steps,
                motions,
            ],
            outputs=[edit_animation, edit_files, motions, source_choice, edit_summary],
        )
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moscale demo", description="The MoScale web demo (Gradio) in a browser.")
    parser.add_argument(
        "--model", default=None, help="a MoScalePipeline folder or Hub id (default: the model bundled with moscale)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every network interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also serve through a temporary public Gradio link")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    build_demo(args.model, args.device).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
