"""Training throughput (samples per second) of both stages, and what fused AdamW and bf16 autocast change.

    python benchmarks/bench_training.py                       # paper + small config, both stages, batch 32
    python benchmarks/bench_training.py --quick --json        # small config, batch 8, one round

Each step is the one the training scripts run, on random data (the cost does not depend on it):

* `vq` (examples/train_vq.py): `MoScaleVQModel` forward on 196-frame motions (reconstruction, commitment and joint
  losses, EMA codebook update), backward, gradient clipping, AdamW;
* `transformer` (examples/train.py): the tokenizer's encoding with the hierarchical-refinement corruption (no
  gradient), the authors' token corruption (`prepare_training_inputs`), forward with the loss, backward, gradient
  clipping, AdamW. Text features are random tensors: train.py computes a frozen encoder's features once per caption
  and caches them, so the encoder costs nothing per step.

Variants, timed round-robin in one run (benchmarks/timing.py): `fp32` with AdamW as torch picks it on CPU (a loop
over the parameters), `fp32 fused` with `AdamW(fused=True)` (what the scripts use), and `bf16 fused` adding
`torch.autocast(dtype=bfloat16)` around the forward (what `--mixed_precision bf16` does through accelerate). Every
variant trains its own copy of the same initial weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Callable

import torch
from timing import interleaved, machine_description, perturb_, spread, time_call

from moscale import MoScaleConfig, MoScaleForTextToMotion, MoScaleVQConfig, MoScaleVQModel

FRAMES = 196
CONFIGS = {
    "paper": (MoScaleConfig(), MoScaleVQConfig()),
    "small": (  # examples/train.py and train_vq.py --preset cpu-small, with the bundled MiniLM text width
        MoScaleConfig(
            num_codes=256, code_dim=64, condition_dim=128, hidden_size=192, num_layers=4, num_attention_heads=4,
            text_dim=384, text_pool_head_dim=64, max_text_length=32,
        ),
        MoScaleVQConfig(code_dim=64, num_codes=256, width=96, depth=2, attention_heads=4),
    ),
}  # fmt: skip
VARIANTS = {"fp32": (False, None), "fp32 fused": (True, None), "bf16 fused": (True, torch.bfloat16)}


def trained_vq(vq_config: MoScaleVQConfig) -> MoScaleVQModel:
    """A tokenizer whose codebook is initialised (as after its first training step), in train mode."""
    vq = MoScaleVQModel(vq_config)
    perturb_(vq, torch.Generator().manual_seed(0))
    with torch.no_grad():
        vq.quantizer.codebook.normal_(generator=torch.Generator().manual_seed(1))
        vq.quantizer.code_sum.copy_(vq.quantizer.codebook)
        vq.quantizer.code_count.fill_(1.0)
        vq.quantizer.initialized.fill_(1)
    return vq.train()


def random_batch(config: MoScaleConfig, vq_config: MoScaleVQConfig, batch: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    unit = vq_config.unit_length
    lengths = torch.randint(40 // unit, FRAMES // unit + 1, (batch,), generator=generator) * unit
    text_lengths = torch.randint(5, config.max_text_length + 1, (batch,), generator=generator)
    return {
        "motions": torch.randn(batch, FRAMES, vq_config.motion_dim, generator=generator),
        "lengths": lengths,
        "states": torch.randn(batch, config.max_text_length, config.text_dim, generator=generator),
        "mask": (torch.arange(config.max_text_length)[None] < text_lengths[:, None]).long(),
    }


def vq_step(vq: MoScaleVQModel, optimizer, autocast, batch: dict) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = vq(batch["motions"], batch["lengths"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vq.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def transformer_step(transformer, vq: MoScaleVQModel, optimizer, autocast, batch: dict) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            encoded = vq.encode(batch["motions"], batch["lengths"], perturb_rate=transformer.config.perturb_rate)
        inputs = transformer.prepare_training_inputs(encoded.codes, encoded.f_hat_per_scale)
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            out = transformer(**inputs, text_hidden_states=batch["states"], text_attention_mask=batch["mask"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def stage_steps(stage: str, config, vq_config, batch: dict) -> dict[str, Callable[[], None]]:
    """One training step per variant, each on its own copy of the same initial weights and optimizer."""
    vq = trained_vq(vq_config)
    transformer = MoScaleForTextToMotion(config).train() if stage == "transformer" else None
    steps = {}
    for name, (fused, autocast) in VARIANTS.items():
        if stage == "vq":
            model = copy.deepcopy(vq)
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.99), fused=fused)
            steps[name] = vq_step(model, optimizer, autocast, batch)
        else:
            model = copy.deepcopy(transformer)
            optimizer = torch.optim.AdamW(
                model.parameters(), lr=3e-4, betas=(0.9, 0.98), weight_decay=0.05, fused=fused
            )
            steps[name] = transformer_step(model, vq.eval(), optimizer, autocast, batch)
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["paper", "small"], choices=sorted(CONFIGS))
    parser.add_argument("--stages", nargs="+", default=["vq", "transformer"], choices=["vq", "transformer"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up step per variant")
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (a machine shared with other jobs; one thread)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small config, batch 8, one round")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    args = parser.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.quick:
        args.configs, args.batch_size, args.repeats = ["small"], 8, 1
    device = torch.device("cpu")
    machine = {**machine_description(device), "clock": args.clock}
    print(f"{machine['cpu']}, {machine['torch_threads']} torch threads, torch {machine['torch']}, "
          f"bf16 dot products: {machine['cpu_bf16']}, {args.clock} clock, batch {args.batch_size}")  # fmt: skip

    rows = []
    for config_name in args.configs:
        config, vq_config = CONFIGS[config_name]
        batch = random_batch(config, vq_config, args.batch_size)
        for stage in args.stages:
            steps = stage_steps(stage, config, vq_config, batch)
            for step in steps.values():  # warm-up (and the optimizers' state)
                step()
            seconds = interleaved({name: lambda s=step: time_call(s, device, args.clock) for name, step in
                                   steps.items()}, args.repeats)  # fmt: skip
            print(f"\n{config_name} config, {stage} stage, batch {args.batch_size}:")
            base = statistics.median(seconds["fp32"])
            for name, values in seconds.items():
                median = statistics.median(values)
                print(f"  {name:<12s} step {median:7.3f} s [{min(values):.3f}..{max(values):.3f}]  "
                      f"{args.batch_size / median:7.1f} samples/s  ({base / median:.2f}x fp32)")  # fmt: skip
                rows.append({"config": config_name, "stage": stage, "variant": name, "batch": args.batch_size,
                             "seconds_per_step": spread(values), "samples_per_second": args.batch_size / median,
                             "speedup_vs_fp32": base / median})  # fmt: skip
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}))


if __name__ == "__main__":
    main()
