#!/usr/bin/env python
"""How much of what a caption asks survives the tokenizer alone? The detectors on decoded dataset motions.

    python examples/bundled_model/tokenizer_ceiling.py --data_dir DIR [--model PATH] [--num_clips 120]

Each test-split motion is encoded and decoded by the pipeline's `vq_model` (nearest codes, no transformer) and the
procedural detectors score the result against the clip's ground truth (`moscale.evaluation.semantic_accuracy`).
Generated motions cannot follow the text better than this ceiling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from moscale import MoScaleVQModel
from moscale.evaluation.semantic_accuracy import detect_actions, load_semantics, semantic_accuracy
from moscale.motion.representation import recover_from_ric
from moscale.pretrained import bundled_pipeline_path


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the bundled one)")
    parser.add_argument("--num_clips", type=int, default=120, help="first N clips of test.txt")
    args = parser.parse_args(argv)

    vq = MoScaleVQModel.from_pretrained((args.model or bundled_pipeline_path()) / "vq_model").eval()
    window, unit = vq.config.max_motion_length, vq.config.unit_length
    semantics = load_semantics(args.data_dir)
    mean, std = np.load(args.data_dir / "Mean.npy"), np.load(args.data_dir / "Std.npy")
    pairs = []
    for clip_id in (args.data_dir / "test.txt").read_text().split()[: args.num_clips]:
        features = np.load(args.data_dir / "new_joint_vecs" / f"{clip_id}.npy")
        frames = min(len(features) - len(features) % unit, window)
        motion = torch.zeros(1, window, features.shape[1])
        motion[0, :frames] = torch.as_tensor((features[:frames] - mean) / std, dtype=torch.float32)
        decoded = vq(motion, torch.tensor([frames])).reconstruction[0, :frames].numpy() * std + mean
        joints = recover_from_ric(torch.as_tensor(decoded, dtype=torch.float32), 22).numpy()
        pairs.append((semantics[clip_id]["actions"], detect_actions(joints)))
    result = semantic_accuracy(pairs)
    print(f"{result['motions']} test clips through the tokenizer:")
    for category, value in result["overall"].items():
        print(f"  {category}: {100 * value:.0f}%")


if __name__ == "__main__":
    main()
