"""The command line's options turned into a run's TrainConfig.

Taught in notebook 06. ``build_parser()`` (``options.py``) lists every option of ``python -m instdisc_lesson``;
``build_config(args, train)`` gives the run's :class:`~instdisc_lesson.recipe.TrainConfig`: the options
given, the rest from ``recipe.preset`` (or ``--preset paper|course``). Kept apart from ``cli.py`` so that
other modules (``pretrained.py``) can rebuild a recorded command's config without importing the commands.
"""
from __future__ import annotations

from . import distributed as dist
from . import recipe
from .config import budget, dataset_name
from .augment import AugmentConfig
from .options import build_parser  # noqa: F401 - imported from here by pretrained.py and the tests
from .recipe import TrainConfig
from .views import fitted_recipe, parse_augment
from .registry import objective_class

# CLI option -> TrainConfig field
_OPTIONS = {"objective": "objective", "model": "model", "epochs": "epochs", "nce_m": "nce_m", "tau": "tau",
            "lr": "lr", "batch_size": "batch_size", "seed": "seed", "lam": "lam", "bank_momentum": "bank_momentum",
            "z_mode": "z_mode", "knn_k": "knn_k", "window": "window", "stride": "stride", "recent_k": "recent_k",
            "bank_init": "bank_init", "compile": "compile", "eval_every": "eval_every", "sync_batchnorm": "sync_batchnorm",
            "dim": "dim", "train_size": "train_size", "z_estimator": "z_estimator", "precision": "precision",
            "memory_format": "memory_format"}


CIFAR10_SIZES = (50_000, 5_000)  # training images, and images in its smallest class
# Options an objective never reads: given on the command line, they are refused rather than silently ignored.
UNREAD = {"parametric": ("tau", "bank_init", "bank_momentum", "lam")}
NCE_ONLY = ("nce_m", "z_mode", "z_estimator")


def fits_time(args, cfg: TrainConfig) -> bool:
    """Whether the run's epochs are the defaults' to choose by this machine's time (``recipe.time_epochs``): on a CPU
    (the quick budget), for any data but the quick set, when neither --epochs nor --preset was given."""
    return cfg.data != "quick" and budget() == "quick" and args.epochs is None and getattr(args, "preset", None) is None


def given(args) -> dict:
    """The TrainConfig fields the command line set, ``{field: value}``; an option the objective never reads is
    refused here rather than silently ignored."""
    overrides = {field: getattr(args, opt) for opt, field in _OPTIONS.items() if getattr(args, opt) is not None}
    objective = overrides.get("objective")
    for option in UNREAD.get(objective, ()) + (NCE_ONLY if objective not in (None, "nce") else ()):
        if getattr(args, option, None) is not None:
            raise ValueError(f"--{option.replace('_', '-')} is not read by the {objective} objective"
                             + (" (eq. 1 has no temperature and no memory bank)" if objective == "parametric" else
                                " (it is an NCE setting)") + ": leave it out")
    if args.correction is not None:
        overrides["correction"] = args.correction
    return overrides


def build_config(args, train=None) -> TrainConfig:
    """The run's TrainConfig: the options given, the rest from the defaults of this data and budget:

    - ``--data quick``: the settings calibrated on the quick set;
    - any other data in the quick budget (a CPU): settings fitted to the training images ``train``
      (``recipe.fitted_config``; CIFAR-10's sizes are known without loading it);
    - the gpu and paper budgets: the paper's recipe (ResNet-18, NCE m = 4096, 200 epochs).
    """
    data = args.data or dataset_name()
    overrides = given(args)
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
