"""Configuration shared by every notebook: quick mode, the device, seeding and paths.

Taught in notebook 00. Nothing heavy is imported here, so ``import instdisc_lesson`` stays fast.

Quick mode is one switch, read from the environment:
``INSTDISC_QUICK=1`` turns it on, ``INSTDISC_QUICK=0`` turns it off, and when the variable is
unset it is on whenever ``CI`` is set or no GPU is available. Quick mode picks the offline quick
dataset, a few epochs and the small ConvNet, so every notebook finishes in about a minute on a CPU.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def is_quick() -> bool:
    """True when the course should run its small, offline, CPU-sized experiments.

    Order of precedence: ``INSTDISC_QUICK`` (1/0), then ``CI`` (set means quick), then the hardware
    (no CUDA GPU means quick).
    """
    flag = os.environ.get("INSTDISC_QUICK")
    if flag is not None:
        value = flag.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"INSTDISC_QUICK={flag!r} is not understood: use 1 (quick mode) or 0 (full mode)")
    if os.environ.get("CI"):
        return True
    return not torch.cuda.is_available()


def get_device(prefer: str | None = None) -> torch.device:
    """The best device here: CUDA, then Apple MPS, then CPU (or ``prefer`` when given)."""
    if prefer is not None:
        try:
            device = torch.device(prefer)
        except (RuntimeError, ValueError):
            raise ValueError(f"--device {prefer!r} is not a device: use cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
            raise ValueError(f"--device {prefer}: no such CUDA GPU here ({torch.cuda.device_count()} visible); "
                             "use --device cpu, or leave --device out to use the best device available")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError(f"--device {prefer}: Apple's MPS is not available here; use --device cpu or leave --device out")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_setup() -> str:
    """One line for the top of every notebook: device and mode."""
    device = get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    mode = "quick mode (small offline data, small ConvNet)" if is_quick() else "full mode (CIFAR-10, paper settings)"
    return f"device: {name} | {mode} | torch {torch.__version__}"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch so a run can be repeated; returns a CPU generator seeded alike."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is a dependency, but seeding must never be the thing that fails
        pass
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# The course's repository, named once: the notebooks' Colab badges and install lines are checked against
# it by tests/test_notebooks.py, so moving the course means changing this line and rewriting those.
REPO = "instdisc-course/instdisc-lesson"
REPO_URL = f"https://github.com/{REPO}"
PIP_SPEC = f"instdisc-lesson[course] @ git+{REPO_URL}"  # what a notebook's setup cell installs in Colab


def project_root() -> Path:
    """Where ``runs/`` and ``data/`` go by default: the course checkout when the package runs from one
    (an editable install, or the source tree), else the current working directory, never site-packages."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout
    return Path.cwd()


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: the argument, else ``$INSTDISC_DATA``, else ``data/`` beside the course (see ``project_root``)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("INSTDISC_DATA")
    if env:
        return Path(env).expanduser()
    return project_root() / "data"


def runs_root() -> Path:
    """Where the notebooks cache their trained runs: ``$INSTDISC_RUNS``, else ``runs/`` beside the course."""
    env = os.environ.get("INSTDISC_RUNS")
    return Path(env).expanduser() if env else project_root() / "runs"
