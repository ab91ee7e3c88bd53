"""Calibrate quick-mode settings: train with given overrides and print kNN per epoch next to baselines.

    python benchmarks/calibrate.py --data quick --set epochs=12 objective='nce'
    python benchmarks/calibrate.py --data ../shared/data --per-class 500 --set epochs=10
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instdisc_lesson.augment import AugmentConfig  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from instdisc_lesson.data import IMAGE_SIZE, InstanceDataset, load_quick, stratified_split  # noqa: E402
from instdisc_lesson.knn import raw_pixel_knn  # noqa: E402
from instdisc_lesson.recipe import quick_config  # noqa: E402
from instdisc_lesson.trainer import Trainer  # noqa: E402


def load_digits32(seed: int = 0) -> tuple[InstanceDataset, InstanceDataset]:
    """scikit-learn's 1,797 handwritten digits (8x8, installed with scikit-learn), as 3x32x32 RGB uint8.

    Upscaled bilinearly and repeated over the three channels, so they take the same code path as
    CIFAR-10. Split 80/20 per class: 1,437 train / 360 test.
    """
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=IMAGE_SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    images = (x * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()  # (1797, 3, 32, 32)
    full = InstanceDataset(images, torch.from_numpy(digits.target).long(), tuple(str(d) for d in range(10)), "digits")
    return stratified_split(full, 0.2, seed)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="quick")
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--aug", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=2, help="CPU threads (the RESULTS runs marked * used 1, two at a time)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.data == "digits":
        train, test = load_digits32()
    elif a.data == "quick":
        train, test = load_quick()
    else:
        from cifar_jpeg import load_jpeg_npz

        train = load_jpeg_npz(Path(a.data) / "cifar10_train_jpeg.npz", per_class=a.per_class)
        test = load_jpeg_npz(Path(a.data) / "cifar10_test_jpeg.npz", per_class=a.test_per_class)
    over = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in a.set)}
    aug = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in a.aug)}
    cfg = quick_config(**over, augment=AugmentConfig(**aug))
    print("config", json.dumps(cfg.to_dict()), flush=True)
    for k in sorted({cfg.knn_k, 20, 200} & set(range(1, len(train) + 1))):
        print(f"raw pixels k={k}: {raw_pixel_knn(train, test, k=k, sigma=cfg.knn_sigma)}", flush=True)
    t = Trainer(cfg, train, test, progress=False)
    start = time.time()
    t.fit(0)
    print("random init", t.monitor.baselines, flush=True)
    for e in range(cfg.epochs):
        t.fit(e + 1)
        h = t.history[-1]
        print(f"epoch {h['epoch']:3d} loss {h['loss']:.3f} knn {h.get('knn_top1', float('nan')):.3f} "
              f"bank {h.get('bank_knn_top1') or float('nan'):.3f} t={time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
