"""The `moscale` command: text to motion files, plus the package's other command-line tools under one name.

moscale generate "a person jumps twice" [--model PATH_OR_HUB_ID] --output_dir outputs --formats npy,bvh,gif
moscale convert --vq_checkpoint ... --output_dir DIR          (moscale.models.convert_original_checkpoint)
moscale bvh {convert,export,build-dataset} ...                (moscale.motion.bvh_cli)
moscale render MOTION.npy ... --output_path FILE.gif          (moscale.motion.render)
moscale evaluate --model ... --data_dir ... --output_dir DIR  (moscale.evaluation.evaluate_cli)
moscale demo --model PATH_OR_HUB_ID --port 7860               (moscale.demo; pip install "moscale[demo]")

Every flag is spelled with underscores, as in diffusers' scripts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

OUTPUT_FORMATS = ("npy", "bvh", "gif", "mp4")

# Subcommands that hand their arguments to another module's command-line function: (module, function, help).
DELEGATED = {
    "convert": ("moscale.models.convert_original_checkpoint", "main", "convert the authors' checkpoints"),
    "bvh": ("moscale.motion.bvh_cli", "main", "BVH import, export, and training folders from BVH files"),
    "render": ("moscale.motion.render", "main", "render motions to GIF, MP4 or a PNG strip of key frames"),
    "evaluate": ("moscale.evaluation.evaluate_cli", "command_line", "the paper's evaluation protocol for a pipeline"),
    "demo": ("moscale.demo", "main", "the web demo in a browser (Gradio: pip install 'moscale[demo]')"),
}


def _slug(text: str, index: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return f"{index:02d}_{words[:48] or 'motion'}"


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(formats) - set(OUTPUT_FORMATS))
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown output format(s) {unknown or formats}; choose from {', '.join(OUTPUT_FORMATS)}"
        )
    return formats


def generate(args: argparse.Namespace) -> list[Path]:
    """Generate one motion per prompt and write the requested files; returns their paths."""
    import numpy as np
    import torch

    from moscale.pipelines.pipeline_moscale import MoScalePipeline
    from moscale.pretrained import bundled_pipeline_path

    prompts = args.prompt
    pipe = MoScalePipeline.from_pretrained(args.model or bundled_pipeline_path())
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=args.quiet)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    out = pipe(
        prompts,
        num_frames=args.num_frames,
        guidance_scale=args.guidance_scale,
        refinement_steps=args.refinement_steps,
        generator=generator,
        output_type="np",
    )
    if out.joints is None and set(args.formats) - {"npy"}:
        raise ValueError(
            "This pipeline has no normalisation statistics, so its features cannot be turned into joints: "
            "only --formats npy is possible."
        )

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    summary = []
    for index, (prompt, length) in enumerate(zip(prompts, out.lengths)):
        length = int(length)
        stem = output_dir / _slug(prompt, index)
        features = out.features[index, :length]
        joints = None if out.joints is None else out.joints[index, :length]
        if "npy" in args.formats:
            np.save(f"{stem}_features.npy", features)
            written.append(Path(f"{stem}_features.npy"))
            if joints is not None:
                np.save(f"{stem}_joints.npy", joints)
                written.append(Path(f"{stem}_joints.npy"))
        if "bvh" in args.formats:
            from moscale.motion.bvh_export import joints_to_bvh

            joints_to_bvh(joints, f"{stem}.bvh", fps=pipe.fps)
            written.append(Path(f"{stem}.bvh"))
        for suffix in ("gif", "mp4"):
            if suffix in args.formats:
                from moscale.motion.render import render_animation

                written.append(render_animation(joints, f"{stem}.{suffix}", captions=prompt, fps=pipe.fps))
        summary.append({"prompt": prompt, "frames": length, "seconds": length / pipe.fps})
    (output_dir / "prompts.json").write_text(json.dumps(summary, indent=2) + "\n")
    model = args.model or "the bundled model (moscale/pretrained/moscale-procedural)"
    print(f"{len(prompts)} motion(s) from {model}, {len(written)} file(s) in {output_dir}/:")
    for path in written:
        print(f"  {path}")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moscale", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "generate",
        help="text to motion files (GIF, BVH, .npy), on the bundled model or a saved MoScalePipeline",
        description="Generate one motion per caption and write it as .npy features and joints, a BVH for Blender "
        "and a GIF. Without --model the pipeline bundled with the package is used (trained on the procedural "
        "dataset: see moscale/pretrained/moscale-procedural/README.md for what it can do).",
    )
    gen.add_argument("prompt", nargs="+", help="one or more captions; each gives one motion")
    gen.add_argument(
        "--model", default=None, help="a MoScalePipeline folder (save_pretrained) or a Hub id; default: the bundled one"
    )
    gen.add_argument(
        "--num_frames",
        type=int,
        default=None,
        help="frames per motion (multiple of 4, 40..196 at 20 fps); default: the pipeline's length estimator",
    )
    gen.add_argument(
        "--guidance_scale", type=float, default=None, help="default: the pipeline scheduler's (5 for the paper's model)"
    )
    gen.add_argument(
        "--refinement_steps",
        type=int,
        nargs="+",
        default=None,
        help="steps per scale, coarse to fine (default: the pipeline scheduler's, (1, 2, 5, 10) for the paper's model)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--output_dir", default="outputs", help="folder for the files (created)")
    gen.add_argument(
        "--formats",
        type=_formats,
        default=("npy", "bvh", "gif"),
        help="comma list of npy,bvh,gif,mp4 (default npy,bvh,gif)",
    )
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(handler=generate)

    # Listed for `moscale --help` only: `main` takes --debug out and hands these subcommands to their modules before
    # parsing.
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback (with any subcommand)")
    for name, (_, _, help_text) in DELEGATED.items():
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _run(argv: list[str]) -> None:
    if argv and argv[0] in DELEGATED:
        import importlib

        module, function, _ = DELEGATED[argv[0]]
        getattr(importlib.import_module(module), function)(argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.handler(args)


def main(argv: list[str] | None = None) -> None:
    """Run a subcommand. An error is one line on stderr and exit status 2; `--debug` (anywhere) shows the
    traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        _run(argv)
    except Exception as error:
        if debug:
            raise
        command = " ".join(["moscale", *argv[:1]]) if argv and argv[0] in {*DELEGATED, "generate"} else "moscale"
        # Messages from the libraries below may span lines.
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if not isinstance(error, (ValueError, TypeError, OSError)) or not message:
            message = f"{type(error).__name__}: {message}"
        print(f"{command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
