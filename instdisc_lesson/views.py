"""Views fitted to the images: which augmentations keep an image's identity, chosen by looking at the images once.

Instance discrimination learns exactly what the augmentations leave unchanged (notebook 00), so a recipe made
for colour photographs (the paper's: crops down to 20 % of the area, colour jitter, random greyscale; the course
adds a horizontal flip) teaches the wrong invariances on other images. On grey hand-written digits the colour
jitter does nothing but noise, a crop of 20 % cuts the digit in pieces, and a mirror turns one symbol into
another. ``fitted_views`` looks at a sample of the training images and chooses (the course's rule, not the
paper's; calibrated in ``benchmarks/RESULTS.md`` section 11):

- **grey images** (all three channels equal): no saturation or hue jitter and no random greyscale;
- **content that fills little of the image** (marks on a plain background, like characters): crops of at least
  ``MILD_CROP`` of the area, so a view keeps the object;
- **grey marks on a plain background** get their own temperature and batch too, ``MARKS_TAU`` and
  ``MARKS_BATCH`` (``fitted_recipe``; measured on hand-written digits, RESULTS section 11);
- **the mirror**: off for grey marks on a plain background (characters and symbols, whose mirror is often
  another symbol), on otherwise; ``flip=`` (the CLI's ``--flip`` / ``--no-flip``) decides when the user knows.

Colour photographs filled by their content get the paper's recipe unchanged. ``parse_augment`` reads the CLI's
``--augment``: ``paper``, ``fitted``, or settings such as ``crop_min=0.5,p_flip=0``.
"""
from __future__ import annotations

import torch

from .augment import AugmentConfig

GREY_TOLERANCE = 8  # uint8 levels two channels may differ by and the pixel still count as grey (JPEG noise)
FILL_SMALL = 0.6  # content whose bounding box covers less than this share of the image "fills little of it"
MILD_CROP = 0.6  # the smallest crop area for such images (the paper's: 0.2)
SAMPLE = 2000  # images looked at
MARKS_TAU = 0.5  # the softmax's temperature for marks (the paper's 0.07 suits photos)
MARKS_BATCH = 16  # the batch for marks: 8x the updates of batch 128 for about 1.2x the time per epoch on a CPU


def look(images: torch.Tensor, seed: int = 0) -> dict:
    """What the training images are like, from up to ``SAMPLE`` of them (uint8, (n, 3, H, W)):

    ``grey``: share of images whose channels agree within ``GREY_TOLERANCE`` at 99 % of their pixels;
    ``fill``: median share of the image covered by the bounding box of its content (pixels that differ from the
    image's border colour by more than a quarter of the range); ``plain_border``: share of images whose border is
    one colour (its pixels within a tenth of the range of their median), i.e. marks on a plain background.
    """
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:SAMPLE]
    x = images[pick].float()  # (s, 3, H, W) in [0, 255]
    spread = (x.amax(1) - x.amin(1))  # (s, H, W): how far apart the channels are at each pixel
    grey = ((spread <= GREY_TOLERANCE).float().mean((1, 2)) >= 0.99).float().mean().item()
    lum = x.mean(1)  # (s, H, W)
    border = torch.cat([lum[:, :2].flatten(1), lum[:, -2:].flatten(1), lum[:, :, :2].flatten(1), lum[:, :, -2:].flatten(1)], 1)
    level = border.median(1).values.view(-1, 1, 1)  # (s, 1, 1): the background's level
    plain = ((border - level.view(-1, 1)).abs() <= 25.5).float().mean(1) >= 0.9
    content = (lum - level).abs() > 64  # (s, H, W)
    rows, cols = content.any(2), content.any(1)  # (s, H), (s, W)
    height = _extent(rows) / lum.shape[1]
    width = _extent(cols) / lum.shape[2]
    fill = torch.where(content.flatten(1).any(1), height * width, torch.ones_like(height))  # no content: a texture
    return {"grey": grey, "fill": fill.median().item(), "plain_border": plain.float().mean().item(), "images": len(pick)}


def _extent(mask: torch.Tensor) -> torch.Tensor:
    """(s, L) booleans -> (s,) length from the first True to the last (0 where none)."""
    idx = torch.arange(mask.shape[1], dtype=torch.float32)
    first = torch.where(mask, idx, float("inf")).amin(1)
    last = torch.where(mask, idx, -1.0).amax(1)
    return (last - first + 1).clamp(min=0)


