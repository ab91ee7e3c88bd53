"""Refuse early, leave nothing: every check of a command line that needs neither its data nor a checkpoint.

``check(args)`` runs before anything is loaded, downloaded or written, so a mistake costs a second and leaves
no folder or file behind: the ``--out`` path, the device, that ``--data`` exists, the checkpoint's name or file,
and every value that ``TrainConfig`` (or ``semisup``) would refuse later anyway. What only the data can tell
(a batch larger than the images, kNN's k above their number) is refused once they are loaded; ``run_lock``
then removes the folders the refused run created (``checkpoint.py``).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .checkpoint import CheckpointError


ZERO_MEANS = {"train_size": "all the training images", "window": "all n", "stride": "the window's size",
              "recent_k": "all n"}  # train's counts where 0 has a meaning and a negative number has none


def check(args) -> None:
    """Refuse ``args`` (parsed by ``options.build_parser``) with one ValueError or CheckpointError, or return."""
    {"train": _train, "semisup": _semisup, "embed": _embed, "reproduce": _reproduce}[args.command](args)


def run_folder(text: str) -> Path:
    """The ``--out`` folder: ``~`` expanded; refused when empty or when it names a file."""
    if not text.strip():
        raise ValueError("--out is empty: name the run folder, e.g. --out runs/mine")
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose a folder for the run")
    return out


def _train(args) -> None:
    from .arguments import given, objective_of
    from .augment import AugmentConfig
    from .config import budget, dataset_name, is_smoke
    from .validate import check_data_source
    from .recipe import TrainConfig
    from .views import parse_augment

    budget(), is_smoke()  # a misspelt INSTDISC_BUDGET or INSTDISC_SMOKE
    out = run_folder(args.out)
    if (out / "checkpoint.pt").exists() and not args.resume:
        raise CheckpointError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    _device(args.device)
    check_data_source(args.data or dataset_name())
    settings = {"objective": objective_of(args), **given(args)}  # another objective's option is refused here
    for name, zero in ZERO_MEANS.items():
        if settings.get(name, 0) < 0:
            raise ValueError(f"{name}={settings[name]} must be >= 0 (--{name.replace('_', '-')}; 0: {zero})")
    if settings.get("nce_m", 1) < 1:
        raise ValueError(f"nce_m: m={settings['nce_m']} noise samples must be at least 1 (--nce-m; at most the "
                         "number of training images - 1; the paper uses m = 4096)")
    known = {f.name for f in fields(TrainConfig)}
    TrainConfig(**{name: value for name, value in settings.items() if name in known})  # refuses each bad value
    text = (args.augment or "").strip()
    if text not in ("", "paper", "fitted"):
        parse_augment(text, AugmentConfig())


def _semisup(args) -> None:
    from .config import dataset_name
    from .validate import check_data_source
    from .validate import check_positive_int

    run_folder(args.out)
    if not 0 < args.fraction <= 1:
        raise ValueError(f"fraction={args.fraction} must lie in (0, 1]: the share of training images whose labels are "
                         "used (--fraction), e.g. 0.01")
    check_positive_int("steps", args.steps, "--steps")
    if args.eval_every < 0:
        raise ValueError(f"eval_every={args.eval_every} must be >= 0 (--eval-every; 0: at the end only)")
    _device(args.device)
    check_data_source(args.data or dataset_name())
    _checkpoint(args.checkpoint)


def _embed(args) -> None:
    folder = Path(args.data).expanduser()
    if folder.is_file():
        raise ValueError(f"--data {args.data} is a file: give the folder of images to embed")
    if not folder.is_dir():
        raise ValueError(f"--data {args.data}: the folder {folder.absolute()} does not exist; give a folder of images")
    if not args.out.strip():
        raise ValueError("--out is empty: name the .npz file to write, e.g. --out features.npz")
    if Path(args.out).expanduser().is_dir():
        example = Path(args.out) / "features.npz"
        raise ValueError(f"--out {args.out} is a folder: name the .npz file to write, e.g. --out {example}")
    _device(args.device)
    _checkpoint(args.checkpoint)


def _reproduce(args) -> None:
    """Every row's train command, as ``_train`` checks it, and no row folder holding a run finished with other
    settings (the row names and --epochs were checked by argparse)."""
    from .reproduce import chosen, finished, train_args

    run_folder(args.out)
    _device(args.device)
    for run in chosen(args):
        row = train_args(run, args)
        _train(row)
        finished(row)


def _device(name: str | None) -> None:
    from .config import get_device

    if name is not None:
        get_device(name)  # refuses a device that is not here (cuda without a GPU, mps off a Mac)


def _checkpoint(text: str) -> None:
    """'shipped', 'shipped:NAME' of a shipped checkpoint, or a file that exists (read later, when it is loaded)."""
    from . import pretrained

    if text == "shipped" or text.startswith("shipped:"):
        pretrained.shipped(text.partition(":")[2] or pretrained.DEFAULT)
    elif not Path(text).expanduser().is_file():
        raise ValueError(f"--checkpoint {text}: no such file; give a train run's checkpoint.pt, or 'shipped'")
