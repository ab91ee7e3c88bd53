"""One name per objective, so the trainer and CLI can build any of them. Taught in notebook 06.

``parametric`` (eq. 1), ``softmax`` (non-parametric, eq. 2), ``nce`` (eqs. 3-8), ``pic`` (Cao et al. 2020). Each objective is
called as ``loss = objective(features, idx, gen)`` and refreshed with
``objective.after_step(features.detach(), idx)`` once the optimizer has stepped.
"""
from __future__ import annotations

import torch

from .nce import NCE
from .nonparametric import NonParametricSoftmax
from .parametric import ParametricSoftmax
from .pic import PIC

OBJECTIVES = ("parametric", "softmax", "nce", "pic")


def build_objective(name: str, n: int, dim: int, *, tau: float = 0.07, m: int = 4096, bank_momentum: float = 0.5,
                    lam: float = 0.0, z_mode: str = "ema", z_momentum: float = 0.99, shared_negatives: bool = False,
                    recent_k: int = 0, correction: bool = True, generator: torch.Generator | None = None) -> torch.nn.Module:
    """The objective called ``name`` for n instances of dimension ``dim``."""
    if name == "parametric":
        return ParametricSoftmax(n, dim)
    if name == "softmax":
        return NonParametricSoftmax(n, dim, tau, bank_momentum, lam, generator)
    if name == "nce":
        return NCE(n, dim, m, tau, bank_momentum, z_mode, z_momentum, shared_negatives, lam, generator)
    if name == "pic":
        return PIC(n, dim, tau, recent_k, correction, generator)
    raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
