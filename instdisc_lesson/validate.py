"""Checks shared by every objective's public entry points: clear errors instead of deep torch tracebacks."""
from __future__ import annotations

import torch


def check_size(n: int, dim: int) -> None:
    """n instances (at least 2: one positive and one other) of feature size dim (at least 1)."""
    if n < 2:
        raise ValueError(f"n={n}: instance discrimination needs at least 2 instances")
    if dim < 1:
        raise ValueError(f"dim={dim} must be a positive feature size")


def check_batch(features: torch.Tensor | None, idx: torch.Tensor, n: int, dim: int) -> None:
    """features (B, dim) and instance indices (B,) in [0, n - 1]."""
    if features is not None and (features.dim() != 2 or features.shape[1] != dim):
        raise ValueError(f"features of shape {tuple(features.shape)} do not fit dim {dim}: expected (B, {dim})")
    if features is not None and features.shape[0] != idx.shape[0]:
        raise ValueError(f"{features.shape[0]} features for {idx.shape[0]} indices: they must match")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"indices must lie in [0, {n - 1}], got min {int(idx.min())}, max {int(idx.max())}")
