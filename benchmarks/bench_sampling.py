"""KV-cached against uncached scale-by-scale sampling, as a ratio measured in one run.

    python benchmarks/bench_sampling.py [--batch_size 1] [--repeats 5] [--device cpu]

Paper-size models with random weights (the cost does not depend on the weights) and random text features, so only
the transformer and the sampler are timed: 196 frames, refinement steps (1, 2, 5, 10), classifier-free guidance,
tokens only (`output_type="latent"`). The two settings alternate within each repeat, so drifts in machine load hit
both alike; the ratio of their medians is the number to quote.
"""

import argparse
import statistics
import time

import torch

from moscale import MoScaleConfig, MoScaleForTextToMotion, MoScalePipeline, MoScaleVQConfig, MoScaleVQModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = MoScalePipeline(MoScaleVQModel(MoScaleVQConfig()).eval(), MoScaleForTextToMotion(MoScaleConfig()).eval())
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.transformer.config
    states = torch.randn(args.batch_size, config.max_text_length, config.text_dim, device=args.device)
    mask = torch.ones(args.batch_size, config.max_text_length, dtype=torch.long, device=args.device)

    def sample(use_cache: bool) -> float:
        generator = torch.Generator(device=args.device).manual_seed(0)
        start = time.perf_counter()
        pipe(prompt_embeds=states, prompt_attention_mask=mask, num_frames=config.max_motion_length,
             output_type="latent", use_cache=use_cache, generator=generator)  # fmt: skip
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    sample(True)  # warm-up
    seconds = {True: [], False: []}
    for _ in range(args.repeats):
        for use_cache in (True, False):
            seconds[use_cache].append(sample(use_cache))
    cached, uncached = statistics.median(seconds[True]), statistics.median(seconds[False])
    steps = tuple(pipe.scheduler.config.refinement_steps)
    print(
        f"{args.batch_size} motion(s) of {config.max_motion_length} frames, refinement {steps}, "
        f"CFG, {args.device} ({torch.get_num_threads()} threads), median of {args.repeats}:"
    )
    print(f"  KV cache {cached:.2f} s, no cache {uncached:.2f} s: the cache is {uncached / cached:.2f}x faster")


if __name__ == "__main__":
    main()
