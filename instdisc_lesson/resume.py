"""A run's checkpoint: what a :class:`~instdisc_lesson.trainer.Trainer` saves after every epoch, and the checks
that let a run resume only where it is the same run. Taught in notebook 06.

The state is plain ``state_dict``s (network, objective, optimizer, scheduler), the random streams, the
history and the monitor's baselines, beside the config and a fingerprint of the training images; the file
is written atomically (``checkpoint.save_checkpoint``), so an interrupted run resumes from its last complete
epoch with the same result. Every checkpoint of the course is read by ``checkpoint.load_checkpoint``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import distributed as dist
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .precision import set_layout
from .recipe import TrainConfig

STATE_KEYS = ("config", "n", "epoch", "model", "objective", "optimizer", "scheduler", "generator", "history", "baselines")
RESUMABLE_CHANGES = ("eval_every", "compile")  # settings a resumed run may change: they do not change what is trained


def fingerprint(dataset) -> str:
    """SHA-256 of the training images and labels (first 16 hex digits): tells two data sets of one size apart."""
    digest = hashlib.sha256(dataset.images.numpy().tobytes())
    digest.update(dataset.labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def state_of(trainer) -> dict:
    """The run's state. Under torchrun every rank must call it: it gathers each rank's random stream."""
    state = {
        "config": trainer.cfg.to_dict(), "n": len(trainer.train_set), "data": trainer.data_fingerprint(),
        "epoch": trainer.epoch, "model": trainer.model.state_dict(), "objective": trainer.objective.state_dict(),
        "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
        "generator": trainer.gen.get_state(), "history": trainer.history, **trainer.monitor.state_dict(),
        "kept_epoch": trainer.kept()["epoch"],
    }
    if trainer.world > 1:
        mine = trainer.gen.get_state().to(trainer.device)
        state["rank_generators"] = [row.clone() for row in dist.all_gather_cat(mine.view(1, -1)).cpu()]
    return state


def save(trainer, path) -> None:
    """Write the checkpoint (under torchrun: every rank calls this, rank 0 alone writes)."""
    state = state_of(trainer)
    if trainer.rank == 0:
        save_checkpoint(path, state)
    dist.barrier()  # when save returns, every rank can read the file


def restore(trainer, state: dict) -> None:
    """Put back a state from :func:`state_of` (checked by the caller)."""
    trainer.model.load_state_dict(state["model"])
    trainer.objective.load_state_dict(state["objective"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.gen.set_state(state["rank_generators"][trainer.rank] if trainer.world > 1 else state["generator"])
    trainer.epoch, trainer.history = state["epoch"], state["history"]
    trainer.monitor.load_state_dict(state)


def load(trainer, path) -> None:
    """Resume the run saved in ``path``, checked first: it must be a trainer's checkpoint, made with the same
    settings (``RESUMABLE_CHANGES`` aside) on the same training images. Nothing changes when it is refused."""
    state = load_checkpoint(path)
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint written by this course's trainer (it lacks "
                              f"{', '.join(missing)}): choose another --out folder, or move the file away")
    if state["n"] != len(trainer.train_set):
        raise CheckpointError(f"checkpoint {path} was made for {state['n']} training images, this dataset has "
                              f"{len(trainer.train_set)}: use another --out folder")
    mine = trainer.cfg.to_dict()
    # Settings added since it was saved take their defaults, also inside nested settings (the views' rotate).
    saved = TrainConfig.from_dict({**TrainConfig().to_dict(), **state["config"]}).to_dict()
    for key in ("precision", "memory_format"):  # asked for "auto": the run goes on as it was chosen when it started
        if getattr(trainer.requested, key) == "auto":
            mine[key] = saved[key]
    if saved["world_size"] != trainer.cfg.world_size:
        raise CheckpointError(
            f"checkpoint {path} was made by {saved['world_size']} process(es) and this run has {trainer.cfg.world_size}: "
            "each process's shard and random stream belong to that number. Resume with "
            + ("plain python -m instdisc_lesson (no torchrun)" if saved["world_size"] == 1 else
               f"torchrun --nproc_per_node {saved['world_size']}") + ", or use another --out folder")
    changed = [key for key in mine if key not in RESUMABLE_CHANGES and saved.get(key) != mine[key]]
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was made with {', '.join(f'{k}={saved.get(k)!r}' for k in changed)}; this run has "
            f"{', '.join(f'{k}={mine[k]!r}' for k in changed)}. Resuming would mix two different runs: "
            "repeat the checkpoint's settings, or use another --out folder")
    if state.get("data", trainer.data_fingerprint()) != trainer.data_fingerprint():
        raise CheckpointError(f"checkpoint {path} was made on other training images ({state['n']} of them, like "
                              "these, but different): use another --out folder")
    if (mine["precision"], mine["memory_format"]) != (trainer.cfg.precision, trainer.cfg.memory_format):
        trainer.cfg = dataclasses.replace(trainer.cfg, precision=mine["precision"], memory_format=mine["memory_format"])
        set_layout(trainer.model, trainer.cfg.memory_format)
    restore(trainer, state)


def back_to_last(trainer) -> None:
    """After a non-finite epoch: the trainer back to the last complete epoch's checkpoint, if it wrote one."""
    path = trainer.out_dir / "checkpoint.pt" if trainer.out_dir is not None else None
    if path is not None and path.exists():
        restore(trainer, load_checkpoint(path))


def write_history(trainer) -> None:
    """``history.json`` beside the checkpoint: every epoch's numbers, the baselines, the timings (rank 0)."""
    if trainer.out_dir is not None and trainer.rank == 0:
        text = json.dumps({"history": trainer.history, "baselines": trainer.baselines, "timings": trainer.timings},
                          indent=2)
        atomic_write(trainer.out_dir / "history.json", lambda tmp: Path(tmp).write_text(text))


def saved_config(path) -> TrainConfig | None:
    """The config a checkpoint's run was started with; None when it is unreadable (resuming explains why)."""
    try:
        return TrainConfig.from_dict(load_checkpoint(path)["config"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def kept_network(state: dict) -> dict:
    """The weights a ``train`` checkpoint's run ended with: the untrained network's where training made it worse."""
    return state["untrained"]["model"] if state.get("kept_epoch") == 0 and state.get("untrained") else state["model"]
