"""What a run will cost on this machine, measured before it starts. Taught in notebook 06.

:func:`step_seconds` times any step it is given; :func:`time_steps` gives it a Trainer's own step and undoes
the steps afterwards (the Trainer's ``state_dict`` saved before and loaded after), so the run goes on exactly
as if nothing had been measured. The evaluations cost what the untrained network's evaluation took.
``recipe.time_epochs`` turns that into the number of epochs a time budget allows.
"""
from __future__ import annotations

import copy
import time

import torch

from .samplers import batches
from .validate import trusted

MIN_SECONDS = 0.5  # a few steps of a small batch vary by tens of percent from one timing to the next: time longer
MAX_STEPS = 40


def step_seconds(step, steps: int = 3) -> float:
    """The median time of ``step()`` over at least ``steps`` calls after one warm-up call (allocations, kernels),
    more while they have taken under ``MIN_SECONDS`` (at most ``MAX_STEPS``). ``step`` must wait for its own work
    to finish (e.g. read its loss), or the time is only that of queueing it."""
    times = []
    while len(times) < steps + 1 or (sum(times[1:]) < MIN_SECONDS and len(times) < MAX_STEPS + 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def time_steps(trainer, steps: int = 3) -> float:
    """Seconds per training step of ``trainer`` (one global batch), the steps undone. Call it before adding step
    hooks: a hook would see the timed steps."""
    saved = copy.deepcopy(trainer.state_dict())
    batch = torch.arange(min(trainer.cfg.batch_size, len(trainer.images)), device=trainer.device)
    try:
        with trusted():
            return step_seconds(lambda: float(trainer.step(batch)), steps)
    finally:
        trainer.load_state_dict(saved)


def expected_seconds(trainer, step_seconds: float, eval_seconds: float, epochs: int | None = None) -> dict:
    """What the remaining epochs of ``trainer`` (to ``epochs``, default ``cfg.epochs``) will cost at ``step_seconds``
    a step and ``eval_seconds`` a kNN evaluation: ``{"seconds", "step_seconds", "eval_seconds", "steps",
    "evaluations", "steps_per_epoch"}``."""
    cfg = trainer.cfg
    target = cfg.epochs if epochs is None else epochs
    epoch_size = trainer.objective.epoch_size(len(trainer.images))
    per_epoch = len(batches(torch.arange(epoch_size), cfg.batch_size, min_size=2 * trainer.world))
    n_steps = max(target - trainer.epoch, 0) * per_epoch
    evaluations = 0 if trainer.test_set is None else sum(
        1 for e in range(trainer.epoch + 1, target + 1) if e % cfg.eval_every == 0 or e == target)
    return {"seconds": n_steps * step_seconds + evaluations * eval_seconds, "step_seconds": step_seconds,
            "eval_seconds": eval_seconds, "steps": n_steps, "evaluations": evaluations, "steps_per_epoch": per_epoch}
