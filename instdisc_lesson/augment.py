"""Batched augmentation with *different random parameters for every image* of a batch.

Taught in notebook 00. Instance discrimination learns exactly what the augmentations leave
unchanged, so they are half of the method. The paper's CIFAR recipe (Wu et al. 2018, code
``lemniscate.pytorch``) is, per image:

    RandomResizedCrop(32, scale=(0.2, 1.0))       # area fraction in [0.2, 1], aspect ratio in [3/4, 4/3]
    ColorJitter(0.4, 0.4, 0.4, 0.4)               # brightness, contrast, saturation, hue
    RandomGrayscale(p=0.2)
    RandomHorizontalFlip()                        # commented out in its CIFAR script; kept here (p_flip=0: off)

torchvision's transforms work on one image (or draw *one* set of parameters for a whole batch), so
a DataLoader with CPU workers is the usual way to run them. Here every step is a tensor operation
on the whole batch, on whatever device the batch lives on (the airbench habit):

* crop + flip are one affine warp per image: output pixel u samples input point ``A_b u + t_b``
  with ``A_b = diag(±w_b, h_b)`` (w_b, h_b = crop width/height as fractions of the image; the sign is
  the flip) and ``t_b`` the crop centre; ``F.affine_grid`` + ``F.grid_sample`` do it in one call.
* brightness, contrast and saturation blend each image with black, its mean grey, and its own grey
  version, with a factor drawn per image from [1 - 0.4, 1 + 0.4] (torchvision's definitions).
* hue rotates each pixel's colour about the grey axis (1, 1, 1)/sqrt(3) by 2*pi*h, h ~ U[-0.4, 0.4].
  This is the common linear approximation of torchvision's HSV hue shift: cheaper, and the same idea.
* the jitter is applied in a fixed order (torchvision shuffles the order per image).

With ``AugmentConfig.identity()`` the function returns its input (as floats in [0, 1]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

# Luma weights of torchvision's rgb_to_grayscale (ITU-R 601).
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths. Defaults are the paper's code's recipe (lemniscate.pytorch), with the horizontal
    flip that its CIFAR script comments out kept on (``p_flip=0`` turns it off)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)  # area fraction of the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio w/h of the crop
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4  # fraction of the colour circle, at most 0.5
    p_gray: float = 0.2
    p_flip: float = 0.5
    rotate: float = 0.0  # largest rotation in degrees, drawn per image from [-rotate, rotate] (the course's; off by default)

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"crop_ratio={self.crop_ratio} must satisfy 0 < low <= high")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue={self.hue} must lie in [0, 0.5]")
        for name in ("p_gray", "p_flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is a probability and must lie in [0, 1]")
        if not 0.0 <= self.rotate <= 180.0:
            raise ValueError(f"rotate={self.rotate} is the largest rotation in degrees and must lie in [0, 180]")

    @classmethod
    def identity(cls) -> "AugmentConfig":
        """Settings under which augmentation changes nothing (a check, and the test transform)."""
        return cls(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), brightness=0.0, contrast=0.0,
                   saturation=0.0, hue=0.0, p_gray=0.0, p_flip=0.0, rotate=0.0)

    def with_(self, **changes) -> "AugmentConfig":
        return replace(self, **changes)


def _uniform(lo: float, hi: float, n: int, gen, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    r, g, b = x.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def random_resized_crop_flip(x: torch.Tensor, cfg: AugmentConfig, gen=None) -> torch.Tensor:
    """Per-image RandomResizedCrop + horizontal flip (+ a rotation when ``cfg.rotate``) as one batched affine warp;
    keeps the size. The rotation turns the crop's sampling grid: ``A_b = R(angle_b) diag(±w_b, h_b)``."""
    B, device = x.shape[0], x.device
    area = _uniform(*cfg.crop_scale, B, gen, device)  # (B,) fraction of the image area
    log_ratio = _uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), B, gen, device)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # (B,) crop width as a fraction of the image width
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    # The image spans [-1, 1]; a crop of half-width w fits when its centre lies in [-(1-w), 1-w].
    cx = (1.0 - w) * (2.0 * torch.rand(B, generator=gen, device=device) - 1.0)
    cy = (1.0 - h) * (2.0 * torch.rand(B, generator=gen, device=device) - 1.0)
    flip = torch.where(torch.rand(B, generator=gen, device=device) < cfg.p_flip, -1.0, 1.0)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)  # (B, 2, 3)
    if cfg.rotate > 0:  # drawn only when asked, so the recipes without it keep their random numbers
        angle = math.radians(cfg.rotate) * (2.0 * torch.rand(B, generator=gen, device=device) - 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        turn = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
        theta = torch.cat([turn @ theta[:, :, :2], theta[:, :, 2:]], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, gen=None) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue jitter of float images in [0, 1]."""
    B, device = x.shape[0], x.device
    view = (B, 1, 1, 1)
    if cfg.brightness > 0:  # blend with black
        b = _uniform(1 - cfg.brightness, 1 + cfg.brightness, B, gen, device).view(view)
        x = (x * b).clamp(0, 1)
    if cfg.contrast > 0:  # blend with the image's mean grey
        c = _uniform(1 - cfg.contrast, 1 + cfg.contrast, B, gen, device).view(view)
        mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (c * x + (1 - c) * mean).clamp(0, 1)
    if cfg.saturation > 0:  # blend with the image's own grey version
        s = _uniform(1 - cfg.saturation, 1 + cfg.saturation, B, gen, device).view(view)
        x = (s * x + (1 - s) * grayscale(x)).clamp(0, 1)
    if cfg.hue > 0:  # rotate colours about the grey axis u = (1,1,1)/sqrt(3) (Rodrigues' formula)
        angle = 2 * math.pi * _uniform(-cfg.hue, cfg.hue, B, gen, device)  # (B,)
        cos, sin = torch.cos(angle).view(B, 1, 1), torch.sin(angle).view(B, 1, 1)
        eye = torch.eye(3, device=device)
        uu = torch.full((3, 3), 1.0 / 3.0, device=device)  # u u^T
        k = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=device) / math.sqrt(3.0)  # [u]_x
        rot = cos * eye + (1 - cos) * uu + sin * k  # (B, 3, 3)
        x = torch.einsum("bij,bjhw->bihw", rot, x).clamp(0, 1)
    return x


def augment(images: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), gen: torch.Generator | None = None) -> torch.Tensor:
    """Augment a batch: uint8 (B, 3, H, W) in [0, 255] or float in [0, 1] -> float (B, 3, H, W) in [0, 1].

    Every image gets its own crop, flip, jitter and grayscale draw. ``gen`` (a ``torch.Generator`` on
    the batch's device) makes the draws reproducible.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"augment expects a batch of shape (B, 3, H, W), got {tuple(images.shape)}")
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    x = random_resized_crop_flip(x, cfg, gen)
    x = color_jitter(x, cfg, gen)
    if cfg.p_gray > 0:
        to_gray = torch.rand(x.shape[0], generator=gen, device=x.device) < cfg.p_gray  # (B,)
        x = torch.where(to_gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    return x
