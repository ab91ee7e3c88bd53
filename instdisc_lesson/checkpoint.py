"""Checkpoints: plain ``state_dict``s with the config beside them, written atomically; one run per folder.

Taught in notebook 06. ``save_checkpoint`` writes to a temporary file in the same folder and then
renames it over the old one with ``os.replace``, which is atomic: a crash or Ctrl-C mid-save leaves
the previous checkpoint whole, never a half-written file. ``run_lock`` holds a lock on the run folder
while a run writes there, so a second process given the same folder is refused instead of mixing
its files with the first one's.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used here; the message says why and what to do."""


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)``, then move tmp over ``path`` in one step. The old file survives any failure."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError):  # a read-only folder, a full disk, ...: a message, and the old file kept
            raise CheckpointError(f"could not write {path} ({err.strerror or err}): the previous version, if any, is "
                                  "kept. Free some disk space or choose a writable --out folder") from None
        raise


def save_checkpoint(path, state: dict) -> None:
    """``torch.save(state, path)``, atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train first, or drop --resume")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}: {reason}); "
                              "delete it and train again") from None


@contextmanager
def run_lock(folder):
    """Hold ``folder/.lock`` while a run writes into ``folder``; a second run there is refused with a message.

    The lock is the operating system's (``flock``): it is released when the process ends, however it
    ends, so a killed run never leaves a stale lock behind. (Where ``fcntl`` is missing, on Windows,
    runs are not locked.)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    handle = open(folder / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CheckpointError(f"{folder} is in use by another run right now: wait for it to finish, "
                              "or choose another --out") from None
    try:
        handle.seek(0), handle.truncate(), handle.write(f"{os.getpid()}\n"), handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
