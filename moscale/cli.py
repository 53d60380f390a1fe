"""The `moscale` command: text to motion files, plus the package's other command-line tools under one name.

moscale generate PIPELINE "a person jumps twice" --out-dir outputs --formats npy,bvh,gif
moscale convert --vq-checkpoint ... --output-dir DIR      (python -m moscale.models.convert_original_checkpoint)
moscale bvh {import,export,build-dataset} ...             (python -m moscale.motion.bvh)
moscale render ...                                        (python -m moscale.motion.render)
moscale evaluate --pipeline ... --data_dir ...            (python -m moscale.evaluation.protocol)
moscale demo --model PATH_OR_HUB_ID --port 7860           (python -m moscale.demo; pip install "moscale[demo]")
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

    prompts = args.prompt
    pipe = MoScalePipeline.from_pretrained(args.pipeline)
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

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    summary = []
    for index, (prompt, length) in enumerate(zip(prompts, out.lengths)):
        length = int(length)
        stem = out_dir / _slug(prompt, index)
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
    (out_dir / "prompts.json").write_text(json.dumps(summary, indent=2) + "\n")
    for path in written:
        print(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moscale", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="text to motion with a saved MoScalePipeline")
    gen.add_argument("pipeline", help="a MoScalePipeline folder (save_pretrained) or a Hub id")
    gen.add_argument("prompt", nargs="+", help="one or more captions; each gives one motion")
    gen.add_argument("--num-frames", type=int, default=None, help="frames per motion (multiple of 4, 40..196)")
    gen.add_argument(
        "--guidance-scale", type=float, default=None, help="default: the pipeline scheduler's (5 for the paper's model)"
    )
    gen.add_argument(
        "--refinement-steps",
        type=int,
        nargs="+",
        default=None,
        help="steps per scale, coarse to fine (default: the pipeline scheduler's, (1, 2, 5, 10) for the paper's model)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--out-dir", default="outputs")
    gen.add_argument("--formats", type=_formats, default=("npy", "gif"), help="comma list of npy,bvh,gif,mp4")
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
