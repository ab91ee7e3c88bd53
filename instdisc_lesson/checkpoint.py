"""Checkpoints: plain ``state_dict``s with the config beside them, written atomically; one run per folder.

Taught in notebook 06. ``save_checkpoint`` writes to a temporary file in the same folder and then
renames it over the old one with ``os.replace``, which is atomic: a crash or Ctrl-C mid-save leaves
the previous checkpoint whole, never a half-written file. ``run_lock`` holds a lock on the run folder
while a run writes there, so a second process given the same folder is refused instead of mixing
its files with the first one's.
"""
from __future__ import annotations

import errno
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used here; the message says why and what to do."""


def refused(path, err: OSError, what: str = "write") -> CheckpointError:
    """One line for a write the operating system refused: which folder, why, and what to do."""
    folder = Path(path) if what == "create" else Path(path).parent
    reasons = {
        errno.EROFS: ("the file system is read-only", "choose an --out folder on a writable disk"),
        errno.ENOSPC: ("the disk is full", "free some disk space and run again with --resume, or choose another --out"),
        errno.EDQUOT: ("the disk quota is used up", "free some space and run again with --resume, or choose another --out"),
        errno.EACCES: ("permission denied", "choose an --out folder you may write to"),
        errno.EPERM: ("the operation is not permitted (an immutable or protected folder?)",
                      "choose another --out folder"),
        errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another --out"),
        errno.EEXIST: ("a part of the path is a file, not a folder", "choose another --out"),
    }
    why, todo = reasons.get(err.errno, (err.strerror or str(err), "choose another --out folder"))
    target = f"create {folder}" if what == "create" else f"{what} {Path(path).name} in {folder}"
    return CheckpointError(f"cannot {target}: {why}. {todo[0].upper() + todo[1:]}; anything saved there before is kept")


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)``, then move tmp over ``path`` in one step. The old file survives any failure,
    and a write the system refuses (read-only, full, not permitted) ends in one :func:`refused` line."""
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
            raise refused(path, err) from None
        raise


def save_checkpoint(path, state: dict) -> None:
    """``torch.save(state, path)``, atomically. The state is serialised in memory first and then written as
    bytes, so a full disk is an ordinary ``OSError`` (torch's own writer reports it as an obscure RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


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
    ends, so a killed run never leaves a stale lock behind, and a run that ends removes the file. A folder
    the system refuses to create or write (read-only, not permitted, a file in the path) ends in one
    :func:`refused` line. A run refused or stopped before it wrote anything leaves nothing behind: the folders
    created here (``folder`` and any missing parents) are removed again while empty. (Where ``fcntl`` is
    missing, on Windows, runs are not locked.)
    """
    folder = Path(folder)
    created = _missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _remove_empty(created)
        raise refused(folder, err, "create") from None
    try:
        with _flock(folder):
            yield
    except BaseException:
        _remove_empty(created)
        raise


def _missing(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, the innermost first."""
    missing = []
    for path in (folder, *folder.absolute().parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (the innermost first) while they are empty; stop at the first that is not."""
    for path in folders:
        try:
            path.rmdir()
        except OSError:
            return


@contextmanager
def _flock(folder: Path):
    """``folder/.lock``, created and held (``flock``) for the block, removed after it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = folder / ".lock"
    try:
        handle = open(lock, "a+")
    except OSError as err:
        raise refused(lock, err) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(handle.fileno()).st_ino != os.stat(lock).st_ino:  # the holder removed it as we opened it
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        handle.close()
        raise CheckpointError(f"{folder} is in use by another run right now: wait for it to finish, "
                              "or choose another --out") from None
    try:
        handle.seek(0), handle.truncate(), handle.write(f"{os.getpid()}\n"), handle.flush()
        yield
    finally:
        try:
            os.remove(lock)  # removed while still held, so the next run creates (and locks) a new file
        except OSError:
            pass
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
