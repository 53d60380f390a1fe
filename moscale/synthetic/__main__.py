"""`python -m moscale.synthetic --output_dir DIR --num_clips N --seed S`: write a procedural text-motion dataset."""

from __future__ import annotations

import argparse

from .writer import write_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moscale.synthetic",
        description="Write a procedural text-motion dataset in the HumanML3D folder layout, with semantics.jsonl.",
    )
    parser.add_argument("--output_dir", required=True, help="folder to write (created)")
    parser.add_argument("--num_clips", type=int, default=1000, help="number of clips (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same folder")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core, <= 8)")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds a dataset")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error("--num_clips must be at least 1")
    root = write_dataset(
        args.output_dir, args.num_clips, seed=args.seed, workers=args.workers, overwrite=args.overwrite
    )
    print(f"wrote {args.num_clips} clips to {root}")


if __name__ == "__main__":
    main()
