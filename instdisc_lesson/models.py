"""Encoders that map a 3x32x32 image to a point on the unit sphere in R^d (d = 128 in the paper).

Taught in notebooks 00 and 01. InstDisc (Wu et al. 2018, sec. 3.1) feeds the CNN output through a
linear layer to a 128-d vector and L2-normalises it, ``v = f_theta(x) / ||f_theta(x)||``, so that
every similarity in the course is a cosine ``v_i^T v_j`` in [-1, 1].

* :class:`ConvNet` – a small 3-block network for CPU quick mode (about 1,500 images/s training on
  2 CPU cores).
* :func:`resnet18_cifar` – the paper's ResNet-18 with the usual CIFAR stem: a 3x3 stride-1 first
  convolution and no max-pool, so 32x32 inputs are not shrunk to 8x8 before the first block.

:func:`build_encoder` makes the untrained network of a run (the trainer's starting point, and the
random-init baseline the notebooks compare against): seeded, with the head its objective asks for,
and BatchNorm statistics from one pass over the data.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validate import check_choice

MODELS = ("convnet", "resnet18")


class Normalize(nn.Module):
    """Map images in [0, 1] to roughly zero mean and unit variance per channel (CIFAR-10 statistics)."""

    def __init__(self, mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class Embedder(nn.Module):
    """backbone -> linear head to ``dim`` -> L2 normalisation. ``features()`` skips the head.

    ``unit=False`` skips the normalisation: eq. 1's parametric classifier works on the network's raw output
    (the paper brings ``||v|| = 1`` in with eq. 2). kNN normalises the features it compares either way.
    """

    def __init__(self, backbone: nn.Module, width: int, dim: int, head: str = "linear", unit: bool = True):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim={dim} must be a positive embedding size (the paper uses 128)")
        self.normalize = Normalize()
        self.backbone = backbone
        if head == "linear":  # InstDisc: one linear layer to d
            self.head = nn.Linear(width, dim)
        elif head == "mlp":  # PIC (Cao et al. 2020): a 2-layer MLP head
            self.head = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Linear(width, dim))
        else:
            raise ValueError(f"unknown head {head!r}: choose 'linear' (InstDisc) or 'mlp' (PIC)")
        self.dim, self.width, self.unit = dim, width, unit

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))  # (B, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))  # (B, dim)
        return F.normalize(z, dim=1) if self.unit else z  # unit length (eq. 2 onwards), or raw (eq. 1)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ConvNet(Embedder):
    """Three conv-BN-ReLU-pool blocks (widths 32-64-128), global average pooling, 128-d head."""

    def __init__(self, dim: int = 128, widths=(32, 64, 128), head: str = "linear"):
        layers, c = [], 3
        for w in widths:
            layers.append(_block(c, w))
            c = w
        backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        super().__init__(backbone, c, dim, head)


def resnet18_cifar(dim: int = 128, head: str = "linear") -> Embedder:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, ending in a ``dim``-d head."""
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # the backbone now ends at the 512-d pooled features
    return Embedder(net, 512, dim, head)


def build_model(name: str, dim: int = 128, head: str = "linear") -> Embedder:
    """``"convnet"`` or ``"resnet18"``, ending in a ``"linear"`` (InstDisc) or ``"mlp"`` (PIC) head."""
    check_choice("model", name, MODELS)
    return ConvNet(dim, head=head) if name == "convnet" else resnet18_cifar(dim, head)


@torch.no_grad()
def batchnorm_pass(model: Embedder, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Every image once through ``model`` in training mode, un-augmented: (n, dim) features.

    BatchNorm's running statistics then describe these images, as they will after a training step.
    """
    from .data import to_float
    from .samplers import batches

    device = next(model.parameters()).device
    model.train()
    chunks = batches(torch.arange(len(images), device=device), batch_size)  # no chunk of 1 (BatchNorm)
    return torch.cat([model(to_float(images[chunk].to(device))).float() for chunk in chunks])


def build_encoder(cfg, images: torch.Tensor, device=None) -> tuple[Embedder, torch.Tensor]:
    """The untrained encoder of run ``cfg`` on ``images`` (uint8, (n, 3, 32, 32)), and its features (n, dim).

    Seeds with ``cfg.seed``, builds ``cfg.model`` with ``cfg.head`` (or the head the objective asks for),
    and runs :func:`batchnorm_pass`. The trainer starts from this network (and the memory bank from
    its features, with ``bank_init="features"``); notebooks use it as the fair random-init baseline.
    """
    from .config import get_device, seed_everything
    from .registry import objective_class

    device = get_device(device)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.dim, cfg.head or objective_class(cfg.objective).head).to(device)
    model.unit = objective_class(cfg.objective).unit_features
    return model, batchnorm_pass(model, images.to(device))
