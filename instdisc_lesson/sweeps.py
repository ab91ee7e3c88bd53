"""A grid of short training runs, precomputed once so that notebook sliders redraw instantly.

Taught in notebook 03. Training the ConvNet for every slider position is too slow for a CPU, so the
notebook runs the whole grid once (a few hundred images, a few epochs each) and the sliders only
pick which precomputed curves to draw.
"""
from __future__ import annotations

from dataclasses import replace

from .data import InstanceDataset
from .recipe import TrainConfig
from .trainer import Trainer


def step_losses(cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset | None = None) -> dict:
    """Train ``cfg`` and return ``{"loss": per-step losses, "history": per-epoch history, "baselines": ...}``."""
    trainer = Trainer(cfg, train, test, progress=False)
    losses = []
    trainer.step_hooks.append(lambda t, idx, f: losses.append(t.step_loss))  # tensors: read once, at the end
    trainer.fit()
    return {"loss": [float(x) for x in losses], "history": trainer.history, "baselines": trainer.monitor.baselines}


def grid_runs(base: TrainConfig, train: InstanceDataset, test: InstanceDataset | None = None, **axes) -> dict:
    """Run ``base`` with every combination of the given axes, e.g. ``grid_runs(cfg, data, tau=[...], nce_m=[...])``.

    Returns ``{(value_1, value_2, ...): step_losses(...)}`` keyed in the order the axes were given.
    """
    keys = [()]
    for values in axes.values():
        keys = [k + (v,) for k in keys for v in values]
    return {k: step_losses(replace(base, **dict(zip(axes, k))), train, test) for k in keys}
