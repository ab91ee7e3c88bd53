"""The command line's options, and the one function that turns them into a run's TrainConfig.

Taught in notebook 06. ``build_parser()`` lists every option of ``python -m instdisc_lesson``;
``build_config(args, train)`` gives the run's :class:`~instdisc_lesson.recipe.TrainConfig`: the options
given, the rest from ``recipe.preset`` (or ``--preset paper|course``). Kept apart from ``cli.py`` so that
other modules (``pretrained.py``) can rebuild a recorded command's config without importing the commands.
"""
from __future__ import annotations

import argparse

from . import distributed as dist
from . import recipe
from .config import budget, dataset_name
from .models import MODELS
from .augment import AugmentConfig
from .recipe import TrainConfig
from .views import fitted_recipe, parse_augment
from .registry import OBJECTIVES, objective_class

# CLI option -> TrainConfig field
_OPTIONS = {"objective": "objective", "model": "model", "epochs": "epochs", "nce_m": "nce_m", "tau": "tau",
            "lr": "lr", "batch_size": "batch_size", "seed": "seed", "lam": "lam", "bank_momentum": "bank_momentum",
            "z_mode": "z_mode", "knn_k": "knn_k", "window": "window", "stride": "stride", "recent_k": "recent_k",
            "bank_init": "bank_init", "compile": "compile", "eval_every": "eval_every", "sync_batchnorm": "sync_batchnorm",
            "dim": "dim", "train_size": "train_size", "z_estimator": "z_estimator", "precision": "precision",
            "memory_format": "memory_format"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m instdisc_lesson", description="Instance discrimination (InstDisc) course tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an encoder with instance discrimination and report kNN accuracy",
                       description="Train an encoder by instance discrimination; unset options take the paper's "
                                   "defaults (full mode) or the calibrated quick-mode defaults (--data quick).")
    t.add_argument("--data", default=None, help="'quick' (offline, small), 'cifar10', or the path of an image folder "
                   "with train/<class>/* and optional test/<class>/* (default: quick in quick mode, else cifar10)")
    t.add_argument("--data-root", default=None, help="where CIFAR-10 lives or is downloaded to (default: $INSTDISC_DATA or data/)")
    t.add_argument("--preset", choices=("paper", "course"), help="start from the paper's run as written (paper: one-shot Z, "
                   "random bank, 200 epochs; recipe.paper_config) or from it with the course's deviations (course: EMA of Z, "
                   "bank from features); default: the paper's in the gpu and paper budgets, values fitted to the data on a CPU")
    t.add_argument("--objective", choices=OBJECTIVES, help="parametric softmax (eq. 1), full non-parametric softmax (eq. 2), "
                   "NCE (eqs. 4-7), or PIC (Cao et al. 2020: cosine softmax, MLP head)")
    t.add_argument("--model", choices=MODELS, help="small ConvNet (CPU) or ResNet-18 for CIFAR (paper)")
    t.add_argument("--epochs", type=int, help="training epochs (paper: 200)")
    t.add_argument("--nce-m", type=int, help="NCE noise samples m (paper: 4096)")
    t.add_argument("--dim", type=int, help="embedding size d of the features and the bank (paper: 128)")
    t.add_argument("--train-size", type=int, help="pretrain on this many training images, a random subset (default: all); "
                   "kNN still searches every training image")
    t.add_argument("--tau", type=float, help="temperature tau (paper: 0.07)")
    t.add_argument("--lr", type=float, help="SGD learning rate (paper: 0.03)")
    t.add_argument("--batch-size", type=int, help="batch size (paper: 128)")
    t.add_argument("--lam", type=float, help="proximal weight lambda of eqs. 8-9 (default 0: off)")
    t.add_argument("--bank-momentum", type=float, help="memory-bank momentum (paper code: 0.5)")
    t.add_argument("--z-mode", choices=("ema", "once"), help="NCE normaliser Z: EMA (default) or once from the first batch (paper)")
    t.add_argument("--z-estimator", choices=("noise", "all"), help="NCE's Z from the m noise scores (eq. 7, default) "
                   "or from all 1 + m, the positive included (lemniscate's code)")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="the network's arithmetic: bf16 autocast or "
                   "fp32; auto (default, except --data quick) times both on this machine and keeps the faster")
    t.add_argument("--memory-format", choices=("auto", "contiguous", "channels_last"), help="the network's memory "
                   "layout; auto (default, except --data quick) times both with the precision")
    t.add_argument("--augment", default=None, help="the views: 'paper' (the paper's colour-photo recipe), 'fitted' (chosen "
                   "from the training images: views.py), or settings such as crop_min=0.5,p_flip=0 on top of the default "
                   "(default: fitted for an image folder, the paper's for quick and cifar10)")
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="--no-flip when the images' "
                   "orientation matters (a mirrored symbol is another symbol), --flip to force the mirror on")
    t.add_argument("--knn-k", type=int, help="neighbours for the kNN monitor (paper: 200)")
    t.add_argument("--eval-every", type=int, help="recompute kNN accuracy every N epochs (default 1; the last epoch always)")
    t.add_argument("--bank-init", choices=("random", "features"), help="start the bank (or PIC's weights) from random "
                   "vectors (paper) or the untrained network's features (quick-mode default)")
    t.add_argument("--window", type=int, help="PIC sliding window D: instances per epoch (default 0: all n)")
    t.add_argument("--stride", type=int, help="PIC window stride S (default: D)")
    t.add_argument("--recent-k", type=int, help="PIC recent negatives K (default 0: all n)")
    t.add_argument("--no-correction", dest="correction", action="store_false", default=None,
                   help="PIC: let momentum and weight decay move unsampled weight rows (off by default)")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (warm-up time reported separately)")
    t.add_argument("--sync-bn", dest="sync_batchnorm", action="store_true", default=None,
                   help="under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json and metrics.json go here")

    f = sub.add_parser("semisup", help="few labels: kNN, linear probe, fine-tuning and training from scratch on a "
                       "fraction of the labels (notebook 09)")
    f.add_argument("--data", default=None, help="'quick', 'cifar10' or an image folder, as for train (default: cifar10, "
                   "or quick in the quick budget)")
    f.add_argument("--data-root", default=None, help="where CIFAR-10 lives (default: $INSTDISC_DATA or data/)")
    f.add_argument("--checkpoint", default="shipped", help="the pretrained network: 'shipped' (the course's default "
                   "CIFAR-10 ConvNet, paper200: the paper's recipe, 200 epochs), 'shipped:60-epoch' (the first one, which "
                   "the few-labels records used), or the checkpoint.pt of a train run (the network that run kept)")
    f.add_argument("--fraction", type=float, required=True, help="share of the training labels used, e.g. 0.01")
    f.add_argument("--steps", type=int, default=600, help="SGD steps of fine-tuning and of training from scratch (default 600)")
    f.add_argument("--eval-every", type=int, default=100, help="test accuracy every N steps (default 100)")
    f.add_argument("--seed", type=int, default=0, help="which labelled images, and the training seed (default 0)")
    f.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    f.add_argument("--out", required=True, help="folder for metrics.json")
    e = sub.add_parser("embed", help="write the features of a folder of images (with their file names) to a .npz")
    e.add_argument("--checkpoint", default="shipped", help="a train run's checkpoint.pt (the network it kept), "
                   "'shipped' (the default, paper200: 200 epochs) or 'shipped:60-epoch'")
    e.add_argument("--data", required=True, help="a folder of images (read at any depth; unreadable files are left out "
                   "with a warning)")
    e.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    e.add_argument("--out", required=True, help="the .npz to write: features (n, d) float32 and files (n,) names")
    return parser


