"""Which instances each epoch visits: the standard shuffle, and PIC's sliding window.

Taught in notebook 07. With the standard schedule every epoch is a fresh permutation of all n
instances, so the same instance comes back after anywhere between 1 and about 2n/B steps (n/B on
average): its classifier weight sits idle, or is pushed around by momentum and weight decay, for a
whole epoch. PIC (Cao et al. 2020, sec. 3.2) shortens the gaps with a **sliding-window scheduler**:
the instances are laid out once in a random order, and "epoch" e visits only the window

    order[(e * S + j) mod n],  j = 0 .. D - 1,    shuffled within the window,

so each instance is visited D / S times in a row, a few steps apart, and then not for a full cycle
of n / S windows. PIC's ImageNet setting is D = 2^17, S = 2^14 (D / S = 8).
"""
from __future__ import annotations

import torch

from .validate import check_window


class SlidingWindowSampler:
    """Windows of D instances that slide by S over a fixed random order of the n instances.

    Raises:
        ValueError: unless 1 <= S <= D <= n.

    Example:
        >>> sampler = SlidingWindowSampler(n=1600, window=512, stride=64)
        >>> idx = sampler.window(epoch=3, gen=torch.Generator().manual_seed(0))   # (512,) instance indices
    """

    def __init__(self, n: int, window: int, stride: int, seed: int = 0, shuffle: bool = True):
        check_window(n, window, stride)
        self.n, self.D, self.S, self.shuffle = n, window, stride, shuffle
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        self.order = order  # the fixed layout the window slides over

    def window(self, epoch: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """The D instances of window ``epoch``, shuffled within the window (unless shuffle=False)."""
        positions = (epoch * self.S + torch.arange(self.D)) % self.n  # (D,)
        idx = self.order[positions]
        if self.shuffle:
            idx = idx[torch.randperm(self.D, generator=gen, device=gen.device if gen is not None else "cpu").cpu()]
        return idx

    @property
    def cycle(self) -> int:
        """Windows until the window is back where it started: every instance is visited within one cycle."""
        return -(-self.n // self.S)


def standard_epoch(n: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """The usual schedule: a fresh permutation of all n instances (on the generator's device)."""
    return torch.randperm(n, generator=gen, device=gen.device if gen is not None else "cpu")


def batches(order: torch.Tensor, batch_size: int, min_size: int = 2) -> list[torch.Tensor]:
    """Split an epoch's order into batches; a last batch under ``min_size`` joins the previous one
    (BatchNorm needs 2 images; under ``torchrun``, 2 on each of the W ranks: ``min_size = 2 W``)."""
    split = list(order.split(batch_size))
    if len(split) > 1 and len(split[-1]) < min_size:
        split[-2:] = [torch.cat(split[-2:])]
    return split


def visit_gaps(batches) -> torch.Tensor:
    """Steps between consecutive visits of the same instance, over a sequence of batches (of indices)."""
    last, gaps = {}, []
    for step, batch in enumerate(batches):
        for i in batch.tolist():
            if i in last:
                gaps.append(step - last[i])
            last[i] = step
    return torch.tensor(gaps, dtype=torch.long)
