"""Non-parametric instance softmax over the memory bank (Wu et al. 2018, eq. 2).

Taught in notebooks 01 and 02. The weight ``w_j`` of eq. 1 is replaced by the stored feature ``v_j``
and a temperature tau sharpens the distribution:

    P(i | v) = exp(v_i^T v / tau) / sum_{j=1..n} exp(v_j^T v / tau)          (eq. 2)
    J = -sum_i log P(i | f_i)

The denominator touches all n bank rows: exact, and O(n) per image. This is lemniscate's
``--nce-k 0`` mode. tau = 0.07 in the paper (ImageNet), 0.1 in its CIFAR code.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .memory_bank import MemoryBank
from .proximal import check_lam, proximal_term


def check_tau(tau: float) -> None:
    if not tau > 0.0:  # also catches NaN
        raise ValueError(f"tau={tau} must be > 0 (the paper uses 0.07; the CIFAR code 0.1)")


def probabilities(features: torch.Tensor, bank: torch.Tensor, tau: float) -> torch.Tensor:
    """P(i | f) of eq. 2 for every bank row i: (B, n), each row summing to 1."""
    check_tau(tau)
    return torch.softmax(features @ bank.t() / tau, dim=1)


class NonParametricSoftmax(nn.Module):
    """Full softmax over the bank, with the bank's momentum update after each step.

    Attributes:
        memory: the :class:`MemoryBank` (n, dim).
        tau: temperature.
        lam: weight of the proximal term of eq. 9 (0: off).

    Example:
        >>> objective = NonParametricSoftmax(n=50_000, dim=128, tau=0.07)
        >>> loss = objective(features, idx); loss.backward(); optimizer.step()
        >>> objective.after_step(features.detach(), idx)      # refresh the bank rows of this batch
    """

    def __init__(self, n: int, dim: int, tau: float = 0.07, bank_momentum: float = 0.5, lam: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_tau(tau)
        check_lam(lam)
        self.memory = MemoryBank(n, dim, bank_momentum, generator)
        self.tau, self.lam = float(tau), float(lam)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``v_j^T f / tau`` for every bank row j: (B, n)."""
        return features @ self.memory.bank.t() / self.tau

    def forward(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        self.memory.check(idx, features)
        loss = F.cross_entropy(self.logits(features), idx)  # -log P(i | f_i), averaged over the batch
        return loss + proximal_term(features, self.memory.read(idx), self.lam)

    def start_from(self, features: torch.Tensor) -> None:
        """Fill the bank with ``features`` (n, d) instead of random vectors."""
        self.memory.fill(features)

    def after_step(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        self.memory.update(idx, features)
