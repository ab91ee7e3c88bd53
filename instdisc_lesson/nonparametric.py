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
import torch.nn.functional as F

from .objectives import BankObjective
from .validate import check_tau


def probabilities(features: torch.Tensor, bank: torch.Tensor, tau: float) -> torch.Tensor:
    """P(i | f) of eq. 2 for every bank row i: (B, n), each row summing to 1."""
    check_tau(tau)
    return torch.softmax(features @ bank.t() / tau, dim=1)


class NonParametricSoftmax(BankObjective):
    """Full softmax over the bank, with the bank's momentum update after each step.

    The bank, its update, the proximal term and the constructor ``(n, dim, tau=0.07, bank_momentum=0.5, lam=0.0,
    generator=None)`` come from :class:`~instdisc_lesson.objectives.BankObjective`.

    Attributes:
        memory: the :class:`MemoryBank` (n, dim).
        tau: temperature.
        lam: weight of the proximal term of eqs. 8-9 (0: off).

    Raises:
        ValueError: for tau <= 0, lam < 0, a bank momentum outside [0, 1), or inputs that do not fit the bank.

    Example:
        >>> objective = NonParametricSoftmax(n=50_000, dim=128, tau=0.07)
        >>> loss = objective(features, idx); loss.backward(); optimizer.step()
        >>> objective.after_step(features.detach(), idx)      # refresh the bank rows of this batch
    """

    @classmethod
    def from_config(cls, cfg, n: int) -> "NonParametricSoftmax":
        return cls(n, cfg.dim, cfg.tau, cfg.bank_momentum, cfg.lam)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``v_j^T f / tau`` for every bank row j: (B, n)."""
        return features @ self.memory.bank.t() / self.tau

    def loss(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        return F.cross_entropy(self.logits(features), idx)  # -log P(i | f_i), averaged over the batch
