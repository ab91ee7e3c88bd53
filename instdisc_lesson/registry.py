"""The four objectives by name: which class a name means, and building one from a run's config.

Taught in notebook 06. ``objectives.py`` holds the protocol (the base classes); each objective lives in
its own module and imports that base; this module imports the four and maps names to them, so no module
of the package imports another that imports it back.

    parametric   ParametricSoftmax     eq. 1 (parametric.py)
    softmax      NonParametricSoftmax  eq. 2 over the memory bank (nonparametric.py)
    nce          NCE                   eqs. 4-7 (nce.py)
    pic          PIC                   Cao et al. 2020 (pic.py)
"""
from __future__ import annotations

from .nce import NCE
from .nonparametric import NonParametricSoftmax
from .objectives import Objective
from .parametric import ParametricSoftmax
from .pic import PIC
from .validate import check_choice

CLASSES = {"parametric": ParametricSoftmax, "softmax": NonParametricSoftmax, "nce": NCE, "pic": PIC}
OBJECTIVES = tuple(CLASSES)
# Every objective's own settings, and their command-line options (an option two objectives share, e.g. --tau,
# once): the fields a config may set only for an objective that reads them.
OBJECTIVE_FIELDS = tuple(dict.fromkeys(name for cls in CLASSES.values() for name in cls.settings))


def _options() -> tuple:
    options = {}
    for cls in CLASSES.values():
        for option in cls.options:
            options.setdefault(option.field, option)
    return tuple(options.values())


OBJECTIVE_OPTIONS = _options()


def objective_class(name: str) -> type[Objective]:
    """The class of the objective called ``name`` (one of ``OBJECTIVES``)."""
    check_choice("objective", name, OBJECTIVES)
    return CLASSES[name]


def readers(field: str) -> tuple[str, ...]:
    """The objectives that read the setting ``field``."""
    return tuple(name for name, cls in CLASSES.items() if field in cls.settings)


def unread_message(field: str, objective: str, option: str | None = None) -> str:
    """The one line that refuses the setting ``field`` for ``objective``; ``option`` (e.g. ``--lam``) when it came
    from the command line."""
    other = readers(field)[0]
    given, choose = (option, f"--objective {other}") if option else (field, f"objective={other!r}")
    return f"{given} is not read by the {objective} objective (only by {', '.join(readers(field))}): leave it out, or choose {choose}"


def build_objective(cfg, n: int) -> Objective:
    """The objective ``cfg.objective`` for ``n`` instances, with the config's settings."""
    return objective_class(cfg.objective).from_config(cfg, n)