CIFAR10_SIZES = (50_000, 5_000)  # training images, and images in its smallest class
# Options an objective never reads: given on the command line, they are refused rather than silently ignored.
UNREAD = {"parametric": ("tau", "bank_init", "bank_momentum", "lam")}
NCE_ONLY = ("nce_m", "z_mode", "z_estimator")


def fits_time(args, cfg: TrainConfig) -> bool:
    """Whether the run's epochs are the defaults' to choose by this machine's time (``recipe.time_epochs``): on a CPU
    (the quick budget), for any data but the quick set, when neither --epochs nor --preset was given."""
    return cfg.data != "quick" and budget() == "quick" and args.epochs is None and getattr(args, "preset", None) is None


def build_config(args, train=None) -> TrainConfig:
    """The run's TrainConfig: the options given, the rest from the defaults of this data and budget:

    - ``--data quick``: the calibrated quick-mode settings;
    - any other data in the quick budget (a CPU): settings fitted to the training images ``train``
      (``recipe.fitted_config``; CIFAR-10's sizes are known without loading it);
    - the gpu and paper budgets: the paper's recipe (ResNet-18, NCE m = 4096, 200 epochs).
    """
    data = args.data or dataset_name()
    overrides = {field: getattr(args, opt) for opt, field in _OPTIONS.items() if getattr(args, opt) is not None}
    objective = overrides.get("objective")
    for option in UNREAD.get(objective, ()) + (NCE_ONLY if objective not in (None, "nce") else ()):
        if getattr(args, option, None) is not None:
            raise ValueError(f"--{option.replace('_', '-')} is not read by the {objective} objective"
                             + (" (eq. 1 has no temperature and no memory bank)" if objective == "parametric" else
                                " (it is an NCE setting)") + ": leave it out")
    if args.correction is not None:
        overrides["correction"] = args.correction
    if dist.world_size() > 1:  # started by torchrun: the number of processes is part of the run
        overrides["world_size"] = dist.world_size()
    if data != "quick":  # the network's precision and layout: the fastest on this machine, unless asked
        overrides = {"precision": "auto", "memory_format": "auto", **overrides}
    if train is not None and (getattr(args, "augment", None) or getattr(args, "flip", None) is not None
                              or data not in ("quick", "cifar10")):
        overrides = {**choose_views(args, data, train)[0], **overrides}  # what the user gave wins
    if getattr(args, "preset", None) == "paper":
        return recipe.paper_config(**overrides, data=data)
    if getattr(args, "preset", None) == "course":
        return recipe.course_config(**overrides, data=data)
    if train is not None:
        sizes = (len(train), int(train.labels.unique(return_counts=True)[1].min()))
    else:
        sizes = CIFAR10_SIZES if data == "cifar10" else None
    return recipe.preset(budget(), data, sizes, **overrides)


