"""What a run will cost on this machine, measured before it starts. Taught in notebook 06.

A few training steps of the run's own network and batch are timed and then undone (the run's state is
saved before and put back after, so the run goes on exactly as if nothing had been measured); the
evaluations cost what the untrained network's evaluation took. ``recipe.time_epochs`` turns that into the
number of epochs a time budget allows.
"""
from __future__ import annotations

import copy
import time

import torch

from . import resume
from .samplers import batches
from .validate import trusted


def expected_seconds(trainer, epochs: int | None = None, steps: int = 3, step_seconds: float | None = None,
                     eval_seconds: float | None = None) -> dict:
    """What the remaining epochs (to ``epochs``, default ``cfg.epochs``) will cost here:
    ``{"seconds", "step_seconds", "eval_seconds", "steps", "evaluations", "steps_per_epoch"}``. With
    ``step_seconds`` (an earlier measurement) nothing is timed again; with ``eval_seconds`` (another run's on the
    same network and images, as ``reproduce`` gives) the untrained network is not evaluated."""
    cfg = trainer.cfg
    target = cfg.epochs if epochs is None else epochs
    if eval_seconds is None:
        trainer.baseline()
        eval_seconds = trainer.monitor.eval_seconds or 0.0
    if step_seconds is None:
        step_seconds = _time_steps(trainer, steps)
    per_epoch = len(batches(torch.arange(trainer.epoch_size()), cfg.batch_size, min_size=2 * trainer.world))
    n_steps = max(target - trainer.epoch, 0) * per_epoch
    evaluations = 0 if trainer.test_set is None else sum(
        1 for e in range(trainer.epoch + 1, target + 1) if e % cfg.eval_every == 0 or e == target)
    return {"seconds": n_steps * step_seconds + evaluations * eval_seconds, "step_seconds": step_seconds,
            "eval_seconds": eval_seconds, "steps": n_steps, "evaluations": evaluations, "steps_per_epoch": per_epoch}


MIN_SECONDS = 0.5  # time steps for at least this long: three steps of a small batch are too few to trust
MAX_STEPS = 40


def _time_steps(trainer, steps: int) -> float:
    """The median time of at least ``steps`` training steps (after one warm-up step), more while they have
    taken under ``MIN_SECONDS`` (at most ``MAX_STEPS``), with the run's state put back. Measured: three steps
    of batch 16 on 2,500 digits timed 14 ms before one run and 10 ms before another, and both runs then took
    14 ms a step, so the second overran its time by 40 %: the median of more steps is steadier."""
    saved = copy.deepcopy(resume.state_of(trainer))
    hooks, trainer.step_hooks = trainer.step_hooks, []  # the timed steps are not part of the run: no hook sees them
    batch = torch.arange(min(trainer.cfg.batch_size, len(trainer.images)), device=trainer.device)
    times = []
    while len(times) < steps + 1 or (sum(times[1:]) < MIN_SECONDS and len(times) < MAX_STEPS + 1):
        start = time.perf_counter()  # the first step warms up (allocations, kernels) and is not counted
        with trusted():
            float(trainer.train_step(batch.tensor_split(trainer.world)[trainer.rank]))  # waits for the step to finish
        times.append(time.perf_counter() - start)
    resume.restore(trainer, saved)
    trainer.step_hooks = hooks
    return sorted(times[1:])[len(times[1:]) // 2]

