"""Few labels: what instance discrimination buys when only a fraction of the images is labelled.

Taught in notebook 09. Wu et al. 2018 (sec. 4.3, ImageNet) pretrain on every image *without* labels,
then train with a small fraction of the labels, and compare with the same network trained from scratch
on those labelled images alone. Here, on CIFAR-10, each fraction is measured four ways on the same
labelled images (the same number per class) and the same test images:

    knn       weighted kNN on frozen features, the labelled images as the reference set (sec. 3.4)
    probe     a linear probe on frozen features of the labelled images (``knn.linear_probe``)
    finetune  the pretrained network plus a new linear classifier, every weight trained on the labelled images
    scratch   the same network and classifier from random weights, trained the same way: the baseline

Fine-tuning and training from scratch share one recipe (:func:`supervised`): the course's augmentation,
SGD with momentum 0.9 and weight decay 5e-4, a cosine learning-rate schedule, and a fixed number of
*steps* whatever the fraction, so a 1 % run is not starved of updates.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import AugmentConfig, augment
from .data import to_float
from .validate import check_positive, check_positive_int


def balanced_fraction(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of ``fraction`` of the images, the same number from every class (at least one), drawn at random.

    Example:
        >>> idx = balanced_fraction(train.labels, 0.01)   # CIFAR-10: 50 images per class, 500 in all
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must lie in (0, 1]: the share of training images whose labels are used")
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = max(1, round(fraction * len(labels) / len(classes)))
    chosen = []
    for c in classes.tolist():
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


class Classifier(nn.Module):
    """An encoder's backbone (before its projection head) and a linear layer onto the classes."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(encoder.width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder.features(x))  # (B, classes) logits


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 of ``model``'s logits on uint8 ``images`` (eval mode, no augmentation)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(to_float(images[start:start + batch_size].to(device)))
        correct += int((logits.argmax(1).cpu() == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)


def supervised(encoder: nn.Module, train, idx: torch.Tensor, test, steps: int = 600, batch_size: int = 64,
               lr: float = 0.05, seed: int = 0, eval_every: int = 0, augment_cfg: AugmentConfig | None = None) -> dict:
    """Train ``encoder`` (a copy; the argument is not changed) with a new linear classifier on the labelled
    images ``train[idx]``: cross-entropy, augmented views, SGD (momentum 0.9, weight decay 5e-4), cosine
    schedule over ``steps`` steps. Returns ``{"top1": test accuracy, "history": [(step, top1), ...]}``.
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive("lr", lr)
    device = next(encoder.parameters()).device
    torch.manual_seed(seed)
    model = Classifier(copy.deepcopy(encoder), train.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    images, labels = train.images[idx].to(device), train.labels[idx].to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    batch = min(batch_size, len(idx))
    history = []
    model.train()
    for step in range(1, steps + 1):
        pick = torch.randint(0, len(idx), (batch,), generator=gen, device=device)
        x = augment(images[pick], augment_cfg or AugmentConfig(), gen)
        loss = F.cross_entropy(model(x), labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if eval_every and step % eval_every == 0 and step < steps:
            history.append((step, accuracy(model, test.images, test.labels)))
    top1 = accuracy(model, test.images, test.labels)
    history.append((steps, top1))
    return {"top1": top1, "history": history}


def few_labels(pretrained: nn.Module, untrained: nn.Module, train, test, fraction: float, steps: int = 600,
               k: int = 200, seed: int = 0, eval_every: int = 0) -> dict:
    """One label fraction, every way: kNN and linear probe on frozen features (pretrained, untrained, raw
    pixels) with the labelled images as the reference, fine-tuning the pretrained network, and training
    the untrained one from scratch, all on the same labelled images. kNN uses ``k`` neighbours, at most
    as many as there are labelled images per class. Returns a flat dict of top-1 values."""
    from .knn import embed, knn_accuracy, linear_probe, pixel_mean, raw_pixel_features

    idx = balanced_fraction(train.labels, fraction, seed)
    k = min(k, len(idx) // train.num_classes or 1)  # never more neighbours than labelled images per class
    labels = train.labels[idx]
    mean = pixel_mean(train.images[idx])
    frozen = {
        "pretrained": (embed(pretrained, train.images[idx]), embed(pretrained, test.images)),
        "untrained": (embed(untrained, train.images[idx]), embed(untrained, test.images)),
        "raw_pixel": (raw_pixel_features(train.images[idx], mean), raw_pixel_features(test.images, mean)),
    }
    result = {"fraction": fraction, "labelled_images": len(idx)}
    for name, (ref, queries) in frozen.items():
        result[f"{name}_knn_top1"] = knn_accuracy(ref, labels, queries, test.labels, k, 0.1, train.num_classes)[0]
        result[f"{name}_probe_top1"] = linear_probe(ref, labels, queries, test.labels)["top1"]
    finetune = supervised(pretrained, train, idx, test, steps, seed=seed, eval_every=eval_every)
    scratch = supervised(untrained, train, idx, test, steps, seed=seed, eval_every=eval_every)
    result.update(finetune_top1=finetune["top1"], scratch_top1=scratch["top1"],
                  finetune_history=finetune["history"], scratch_history=scratch["history"])
    return result
