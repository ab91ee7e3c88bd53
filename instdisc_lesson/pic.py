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
  (``RowSparseSGD`` below, the optimizer PIC asks for through ``make_optimizer``).

The paper's official code implements only the first; the course implements all of them.

PIC is the trainer's one exception to "no step reads a value back from the device", because its shapes depend
on the data: with recent negatives the candidates are ``torch.unique`` of the batch and the queue (their
number is known only on the device), and ``RowSparseSGD`` coalesces the sparse gradient (how many distinct rows
it holds, likewise); under torchrun the ranks' sparse rows are gathered with their counts read back
(``distributed.average_gradients``). Padding them to a fixed size would trade these syncs for work on rows
that were never sampled, the cost the sparse update exists to avoid.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from .objectives import BANK_INIT_OPTION, TAU_OPTION, Objective, Option
from .samplers import SlidingWindowSampler
from .validate import check_batch, check_recent_k, check_size, check_tau

PIC_TAU = 0.2  # Cao et al. 2020


class PIC(Objective):
    """Cosine-softmax instance classifier with optional recent negatives and row-sparse updates.

    Attributes:
        weight: (n, dim) one row per instance (normalised when used).
        tau: temperature (paper 0.2).
        recent_k: size of the queue of recently seen instances whose rows form the denominator
            (0: all n rows, the exact cosine softmax).
        correction: when True, :meth:`make_optimizer` gives a :class:`RowSparseSGD` that updates only
            the rows of this step's candidates.
        head, default_tau: PIC's 2-layer MLP head and its temperature 0.2 (the protocol's class attributes).

    Raises:
        ValueError: for n < 2, dim < 1, tau <= 0, recent_k < 0, or inputs that do not fit.

    Example:
        >>> objective = PIC(n=50_000, dim=128, tau=0.2, recent_k=4096)
        >>> optimizer = objective.make_optimizer(params, cfg)                     # a RowSparseSGD
        >>> loss = objective(features, idx); loss.backward(); optimizer.step()
        >>> objective.after_step(features.detach(), idx)                          # push idx into the queue
    """

    head = "mlp"
    default_tau = PIC_TAU
    settings = {"tau": PIC_TAU, "bank_init": "random", "window": 0, "stride": 0, "recent_k": 0, "correction": True}
    options = (TAU_OPTION, BANK_INIT_OPTION,
               Option("window", "PIC: a sliding window of D instances per epoch (default: 0, all n)",
                      {"type": int, "metavar": "D"}),
               Option("stride", "PIC: how far the window moves each epoch (default: D)", {"type": int, "metavar": "S"}),
               Option("recent_k", "PIC: negatives from the K most recent instances only (default: 0, all n)",
                      {"type": int, "metavar": "K"}),
               Option("correction", "PIC: keep the weight rows a step did not sample still under momentum and weight "
                      "decay (default: on; --no-correction lets them move, as plain SGD would)",
                      {"action": argparse.BooleanOptionalAction}))

    def __init__(self, n: int, dim: int, tau: float = PIC_TAU, recent_k: int = 0, correction: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_size(n, dim)
        check_tau(tau)
        check_recent_k(recent_k)
        self.n, self.dim, self.tau, self.correction = n, dim, float(tau), bool(correction)
        self.recent_k = min(int(recent_k), n) if recent_k else 0
        self.weight = nn.Parameter(F.normalize(torch.randn(n, dim, generator=generator), dim=1))
        self.register_buffer("queue", torch.full((max(self.recent_k, 1),), -1, dtype=torch.long))  # recent instances
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.sampler = None  # set by from_config when the run asks for the sliding window

    @classmethod
    def from_config(cls, cfg, n: int) -> "PIC":
        pic = cls(n, cfg.dim, cfg.tau, cfg.recent_k, cfg.correction)
        if cfg.window:  # the sliding-window scheduler: an "epoch" is then one window of D instances (--window's help)
            pic.sampler = SlidingWindowSampler(n, cfg.window, cfg.stride or cfg.window, cfg.seed)
        return pic

    def epoch_order(self, n: int, epoch: int, gen=None) -> torch.Tensor:
        """A fresh permutation of all n, or with the sliding window the D instances of window ``epoch``."""
        if self.sampler is None:
            return super().epoch_order(n, epoch, gen)
        return self.sampler.window(epoch, gen).to(gen.device if gen is not None else "cpu")

    def epoch_size(self, n: int) -> int:
        return n if self.sampler is None else self.sampler.D

    def make_optimizer(self, params, cfg) -> "RowSparseSGD":
        """SGD whose sparse-gradient rows (this PIC's weights) are updated alone when the correction is on."""
        return RowSparseSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                            correction=self.correction)

    def candidates(self, idx: torch.Tensor) -> torch.Tensor:
        """The instances in the softmax: all n, or this batch plus the K most recently seen (sorted, unique)."""
        if not self.recent_k:
            return torch.arange(self.n, device=idx.device)
        recent = torch.where(self.queue >= 0, self.queue, idx[:1])  # empty slots (-1) stand in for a batch index
        return torch.unique(torch.cat([idx, recent]))  # (<= B + K,): unique's size is read back (a host sync)

    def forward(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        check_batch(features, idx, self.n, self.dim)
        features = features.to(self.weight.dtype)  # any float dtype in; the loss runs in the weights'
        cand = self.candidates(idx)  # (C,)
        # A sparse lookup: the gradient of `weight` then holds only these C rows, so the cost of the
        # backward pass does not grow with n either (a dense (n, d) gradient would be mostly zeros),
        # and RowSparseSGD reads from it which rows were sampled.
        W = F.normalize(F.embedding(cand, self.weight, sparse=True), dim=1)  # (C, d)
        logits = features @ W.t() / self.tau  # (B, C): cosine / tau
        target = torch.searchsorted(cand, idx)  # position of each positive among the candidates
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
    """SGD in which a parameter with a *sparse* gradient has only the rows in that gradient updated.

    PIC's weights get a sparse gradient (``F.embedding(..., sparse=True)``) whose rows are exactly the
    candidates of the step. With ``correction=True`` those rows, and their momentum, are updated;
    every other row keeps its value *and* its momentum buffer bit for bit: no weight decay, no
    momentum drift. With ``correction=False`` the sparse gradient is made dense and every row gets
    the ordinary SGD update. Parameters with dense gradients always get plain SGD. (Nesterov and
    dampening are not supported for the sparse rows; the paper's recipe uses neither.)
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, correction: bool = True):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.correction = bool(correction)

    @torch.no_grad()
    def step(self, closure=None):
        sparse = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.grad.is_sparse:
                    continue
                if self.correction:
                    sparse.append((p, p.grad, group))
                    p.grad = None  # hide from the dense update below
                else:
                    p.grad = p.grad.to_dense()  # no correction: the ordinary dense SGD update of every row
        loss = super().step(closure)
        for p, grad, group in sparse:
            grad = grad.coalesce()
            rows, g = grad.indices()[0], grad.values()  # (R,), (R, d): the sampled rows and their gradient
            g = g + group["weight_decay"] * p[rows]
            if group["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                buf[rows] = group["momentum"] * buf[rows] + g
                g = buf[rows]
            p[rows] -= group["lr"] * g
            p.grad = grad
        return loss
