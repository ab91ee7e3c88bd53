"""The memory bank: one stored feature per training image (Wu et al. 2018, sec. 3.1).

Taught in notebook 02. The non-parametric softmax (eq. 2) compares a fresh feature ``f_i`` with
*every* instance, ``v_j^T f_i / tau``; recomputing all n features each step is impossible, so the
bank ``V = {v_j}`` (n x d, unit rows) keeps the last known feature of each image and is refreshed
only for the images of the current batch:

    v_i <- normalize(mu * v_i + (1 - mu) * f_i)          (paper's code: bank momentum mu = 0.5)

Rows start as random unit vectors. Reading order matters: the loss reads ``v_i`` (the positive)
*before* the update, otherwise the positive would already contain the fresh feature.

Cost: n x d x 4 bytes, e.g. 1.28M x 128 x 4 B = 655 MB for ImageNet and 25.6 MB for CIFAR-10.
The bank also records when each row was last written (``age``), to measure its staleness.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validate import check_bank_momentum, check_batch, check_finite, check_size

BANK_MOMENTUM = 0.5  # the paper's code (lemniscate): v <- normalize(0.5 v + 0.5 f)


class MemoryBank(nn.Module):
    """n x dim unit vectors with a momentum update.

    Attributes:
        bank: (n, dim) the stored features, unit rows.
        momentum: mu in ``v <- normalize(mu v + (1 - mu) f)``; 0 replaces the row by the new feature.
        written_at: (n,) the step at which each row was last written (-1: never, still random).
        step: number of :meth:`update` calls so far.

    Raises:
        ValueError: for n < 2, dim < 1, momentum outside [0, 1), or features/indices that do not fit.

    Example:
        >>> bank = MemoryBank(n=50_000, dim=128, momentum=0.5)
        >>> positives = bank.read(idx)          # (B, 128), read *before* the update
        >>> bank.update(idx, features.detach())
    """

    def __init__(self, n: int, dim: int, momentum: float = BANK_MOMENTUM, generator: torch.Generator | None = None):
        super().__init__()
        check_size(n, dim)
        check_bank_momentum(momentum)
        self.momentum = float(momentum)
        bank = F.normalize(torch.randn(n, dim, generator=generator), dim=1)  # random unit rows
        self.register_buffer("bank", bank)
        self.register_buffer("written_at", torch.full((n,), -1, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def n(self) -> int:
        return self.bank.shape[0]

    @property
    def dim(self) -> int:
        return self.bank.shape[1]

    def check(self, idx: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """Validate indices (and features) coming from outside."""
        check_batch(features, idx, self.n, self.dim)

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """The stored features of ``idx``: (B, dim)."""
        return self.bank.index_select(0, idx)

    @torch.no_grad()
    def fill(self, features: torch.Tensor) -> None:
        """Overwrite every row with ``features`` (n, dim), e.g. the untrained network's own features."""
        self.check(torch.arange(self.n, device=self.bank.device), features)
        check_finite("features", features)
        self.bank.copy_(F.normalize(features.to(self.bank.dtype), dim=1))
        self.written_at.zero_()

    @torch.no_grad()
    def update(self, idx: torch.Tensor, features: torch.Tensor) -> None:
        """``v_i <- normalize(mu v_i + (1 - mu) f_i)`` for every i in the batch (after the loss read v_i)."""
        self.check(idx, features)
        check_finite("features", features)
        mixed = self.momentum * self.bank.index_select(0, idx) + (1.0 - self.momentum) * features.to(self.bank.dtype)  # (B, dim)
        self.bank.index_copy_(0, idx, F.normalize(mixed, dim=1))
        self.written_at.index_put_((idx,), self.step)  # the step counter stays on the device: no host sync
        self.step += 1

    def age(self) -> torch.Tensor:
        """How many updates ago each row was written (rows never written count from the start)."""
        return self.step - self.written_at.clamp(min=0)
