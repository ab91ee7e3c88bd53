"""The command line's options turned into a run's TrainConfig.

Taught in notebook 06. ``build_parser()`` (``options.py``) lists every option of ``python -m instdisc_lesson``;
``build_config(args, train)`` gives the run's :class:`~instdisc_lesson.recipe.TrainConfig`: the options
given, the rest from ``recipe.preset`` (or ``--preset paper|course``). Kept apart from ``cli.py`` so that
other modules (``pretrained.py``) can rebuild a recorded command's config without importing the commands.
"""
from __future__ import annotations

from dataclasses import fields

from . import distributed as dist
from . import recipe
from .config import budget, dataset_name
from .augment import AugmentConfig
from .options import build_parser  # noqa: F401 - imported from here by pretrained.py and the tests
from .recipe import TrainConfig
from .views import fitted_recipe, parse_augment
from .registry import OBJECTIVE_OPTIONS, objective_class, unread_message

CIFAR10_SIZES = (50_000, 5_000)  # training images, and images in its smallest class
PARSED_APART = ("data", "augment")  # options that name a data set and a views text, not the field's value


def fits_time(args, cfg: TrainConfig) -> bool:
    """Whether the run's epochs are the defaults' to choose by this machine's time (``recipe.time_epochs``): on a CPU
    (the quick budget), for any data but the quick set, when neither --epochs nor --preset was given."""
    return cfg.data != "quick" and budget() == "quick" and args.epochs is None and getattr(args, "preset", None) is None


def objective_of(args) -> str:
    """The run's objective: ``--objective``, else the default of its case (``recipe.default_objective``)."""
    return getattr(args, "objective", None) or recipe.default_objective(
        budget(), getattr(args, "data", None) or dataset_name(), getattr(args, "preset", None))


def given(args) -> dict:
    """The TrainConfig fields the command line set, ``{field: value}`` (an option's dest is its field's name). An
    option of an objective setting that the run's objective does not read is refused here, by its flag."""
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if f.name not in PARSED_APART and getattr(args, f.name, None) is not None}
    objective = objective_of(args)
    for option in OBJECTIVE_OPTIONS:
        if option.field in overrides and option.field not in objective_class(objective).settings:
            raise ValueError(unread_message(option.field, objective, option.given_as(overrides[option.field])))
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
        objective = objective_of(args)
        # the marks' tau only where the objective reads tau and has none of its own (PIC has; eq. 1 reads none)
        own_tau = "tau" in objective_class(objective).settings and objective_class(objective).default_tau is None
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
