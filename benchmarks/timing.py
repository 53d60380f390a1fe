"""What the benchmarks share: the machine's description, interleaved timing, FLOP counting, the matmul reference, and
the random weights the models are timed with.

Timings on a shared machine drift with the load of other jobs, so every benchmark here times its settings
round-robin (one call of each setting per round, the order rotating between rounds) and reports medians and ratios
of medians from the same run. FLOPs are counted from the operations a call actually runs (`OpCounter`), and the
"matmul reference" times plain `torch.matmul` calls of exactly the matrix shapes that call ran, in the same run:
what the same arithmetic costs when nothing but matrix products is done.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


# --------------------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo (or the platform) reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX), which make bf16 matmuls fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def machine_description(device: torch.device) -> dict:
    description = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": cpu_has_bf16(),
        "device": str(device),
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    try:
        description["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return description


# ---------------------------------------------------------------------------------------------------------- timing
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""`cpu` counts the CPU time this process received: on a machine shared with other jobs and one torch thread it
measures the work, not the queueing (with several threads it also counts their spinning)."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(run: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds of one call of `run` on `clock`, the device's queue drained before and after."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    run()
    synchronize(device)
    return now() - start


def interleaved(
    runs: dict[str, Callable[[], float]], repeats: int, on_round: Callable[[int], None] | None = None
) -> dict[str, list[float]]:
    """`repeats` rounds; each round calls every run once (the order rotates by one per round) and records its
    returned seconds."""
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(runs[name]())
        if on_round is not None:
            on_round(round_index)
    return seconds


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ----------------------------------------------------------------------------------------------------------- FLOPs
def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


class OpCounter(TorchDispatchMode):
    """Counts the FLOPs of matrix products and attention run inside it, and the shapes of the matrix products.

    A multiply-add is 2 FLOPs. Matrix products are `mm`, `addmm`, `bmm`, `baddbmm` and oneDNN's linear on a packed
    weight (a linear layer reaches one of them); `gemms` counts each (batch, M, K, N, dtype). Attention kernels count 4 * B * H * L * S * d (QK^T and
    PV); attention written as plain matrix products is counted through them. Elementwise work is not counted.
    """

    def __init__(self):
        super().__init__()
        self.gemms: Counter = Counter()
        self.attention_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            (m, k), n = _shape(a), _shape(b)[1]
            self.gemms[(1, m, k, n, a.dtype)] += 1
        elif packet in (aten.bmm, aten.baddbmm):
            a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
            (batch, m, k), n = _shape(a), _shape(b)[2]
            self.gemms[(batch, m, k, n, a.dtype)] += 1
        elif packet is torch.ops.mkldnn._linear_pointwise:  # a linear layer on a packed (opaque) weight
            out = func(*args, **kwargs)
            k, n = _shape(args[0])[-1], _shape(out)[-1]
            self.gemms[(1, args[0].numel() // k, k, n, args[0].dtype)] += 1
            return out
        elif "scaled_dot_product" in packet.__name__ and "backward" not in packet.__name__:
            q, k = args[0], args[1]
            *lead, length, dim = _shape(q)
            self.attention_flops += 4 * math.prod(lead) * length * _shape(k)[-2] * dim
        return func(*args, **kwargs)

    @property
    def gemm_flops(self) -> int:
        return sum(2 * batch * m * k * n * count for (batch, m, k, n, _), count in self.gemms.items())

    @property
    def flops(self) -> int:
        return self.gemm_flops + self.attention_flops


def matmul_seconds(gemms: Counter, device: torch.device, clock: str = "wall", runs: int = 3) -> float:
    """Seconds that plain `torch.matmul` calls of the recorded shapes take, each shape as often as it was run.

    Each distinct shape runs once untimed, then up to `runs` times back to back in one timed interval on random
    operands (the second a transposed weight, as in a linear layer); the total scales each by its count.
    """
    total = 0.0
    for (batch, m, k, n, dtype), count in gemms.items():
        a = torch.randn(batch, m, k, device=device, dtype=dtype).squeeze(0)
        b = torch.randn(batch, n, k, device=device, dtype=dtype).squeeze(0).transpose(-1, -2)
        torch.matmul(a, b)
        repeat = min(count, runs)

        def replay(a=a, b=b, repeat=repeat):
            for _ in range(repeat):
                torch.matmul(a, b)

        total += time_call(replay, device, clock) * count / repeat
    return total


# --------------------------------------------------------------------------------------------------------- weights
def perturb_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter += noise (std 0.5 / sqrt(fan_in) for matrices, 0.1 for vectors), as the parity fixtures do.

    The MoScale initialisation alone makes every block near-identity (AdaLN gammas 1e-5) and sampling degenerate.
    """
    with torch.no_grad():
        for param in module.parameters():
            fan_in = math.prod(param.shape[1:]) if param.ndim >= 2 else 0
            std = 0.5 / math.sqrt(fan_in) if fan_in else 0.1
            param.add_(torch.randn(param.shape, generator=generator) * std)