def choose_views(args, data: str, train) -> tuple[dict, list[str]]:
    """The run's augmentation, and the settings that go with it, and why: fitted to an image folder's images
    (``views.fitted_recipe``: the views; tau and batch for grey marks) unless ``--augment paper`` or ``--preset``;
    the paper's recipe for quick and cifar10; ``--augment KEY=VALUE`` and ``--flip/--no-flip`` on top.
    Returns ``({"augment": views, ...}, reasons)``; the options the user gave override these in ``build_config``."""
    text, flip = (getattr(args, "augment", None) or "").strip(), getattr(args, "flip", None)
    settings = text not in ("", "paper", "fitted")
    fit = text == "fitted" or (text != "paper" and getattr(args, "preset", None) is None and data not in ("quick", "cifar10"))
    if fit:
        objective = getattr(args, "objective", None) or recipe.FITTED_DEFAULTS["objective"]
        # the marks' tau only where the objective reads tau and has none of its own (PIC has; eq. 1 reads none)
        own_tau = "tau" not in UNREAD.get(objective, ()) and objective_class(objective).default_tau is None
        chosen, reasons = fitted_recipe(train.images, flip, tau=own_tau)
        reasons += [f"--{k.replace('_', '-')} {getattr(args, k)} as given" for k in ("tau", "batch_size")
                    if k in chosen and getattr(args, k, None) is not None]
    else:
        views = AugmentConfig() if flip is None else AugmentConfig(p_flip=0.5 if flip else 0.0)
        chosen, reasons = {"augment": views}, ["the paper's recipe" + ("" if flip is None else (" with the mirror on" if flip else ", no mirror"))]
    if settings:
        chosen["augment"] = parse_augment(text, chosen["augment"])
        reasons.append(f"--augment {text}")
    return chosen, reasons
