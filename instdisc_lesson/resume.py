"""A run's checkpoint: what a :class:`~instdisc_lesson.trainer.Trainer` saves after every epoch, and the checks
that let a run resume only where it is the same run. Taught in notebook 06.

The state is the Trainer's own (``Trainer.state_dict``: network, objective, optimizer, scheduler, the random
streams, the history and the monitor's baselines, beside the resolved config and a fingerprint of the training
images); this module keeps the file and the checks. The file is written atomically (``checkpoint.save_checkpoint``), so an interrupted run resumes from its last complete
epoch with the same result. Every checkpoint of the course is read by ``checkpoint.load_checkpoint``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import distributed as dist
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .recipe import TrainConfig

STATE_KEYS = ("config", "n", "epoch", "model", "objective", "optimizer", "scheduler", "generator", "history", "baselines")
RESUMABLE_CHANGES = ("eval_every", "compile")  # settings a resumed run may change: they do not change what is trained


def fingerprint(dataset) -> str:
    """SHA-256 of the training images and labels (first 16 hex digits): tells two data sets of one size apart."""
    digest = hashlib.sha256(dataset.images.numpy().tobytes())
    digest.update(dataset.labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def save(trainer, path) -> None:
    """Write ``trainer.state_dict()`` to ``path`` (under torchrun: every rank calls this, rank 0 alone writes)."""
    state = trainer.state_dict()
    if trainer.rank == 0:
        save_checkpoint(path, state)
    dist.barrier()  # when save returns, every rank can read the file


def load(trainer, path) -> None:
    """Resume the run saved in ``path``, checked first: it must be a trainer's checkpoint, made with the same resolved
    config (``RESUMABLE_CHANGES`` aside) on the same training images. Nothing changes when it is refused; the edge
    that built the config took what the run decided when it started ("auto", a time cap) from it (``resolve.as_saved``)."""
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
    saved = TrainConfig.from_dict({**TrainConfig(objective=mine["objective"]).to_dict(), **state["config"]}).to_dict()
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
    if state.get("data", trainer.fingerprint) != trainer.fingerprint:
        raise CheckpointError(f"checkpoint {path} was made on other training images ({state['n']} of them, like "
                              "these, but different): use another --out folder")
    trainer.load_state_dict(state)


def last_state(out_dir) -> dict | None:
    """The last complete epoch's state in ``out_dir`` (after a non-finite epoch the trainer goes back to it), if any."""
    path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    return load_checkpoint(path) if path is not None and path.exists() else None


def write_history(trainer) -> None:
    """``history.json`` beside the checkpoint: every epoch's numbers, the baselines, the timings (rank 0)."""
    if trainer.out_dir is not None and trainer.rank == 0:
        text = json.dumps({"history": trainer.history, "baselines": trainer.monitor.baselines, "timings": trainer.timings},
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
