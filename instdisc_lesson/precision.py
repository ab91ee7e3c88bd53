"""Precision and memory layout of the training step, chosen per machine by timing, not assumed.

Taught in notebook 06. The network's forward and backward may run in **bfloat16** under autocast
(``torch.autocast``: matrix multiplies and convolutions in bf16, reductions and BatchNorm statistics in
float32) and on **channels-last** tensors (NHWC: each pixel's channels side by side, the layout the CPU's
and GPU's convolution kernels are fastest on). The objective, the memory bank and kNN always stay
float32: the features are cast back before the loss, which is computed in log space anyway.

Whether either helps depends on the machine. On this project's 2-core AMD EPYC (AVX-512 BF16) the
course's ConvNet trained at 1.0x (fp32), 1.55x (channels-last), 1.36x (bf16) and 2.36x (both), batch 128;
a CPU without bf16 instructions runs bf16 *slower* than fp32. So ``"auto"`` times a few forward+backward
passes of each candidate on the run's own network and images and keeps the fastest, preferring float32
and the plain layout unless the other is clearly faster (``MARGIN``).

    precision      "fp32" | "bf16" | "auto"
    memory_format  "contiguous" | "channels_last" | "auto"
"""
from __future__ import annotations

import contextlib
import time

import torch

from .validate import check_precision_usable

PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
MARGIN = 1.05  # another mode must be at least 5 % faster than fp32 / contiguous to be chosen (timing noise)
_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def autocast(device: torch.device, precision: str):
    """The context a forward pass runs in: bf16 autocast on ``device`` for ``"bf16"``, nothing for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def layout(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    """``x`` (B, C, H, W) in the memory layout ``memory_format`` (the values are unchanged)."""
    return x.contiguous(memory_format=_FORMATS[memory_format])


def set_layout(model: torch.nn.Module, memory_format: str) -> torch.nn.Module:
    """The network's convolution weights in ``memory_format`` (in place; the values are unchanged)."""
    return model.to(memory_format=_FORMATS[memory_format])


def _time_passes(model, x, device, precision, memory_format, steps: int) -> float:
    """Median seconds of one forward + backward of ``model`` on ``x`` in this mode (first pass not counted)."""
    set_layout(model, memory_format)
    x = layout(x, memory_format)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with autocast(device, precision):
            out = model(x)
        out.float().square().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def measure(model: torch.nn.Module, x: torch.Tensor, device: torch.device, steps: int = 3) -> dict:
    """Seconds per forward + backward for every (precision, layout) pair that can run here.

    The network is left as it was: its weights untouched (no optimizer step), its gradients cleared, its
    buffers (BatchNorm's running statistics) restored, its layout contiguous.
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    timings = {}
    try:
        for precision in ("fp32", "bf16"):
            try:
                check_precision_usable(device, precision)
            except ValueError:
                continue
            for memory_format in ("contiguous", "channels_last"):
                timings[(precision, memory_format)] = _time_passes(model, x, device, precision, memory_format, steps)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        set_layout(model, "contiguous")
    return timings


def choose(timings: dict, precision: str = "auto", memory_format: str = "auto") -> tuple[str, str]:
    """The fastest (precision, layout) among ``timings`` that fits what was asked (a fixed value, or auto).

    fp32 and the contiguous layout are kept unless another candidate is at least ``MARGIN`` times faster.
    """
    allowed = {key: t for key, t in timings.items()
               if precision in ("auto", key[0]) and memory_format in ("auto", key[1])}
    default = ("fp32" if precision == "auto" else precision, "contiguous" if memory_format == "auto" else memory_format)
    best = min(allowed, key=allowed.get, default=default)
    if default in allowed and allowed[default] <= MARGIN * allowed[best]:
        return default
    return best


def resolve(cfg, model: torch.nn.Module, sample: torch.Tensor, device: torch.device, decide=lambda pick: pick):
    """``(cfg, timings)``: ``cfg`` with "auto" precision or layout replaced by the fastest here, timed on the run's
    own network and a batch of its images (``sample``; the network is left as it was), and the layout applied.
    ``decide`` lets rank 0 choose for every process under torchrun (it maps rank 0's choice to everyone's)."""
    import dataclasses

    check_precision_usable(device, cfg.precision)
    timings = None
    if "auto" in (cfg.precision, cfg.memory_format):
        timings = measure(model, sample, device)
        modes = [(p, m) for p in ("fp32", "bf16") for m in ("contiguous", "channels_last")]
        pick = decide(torch.tensor(modes.index(choose(timings, cfg.precision, cfg.memory_format)), device=device))
        precision, memory_format = modes[int(pick)]  # once per run
        cfg = dataclasses.replace(cfg, precision=precision, memory_format=memory_format)
        timings = {f"{p}/{m}": t for (p, m), t in timings.items()}
    set_layout(model, cfg.memory_format)
    return cfg, timings
