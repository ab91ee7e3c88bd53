"""Parametric instance classification (PIC; Cao et al., 2020, arXiv 2006.14618).

Taught in notebook 07. PIC goes back to eq. 1's parametric classifier, one weight row per image, and
makes it work with four ingredients:

* a **cosine softmax**: features and weight rows both L2-normalised, temperature tau (paper 0.2),
      P(i | f) = exp(w_i^T f / tau) / sum_j exp(w_j^T f / tau),   ||w_j|| = ||f|| = 1
  on top of a 2-layer MLP head (``models.py``, ``head="mlp"``);
* a **sliding-window data scheduler** (``samplers.py``), so each instance comes back after a few
  steps rather than a whole epoch;
* **recent negative sampling**: the denominator runs only over the weights of the K most recently
  seen instances (paper: K = 65,536), so the loss and gradient cost stop growing with n;
* **weight update correction**: with plain SGD, momentum and weight decay keep moving *every* row of
  W each step, including the rows whose instance was not sampled (zero gradient). The correction
  updates only the sampled rows and their momentum; the others stay bit-identical
  (``RowSparseSGD`` below).

The paper's official code implements only the first; the course implements all of them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nonparametric import check_tau
from .validate import check_batch, check_size


class PIC(nn.Module):
    """Cosine-softmax instance classifier with optional recent negatives and row-sparse updates.

    Attributes:
        weight: (n, dim) one row per instance (normalised when used).
        tau: temperature (paper 0.2).
        recent_k: size of the queue of recently seen instances whose rows form the denominator
            (0: all n rows, the exact cosine softmax).
        correction: when True, ``weight.sampled_rows`` tells :class:`RowSparseSGD` which rows to update.

    Raises:
        ValueError: for n < 2, dim < 1, tau <= 0, recent_k < 0, or inputs that do not fit.

    Example:
        >>> objective = PIC(n=50_000, dim=128, tau=0.2, recent_k=4096)
        >>> loss = objective(features, idx); loss.backward(); optimizer.step()    # a RowSparseSGD
        >>> objective.after_step(features.detach(), idx)                          # push idx into the queue
    """

    def __init__(self, n: int, dim: int, tau: float = 0.2, recent_k: int = 0, correction: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_size(n, dim)
        check_tau(tau)
        if recent_k < 0:
            raise ValueError(f"recent_k={recent_k} must be >= 0 (0 uses all n instances)")
        self.n, self.dim, self.tau, self.correction = n, dim, float(tau), bool(correction)
        self.recent_k = min(int(recent_k), n) if recent_k else 0
        self.weight = nn.Parameter(F.normalize(torch.randn(n, dim, generator=generator), dim=1))
        self.register_buffer("queue", torch.full((max(self.recent_k, 1),), -1, dtype=torch.long))  # recent instances
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def candidates(self, idx: torch.Tensor) -> torch.Tensor:
        """The instances in the softmax: all n, or this batch plus the K most recently seen (sorted, unique)."""
        if not self.recent_k:
            return torch.arange(self.n, device=idx.device)
        recent = self.queue[self.queue >= 0]
        return torch.unique(torch.cat([idx, recent]))  # (<= B + K,)

    def forward(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        check_batch(features, idx, self.n, self.dim)
        cand = self.candidates(idx)  # (C,)
        # A sparse lookup: the gradient of `weight` then holds only these C rows, so the cost of the
        # backward pass does not grow with n either (a dense (n, d) gradient would be mostly zeros).
        W = F.normalize(F.embedding(cand, self.weight, sparse=True), dim=1)  # (C, d)
        logits = features @ W.t() / self.tau  # (B, C): cosine / tau
        target = torch.searchsorted(cand, idx)  # position of each positive among the candidates
        if self.correction:
            self.weight.sampled_rows = cand  # read by RowSparseSGD.step
        return F.cross_entropy(logits, target)

    @torch.no_grad()
    def start_from(self, features: torch.Tensor) -> None:
        """Start every weight row at the (normalised) feature of its instance instead of a random vector."""
        self.weight.copy_(F.normalize(features.to(self.weight.dtype), dim=1))

    @torch.no_grad()
    def after_step(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        """Push this batch's instances into the queue of recent instances (a ring buffer)."""
        if not self.recent_k:
            return
        k, B = self.recent_k, len(idx)
        positions = (self.queue_ptr + torch.arange(B, device=idx.device)) % k
        self.queue[positions[-k:]] = idx[-k:]
        self.queue_ptr.copy_((self.queue_ptr + B) % k)


class RowSparseSGD(torch.optim.SGD):
    """SGD that updates only ``p.sampled_rows`` (and their momentum) of parameters that carry it.

    For such a parameter, rows outside ``sampled_rows`` keep their values *and* momentum buffers
    exactly: no weight decay, no momentum drift. Every other parameter gets plain SGD. (Nesterov and
    dampening are not supported for the sparse rows; the paper's recipe uses neither.)
    """

    @torch.no_grad()
    def step(self, closure=None):
        sparse = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse and getattr(p, "sampled_rows", None) is None:
                    p.grad = p.grad.to_dense()  # no correction: the ordinary dense SGD update of every row
                if getattr(p, "sampled_rows", None) is not None and p.grad is not None:
                    sparse.append((p, p.grad, group))
                    p.grad = None  # hide from the dense update below
        loss = super().step(closure)
        for p, grad, group in sparse:
            if grad.is_sparse:
                grad = grad.coalesce()
                rows, g = grad.indices()[0], grad.values()  # (R,), (R, d)
            else:
                rows = p.sampled_rows
                g = grad[rows]
            g = g + group["weight_decay"] * p[rows]
            if group["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                buf[rows] = group["momentum"] * buf[rows] + g
                g = buf[rows]
            p[rows] -= group["lr"] * g
            p.grad = grad
            p.sampled_rows = None
        return loss
