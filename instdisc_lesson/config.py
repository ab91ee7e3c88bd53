"""Configuration shared by every notebook: the budget, the device, seeding and paths.

Taught in notebook 00. Nothing heavy is imported here, so ``import instdisc_lesson`` stays fast.

The **budget** says how much a notebook may compute, read from ``INSTDISC_BUDGET``:

    quick   CPU, offline: the generated quick set and the small ConvNet, about a minute per notebook;
    gpu     real CIFAR-10, minutes per notebook on a Colab-class GPU; long results from the records;
    paper   the paper's full runs, which start only when asked for explicitly (CLI, or a cell switched on).

Unset, it is ``quick`` when ``CI`` is set or no CUDA GPU is present, else ``gpu``. ``INSTDISC_QUICK=1``
(or ``0``) is kept as another way to say ``quick`` (or ``paper``). ``INSTDISC_SMOKE=1`` shrinks any
budget to seconds (a few hundred images, one epoch) without changing which code runs: the tests run
the ``gpu`` path of every notebook that way, on a CPU, against small CIFAR-10-format files.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


BUDGETS = ("quick", "gpu", "paper")


def budget() -> str:
    """``"quick"``, ``"gpu"`` or ``"paper"``: how much the notebooks may compute (see the module's docstring).

    Order of precedence: ``INSTDISC_BUDGET``, then ``INSTDISC_QUICK`` (1: quick, 0: paper), then ``CI``
    (set means quick), then the hardware (a CUDA GPU means gpu, else quick).
    """
    chosen = os.environ.get("INSTDISC_BUDGET")
    if chosen is not None and chosen.strip():
        value = chosen.strip().lower()
        if value not in BUDGETS:
            raise ValueError(f"INSTDISC_BUDGET={chosen!r} is not a budget: use quick (CPU, about a minute per notebook), "
                             "gpu (real CIFAR-10, minutes on a GPU) or paper (full runs, started explicitly)")
        return value
    flag = os.environ.get("INSTDISC_QUICK")
    if flag is not None:
        value = flag.strip().lower()
        if value in _TRUE:
            return "quick"
        if value in _FALSE:
            return "paper"
        raise ValueError(f"INSTDISC_QUICK={flag!r} is not understood: use 1 (the quick budget) or 0 (the paper budget), "
                         "or set INSTDISC_BUDGET to quick, gpu or paper")
    if os.environ.get("CI"):
        return "quick"
    return "gpu" if torch.cuda.is_available() else "quick"


def is_quick() -> bool:
    """True in the ``quick`` budget: small, offline, CPU-sized experiments."""
    return budget() == "quick"


def is_smoke() -> bool:
    """True when ``INSTDISC_SMOKE`` is on: every budget shrunk to seconds, the same code running."""
    flag = os.environ.get("INSTDISC_SMOKE", "").strip().lower()
    if flag in _TRUE:
        return True
    if flag in _FALSE:
        return False
    raise ValueError(f"INSTDISC_SMOKE={flag!r} is not understood: use 1 (seconds-long smoke runs) or 0")


def pick(quick, gpu, smoke=None):
    """This budget's value of a size (epochs, images...): ``quick``'s in the quick budget, ``gpu``'s in
    the gpu and paper budgets (a notebook never starts a paper-length run by itself), and under
    ``INSTDISC_SMOKE`` the ``smoke`` value (default: the quick one).

    Example:
        >>> EPOCHS = pick(quick=6, gpu=20, smoke=1)
    """
    if is_smoke():
        return quick if smoke is None else smoke
    return quick if is_quick() else gpu


def dataset_name() -> str:
    """The data the notebooks use in this budget: ``"quick"`` (generated, offline) or ``"cifar10"``."""
    return "quick" if is_quick() else "cifar10"


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
    mode = {"quick": "quick budget (small offline data, small ConvNet)",
            "gpu": "gpu budget (CIFAR-10, minutes per notebook)",
            "paper": "paper budget (CIFAR-10; full runs only when started explicitly)"}[budget()]
    smoke = " | SMOKE: sizes shrunk to seconds" if is_smoke() else ""
    return f"device: {name} | {mode}{smoke} | torch {torch.__version__}"


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
