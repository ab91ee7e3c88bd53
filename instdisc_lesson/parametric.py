"""Parametric instance softmax: an n-way linear classifier whose classes are the n images.

Taught in notebook 01. Wu et al. 2018, eq. 1, with one weight vector ``w_j`` per instance:

    P(i | v) = exp(w_i^T v) / sum_{j=1..n} exp(w_j^T v)

The loss is the ordinary cross-entropy with the image's *index* as its label. As in the paper, ``v`` is
the network's **raw** output: the L2 normalisation ``||v|| = 1`` (and the temperature) arrive with eq. 2,
where ``w_j`` is replaced by the stored ``v_j``. (On unit features, with ``nn.Linear``'s initial
``||w_i|| ~ 0.58``, every logit sits within about +-0.05 and P(i | v) stays near 1/n: it cannot learn.)
The weights do not let instances be compared with each other, and their number grows with n (n x d
parameters, e.g. 1.28M x 128 for ImageNet): the two reasons the paper replaces ``w_j`` by stored features.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .objectives import Objective
from .validate import check_batch, check_size


class ParametricSoftmax(Objective):
    """Cross-entropy over n instance classes with a learned (n, dim) weight matrix (no bias, as in eq. 1),
    on the network's un-normalised output (``unit_features = False``).

    Raises:
        ValueError: for n < 2 or dim < 1, and (in :meth:`forward`) for features or indices that do not fit.

    Example:
        >>> objective = ParametricSoftmax(n=50_000, dim=128)
        >>> loss = objective(features, idx)   # features: (B, 128), the network's raw output; idx: (B,) image indices
    """

    unit_features = False
    settings = {}  # eq. 1 has no temperature and no memory bank: no tau, bank or proximal setting applies

    def __init__(self, n: int, dim: int):
        super().__init__()
        check_size(n, dim)
        self.n, self.dim = n, dim
        self.classifier = nn.Linear(dim, n, bias=False)  # row j is w_j; eq. 1 has no bias

    @classmethod
    def from_config(cls, cfg, n: int) -> "ParametricSoftmax":
        return cls(n, cfg.dim)

    def forward(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        check_batch(features, idx, self.n, self.dim)
        logits = self.classifier(features.to(self.classifier.weight.dtype))  # (B, n): w_j^T v
        return F.cross_entropy(logits, idx)
