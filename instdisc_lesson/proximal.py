"""Proximal regularisation (Wu et al. 2018, sec. 3.3, eqs. 8-9).

Taught in notebook 04. Every instance is its own class and is seen only once per epoch, so its
bank entry ``v_i`` jumps from epoch to epoch and the loss oscillates. The paper adds a proximal term
that keeps the new feature close to the previous one:

    -log h(i, v_i^(t-1)) + lambda * || v_i^(t) - v_i^(t-1) ||_2^2                (eq. 8)
    J_NCE = -E_{P_d}[log h(i, v_i^(t-1)) - lambda ||v_i^(t) - v_i^(t-1)||^2]
            - m E_{P_n}[log(1 - h(i, v'^(t-1)))]                                 (eq. 9)

where ``v_i^(t)`` is the fresh feature ``f_i`` of this iteration and ``v_i^(t-1)`` the bank entry.
(Eq. 9's sign inside the first expectation is the paper's; the term it adds to the *loss* is
``+ lambda ||f_i - v_i||^2``, which is what :func:`proximal_term` returns. The objectives add it to
whatever discrimination loss they compute: NCE as in the paper, or the full softmax.)
The paper uses lambda in {10, 30, 50} and then writes ``v_i <- v_i^(t)``. The released code has no
such term; it smooths the bank with a momentum update instead (``memory_bank.py``). The course
teaches both, and the objectives take ``lam`` so they can be combined.
"""
from __future__ import annotations

import torch


def proximal_term(features: torch.Tensor, previous: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * ||f_i - v_i||^2``, averaged over the batch. features, previous: (B, d)."""
    if lam == 0.0:
        return features.new_zeros(())
    return lam * (features - previous).pow(2).sum(dim=1).mean()
