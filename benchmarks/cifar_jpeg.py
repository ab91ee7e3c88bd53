"""Load the JPEG export of CIFAR-10 (``shared/data/cifar10_*_jpeg.npz``) as an InstanceDataset.

Development tooling only: calibration, the shipped checkpoint and GPU runs. The course itself never
needs these files.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from instdisc_lesson.data import InstanceDataset


def load_jpeg_npz(path, limit: int | None = None, per_class: int | None = None, seed: int = 0) -> InstanceDataset:
    z = np.load(path)
    jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    order = np.arange(len(labels))
    if per_class is not None:
        rng = np.random.default_rng(seed)
        order = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)]))
    if limit is not None:
        order = order[:limit]
    images = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                       for i in order])  # (n, 32, 32, 3)
    return InstanceDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                           torch.from_numpy(labels[order]).long(), tuple(str(c) for c in z["classes"]), "cifar10-jpeg")
