"""Training throughput (images/s): the whole pipeline against the model's forward+backward alone.

    python benchmarks/bench_throughput.py [--model convnet] [--n 5000] [--batch-size 128] [--steps 20]

Pipeline = index a uint8 batch on the device, augment it per sample, forward, objective (the full
non-parametric softmax over n bank rows), backward, SGD step, bank update: ``Trainer.train_step`` and the
rest of ``Trainer.train_epoch``'s body. Bare = forward + backward + SGD step of the same model on
a pre-made float batch. The gap is what the data pipeline and the objective cost.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from instdisc_lesson.data import InstanceDataset
from instdisc_lesson.recipe import quick_config
from instdisc_lesson.trainer import Trainer


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="convnet")
    p.add_argument("--objective", default="softmax")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--shared-negatives", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    data = InstanceDataset((torch.rand(a.n, 3, 32, 32, generator=g) * 255).to(torch.uint8), torch.arange(a.n) % 10)
    cfg = quick_config(model=a.model, objective=a.objective, batch_size=a.batch_size, nce_m=min(4096, a.n - 1),
                       bank_init="random", shared_negatives=a.shared_negatives)
    trainer = Trainer(cfg, data, None, device=a.device, progress=False)
    device = trainer.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def pipeline_step():
        idx = torch.randint(0, a.n, (a.batch_size,), generator=trainer.gen, device=device)
        trainer.train_step(idx)

    x = torch.rand(a.batch_size, 3, 32, 32, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def bare_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = trainer.model(x)
        trainer.optimizer.zero_grad(set_to_none=True)
        out.float().sum().backward()
        trainer.optimizer.step()

    t_pipe = timed(pipeline_step, a.steps, sync)
    t_bare = timed(bare_step, a.steps, sync)
    extra = f", m={cfg.nce_m}" + (" shared" if a.shared_negatives else " per-sample") if a.objective == "nce" else ""
    print(f"{a.model} on {device.type} ({a.threads} threads), batch {a.batch_size}, n={a.n}, objective {a.objective}{extra}:")
    print(f"  bare model forward+backward+step   {a.batch_size / t_bare:8.0f} images/s")
    print(f"  full pipeline                      {a.batch_size / t_pipe:8.0f} images/s")
    print(f"  pipeline overhead                  {100 * (t_pipe / t_bare - 1):8.1f} %")


if __name__ == "__main__":
    main()