def fitted_views(images: torch.Tensor, flip: bool | None = None, base: AugmentConfig = AugmentConfig(),
                 seen: dict | None = None) -> tuple[AugmentConfig, list[str]]:
    """``(views, reasons)``: ``base`` (the paper's recipe) changed only where the images call for it, each change
    with its reason in words. ``flip`` True/False overrides the choice of the mirror; ``seen``: ``look(images)``."""
    seen, changes, reasons = seen or look(images), {}, []
    grey, marks = _grey(seen), _marks(seen)
    if grey:
        changes.update(saturation=0.0, hue=0.0, p_gray=0.0)
        reasons.append(f"grey images ({seen['grey']:.0%} of {seen['images']:,} looked at): no colour jitter or greyscale")
    if marks:
        changes["crop_scale"] = (max(MILD_CROP, base.crop_scale[0]), base.crop_scale[1])
        reasons.append(f"content fills little of the image (its bounding box: {seen['fill']:.0%}, on a plain background): "
                       f"crops of at least {MILD_CROP:.0%} of the area, so a view keeps the object")
    mirror = (not (grey and marks)) if flip is None else flip
    if not mirror and base.p_flip > 0:
        changes["p_flip"] = 0.0
        reasons.append("no mirror: " + ("--no-flip" if flip is False else "grey marks on a plain background (characters, "
                                        "symbols) often become another symbol when mirrored; --flip turns it on"))
    elif mirror and base.p_flip == 0:
        changes["p_flip"] = 0.5
        reasons.append("mirror on (--flip)")
    if not reasons:
        reasons.append("colour images filled by their content: the paper's recipe unchanged")
    return base.with_(**changes), reasons


def fitted_recipe(images: torch.Tensor, flip: bool | None = None, base: AugmentConfig = AugmentConfig(),
                  tau: bool = True) -> tuple[dict, list[str]]:
    """``(settings, reasons)``: the views (``fitted_views``) and, for grey marks on a plain background, the
    temperature and batch the course calibrated on hand-written digits (``MARKS_TAU``, ``MARKS_BATCH``;
    benchmarks/RESULTS.md section 11b, with the default softmax; NCE takes the same tau, not measured on
    digits). ``tau=False`` leaves the temperature to the objective (PIC's own, none for eq. 1). Photos get the views only, so their recipe is the one calibrated on photos."""
    seen = look(images)
    views, reasons = fitted_views(images, flip, base, seen)
    settings = {"augment": views}
    if _grey(seen) and _marks(seen):
        settings["batch_size"] = max(2, min(MARKS_BATCH, len(images) // 4))  # a small folder: at most a quarter of it
        if tau:
            settings["tau"] = MARKS_TAU
        reasons.append(f"many near-alike marks: {'tau ' + str(MARKS_TAU) + ' and ' if tau else ''}batch {settings['batch_size']} "
                       f"(a low tau spends the push on each image's nearest others, and here those share its class; "
                       f"small batches give more updates in the same time on a CPU)")
    return settings, reasons


def _grey(seen: dict) -> bool:
    return seen["grey"] >= 0.95


def _marks(seen: dict) -> bool:
    return seen["fill"] < FILL_SMALL and seen["plain_border"] >= 0.9


_KEYS = {"crop_min": "crop_scale", "brightness": "brightness", "contrast": "contrast", "saturation": "saturation",
         "hue": "hue", "p_gray": "p_gray", "p_flip": "p_flip", "rotate": "rotate"}


def parse_augment(text: str, base: AugmentConfig) -> AugmentConfig:
    """``--augment KEY=VALUE,...`` on top of ``base``; keys: crop_min, brightness, contrast, saturation, hue, p_gray,
    p_flip. A mistake is refused with the keys that exist."""
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _KEYS:
            raise ValueError(f"--augment {text!r}: {item!r} is not KEY=VALUE with KEY one of {', '.join(_KEYS)} "
                             "(or give a preset: paper, fitted)")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--augment {text!r}: {key}={value!r} is not a number") from None
        field = _KEYS[key.strip()]
        changes[field] = (number, base.crop_scale[1]) if field == "crop_scale" else number
    return base.with_(**changes)
