"""A run's config, resolved once at the edge, before its Trainer is built. Taught in notebook 06.

What a config leaves open is decided here and written into the frozen TrainConfig that the run then trains,
saves and resumes with; nothing changes it afterwards:

- :func:`precision`: "auto" precision and memory layout, the fastest on this machine, timed on the run's own
  untrained network and a batch of its views (``precision.py``);
- :func:`time_cap`: the epochs a default run may train on a CPU (``recipe.time_epochs``), from a few steps of
  the run timed on a first Trainer built from the same config and then dropped (``cost.py``);
- :func:`as_saved`: a resumed run takes what was decided when it started, so it matches its checkpoint.

The CLI (``cli.start``) and the notebooks' cache-or-train (:func:`load_or_train`) are the edges that call these.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from . import cost, distributed as dist, precision as modes, recipe, resume
from .augment import augment
from .checkpoint import CheckpointError
from .config import get_device
from .models import build_encoder
from .recipe import TrainConfig


def precision(cfg: TrainConfig, train, device=None) -> tuple[TrainConfig, dict | None]:
    """``(cfg, timings)``: ``cfg`` with "auto" precision or layout replaced by the fastest here, and what each
    candidate took (``{"precision_seconds": {...}}``; None when nothing was open). Under torchrun rank 0 decides
    for every process."""
    if "auto" not in (cfg.precision, cfg.memory_format):
        return cfg, None
    device = get_device(device)
    images = train.images[:cfg.batch_size].to(device)
    model, _ = build_encoder(cfg, images, device)
    sample = augment(images, cfg.augment, torch.Generator(device).manual_seed(cfg.seed))
    cfg, timings = modes.resolve(cfg, model, sample, device, dist.broadcast)
    return cfg, {"precision_seconds": timings}


def time_cap(cfg: TrainConfig, train, test, device, eval_every_given: bool) -> tuple[TrainConfig, dict, str]:
    """``(cfg, measured, why)``: ``cfg`` with as many epochs as fit in the time a default run may take here (kNN
    every tenth of them unless ``eval_every_given``), ``measured`` the step time and the untrained network's kNN
    state, for the run to reuse. A first Trainer of ``cfg`` is timed (its steps undone) and dropped: the run's own
    Trainer is then built once, with its final epochs, so its lr schedule is never rewritten."""
    from .trainer import Trainer

    probe = Trainer(cfg, train, test, device=device, progress=False)
    probe.monitor.baseline(probe.model, 0, probe.evaluate)
    step_seconds = cost.time_steps(probe)
    epochs, why = recipe.time_epochs(cost.expected_seconds(probe, step_seconds, probe.monitor.eval_seconds or 0.0))
    cfg = dataclasses.replace(cfg, epochs=epochs, eval_every=cfg.eval_every if eval_every_given else max(1, epochs // 10))
    return cfg, {"step_seconds": step_seconds, "monitor": probe.monitor.state_dict()}, why


def as_saved(cfg: TrainConfig, saved: TrainConfig | None, also: tuple = ()) -> TrainConfig:
    """``cfg`` with the saved run's precision and layout where ``cfg`` left them "auto", and its values of the
    fields ``also`` (the epochs a time cap chose): what was decided when the run started holds when it resumes."""
    if saved is None:
        return cfg
    open_fields = [name for name in ("precision", "memory_format") if getattr(cfg, name) == "auto"]
    return dataclasses.replace(cfg, **{name: getattr(saved, name) for name in (*open_fields, *also)})


def load_or_train(cfg: TrainConfig, train, test, out_dir, progress: bool = True):
    """Cache-or-train: resume (or just load) the run in ``out_dir`` if its config matches, else train it there."""
    from .trainer import Trainer

    ckpt = Path(out_dir) / "checkpoint.pt"
    cfg, timings = precision(as_saved(cfg, resume.saved_config(ckpt) if ckpt.exists() else None), train)
    trainer = Trainer(cfg, train, test, out_dir=out_dir, progress=progress, timings=timings)
    if ckpt.exists():
        try:
            resume.load(trainer, ckpt)  # the cached run, if it is this config's on this data
        except CheckpointError:
            pass  # another run, or unreadable: this folder is a cache, so train afresh and replace it
    trainer.fit()
    return trainer
