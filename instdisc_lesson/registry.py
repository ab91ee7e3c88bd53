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


def objective_class(name: str) -> type[Objective]:
    """The class of the objective called ``name`` (one of ``OBJECTIVES``)."""
    check_choice("objective", name, OBJECTIVES)
    return CLASSES[name]


def build_objective(cfg, n: int) -> Objective:
    """The objective ``cfg.objective`` for ``n`` instances, with the config's settings."""
    return objective_class(cfg.objective).from_config(cfg, n)
