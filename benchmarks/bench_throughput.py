"""Training throughput against the machine's limit: the whole step in fp32 and in what ``auto`` picks.

    python benchmarks/bench_throughput.py [--model convnet] [--n 5000] [--batch-size 128] [--steps 20]

Printed in one run, so only the ratios mean anything (absolute figures move between machines and loads):

* this CPU's (or GPU's) measured matrix-multiply peak, fp32 and bf16, in GFLOP/s;
* the model's forward FLOPs per image (counted by ``torch.utils.flop_counter``; a training step is about 3x);
* images/s of the model's forward + backward + SGD step alone, and of the whole training step
  (``Trainer.train_step``: augmentation, model, the full softmax over n bank rows, backward, SGD, bank update),
  for ``--precision fp32 --memory-format contiguous`` (the trainer before the fast path) and for ``auto``;
* the fraction of the measured peak each achieves (3 x forward FLOPs x images/s / peak).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from instdisc_lesson.data import InstanceDataset
from instdisc_lesson.precision import autocast
from instdisc_lesson.recipe import quick_config
from instdisc_lesson.trainer import Trainer
from instdisc_lesson.validate import trusted


def timed(fn, steps, sync):
    fn()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device, dtype, size=2048, steps=10):
    """GFLOP/s of a square matrix multiply: the most this machine does per second in ``dtype``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return 2 * size ** 3 / timed(lambda: a @ b, steps, sync) / 1e9


def forward_flops(model, device):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, 32, 32, device=device)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train()
    return counter.get_total_flops()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="convnet")
    p.add_argument("--objective", default="softmax")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    data = InstanceDataset((torch.rand(a.n, 3, 32, 32, generator=g) * 255).to(torch.uint8), torch.arange(a.n) % 10)
    rows = {}
    for label, prec, fmt in (("fp32, contiguous (before)", "fp32", "contiguous"), ("auto", "auto", "auto")):
        cfg = quick_config(model=a.model, objective=a.objective, batch_size=a.batch_size, nce_m=min(4096, a.n - 1),
                           bank_init="random", precision=prec, memory_format=fmt)
        trainer = Trainer(cfg, data, None, device=a.device, progress=False)
        device = trainer.device
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def whole_step():
            idx = torch.randint(0, a.n, (a.batch_size,), generator=trainer.gen, device=device)
            with trusted():
                trainer.train_step(idx)

        x = trainer.view(torch.arange(a.batch_size, device=device))

        def model_step():
            with autocast(device, trainer.cfg.precision):
                out = trainer.net(x).float()
            trainer.optimizer.zero_grad(set_to_none=True)
            out.sum().backward()
            trainer.optimizer.step()

        rows[label] = (trainer.cfg.precision, trainer.cfg.memory_format,
                       a.batch_size / timed(model_step, a.steps, sync), a.batch_size / timed(whole_step, a.steps, sync))
    flops = forward_flops(trainer.model, device)
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    print(f"{a.model} on {device.type} ({a.threads} threads), batch {a.batch_size}, n = {a.n}, objective {a.objective}")
    print(f"  matrix-multiply peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s (measured now)")
    print(f"  model: {flops / 1e6:.1f} MFLOP forward per image (a training step: about 3x)")
    base = rows["fp32, contiguous (before)"][3]
    for label, (prec, fmt, model_ips, step_ips) in rows.items():
        used = lambda ips: 3 * flops * ips / 1e9 / peaks[prec]
        print(f"  {label:>26} -> {prec}, {fmt}: model alone {model_ips:7.0f} img/s ({used(model_ips):5.1%} of the {prec} peak); "
              f"whole step {step_ips:7.0f} img/s ({used(step_ips):5.1%}); {step_ips / base:.2f}x the fp32 step")


if __name__ == "__main__":
    main()
