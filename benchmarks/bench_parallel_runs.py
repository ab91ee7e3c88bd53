"""Two training runs at once, one thread each, against one run with every thread: which trains more images/s?

    python benchmarks/bench_parallel_runs.py [--objectives softmax nce] [--steps 40]

For queueing long records on a small CPU (``make_records.py``; issue 28). For each objective it times
``Trainer.train_step`` of the paper's recipe (``paper_config``, the small ConvNet, bf16 + channels-last, batch
128, 50,000 synthetic images in the bank) in a fresh process with all threads, then in two processes started
together with one thread each, and prints images/s and the ratio. Measured in one run, with nothing else
running: only the ratio carries over to another machine or load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch


def one_process(objective: str, steps: int) -> float:
    """Images/s of training steps in this process (its thread count is the caller's)."""
    from instdisc_lesson.data import InstanceDataset
    from instdisc_lesson.recipe import paper_config
    from instdisc_lesson.trainer import Trainer
    from instdisc_lesson.validate import trusted

    cfg = paper_config(objective=objective, model="convnet", precision="bf16", memory_format="channels_last",
                       **({"nce_m": 4096} if objective == "nce" else {}))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=g)
    trainer = Trainer(cfg, InstanceDataset(images, torch.randint(0, 10, (50_000,), generator=g)), None, device="cpu",
                      progress=False)
    order, times = torch.randperm(50_000, generator=g), []
    with trusted():
        for step in range(steps + 3):  # three warm-up steps
            start = time.perf_counter()
            float(trainer.train_step(order[step * 128:(step + 1) * 128]))
            if step >= 3:
                times.append(time.perf_counter() - start)
    return cfg.batch_size / statistics.median(times)


def measure(objective: str, steps: int, threads: int, copies: int) -> list[float]:
    """Images/s of each of ``copies`` processes started together with ``threads`` threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", objective, "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["softmax", "nce"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(one_process(args.child, args.steps))
        return
    cores = os.cpu_count()
    print(f"{cores} cores, torch {torch.__version__}; the paper's recipe, small ConvNet, bf16 + channels-last, batch 128")
    for objective in args.objectives:
        alone = measure(objective, args.steps, cores, 1)[0]
        split = measure(objective, args.steps, 1, cores)
        print(f"{objective:>8}: one process, {cores} threads {alone:,.0f} img/s | {cores} processes, 1 thread each "
              f"{' + '.join(f'{v:,.0f}' for v in split)} = {sum(split):,.0f} img/s | {sum(split) / alone:.2f}x")


if __name__ == "__main__":
    main()
