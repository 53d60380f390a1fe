"""BVH files in and out of the HumanML3D representation, from the shell: `moscale bvh {convert,export,build-dataset}`.

convert: a BVH file -> HumanML3D joints (T, 22, 3) or features (T - 1, 263) as .npy (`moscale.motion.retarget`);
export: HumanML3D joints or features .npy -> a BVH file (`moscale.motion.bvh_export`);
build-dataset: BVH files + a captions file -> a HumanML3D-layout training folder (`moscale.motion.bvh_dataset`).
"""

from __future__ import annotations

import argparse

import numpy as np

from moscale.motion.bvh_dataset import build_dataset, read_caption_table, skipped_captions
from moscale.motion.bvh_export import features_to_bvh, joints_to_bvh
from moscale.motion.retarget import JOINT_MAPPINGS, bvh_to_features, load_bvh_joints


def _scale_arg(text: str) -> float | str:
    return text if text == "auto" else float(text)


def _add_import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mapping", default=None, help=f"joint mapping: {', '.join(JOINT_MAPPINGS)} or a JSON file (default: detect)"
    )
    parser.add_argument(
        "--scale",
        type=_scale_arg,
        default="auto",
        help="metres per file unit (0.01 for centimetres) or 'auto' (HumanML3D leg length)",
    )
    parser.add_argument("--up_axis", default="auto", help="the file's up axis: y, z, -z, ... or auto")


def main(argv: list[str] | None = None) -> None:
    """`moscale bvh convert | export | build-dataset`."""
    parser = argparse.ArgumentParser(prog="moscale bvh", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="BVH -> HumanML3D joints (T, 22, 3) or features (T-1, 263) .npy")
    convert.add_argument("bvh")
    convert.add_argument("output", help=".npy file to write")
    convert.add_argument("--features", action="store_true", help="write 263-dim features instead of joints")
    _add_import_options(convert)

    export = commands.add_parser("export", help="HumanML3D joints or features .npy -> BVH")
    export.add_argument("motion", help=".npy of joints (T, 22, 3) or un-normalised features (T, 263)")
    export.add_argument("output", help=".bvh file to write")
    export.add_argument("--fps", type=float, default=20.0)
    export.add_argument("--units_per_metre", type=float, default=1.0, help="100 for centimetre rigs")

    build = commands.add_parser("build-dataset", help="BVH files + captions -> HumanML3D-layout folder")
    build.add_argument("bvh", nargs="+", help="BVH files and/or folders of them")
    build.add_argument("--captions", required=True, help="tab-separated: name, caption[, start, end]")
    build.add_argument("--output_dir", required=True, help="output folder")
    build.add_argument("--val_fraction", type=float, default=0.0)
    build.add_argument("--test_fraction", type=float, default=0.0)
    build.add_argument("--seed", type=int, default=0)
    _add_import_options(build)

    args = parser.parse_args(argv)
    if args.command == "convert":
        options = {"mapping": args.mapping, "scale": args.scale, "up_axis": args.up_axis}
        array = bvh_to_features(args.bvh, **options) if args.features else load_bvh_joints(args.bvh, **options)
        np.save(args.output, array.astype(np.float32))
        print(f"wrote {args.output}: {array.shape}")
    elif args.command == "export":
        motion = np.load(args.motion)
        if motion.ndim == 2:
            features_to_bvh(motion, args.output, args.fps, args.units_per_metre)
        else:
            joints_to_bvh(motion, args.output, args.fps, args.units_per_metre)
        print(f"wrote {args.output}: {len(motion)} frames at {args.fps:g} fps")
    else:
        splits = build_dataset(
            args.bvh,
            args.captions,
            args.output_dir,
            args.val_fraction,
            args.test_fraction,
            args.seed,
            mapping=args.mapping,
            scale=args.scale,
            up_axis=args.up_axis,
        )
        print(
            f"wrote {args.output_dir}: {len(splits['train'])} train, {len(splits['val'])} val, "
            f"{len(splits['test'])} test clips"
        )
        skipped = skipped_captions(args.output_dir, read_caption_table(args.captions))
        if skipped:
            print(
                "note: HumanML3D loaders keep motions of 40 to 199 frames (2 to 10 s) and skip a longer or shorter "
                f"motion together with its timed parts, so these captions will not be used: {'; '.join(skipped)}. "
                "Cut long takes into separate BVH files of 2 to 10 s."
            )


if __name__ == "__main__":
    main()
