"""Write the UMAP of all 10,000 CIFAR-10 test images that notebook 05 draws (development tooling).

    python benchmarks/export_umap.py --data-root data/ [--name paper200]

For the shipped network ``--name``, the same network untrained (the run's seed) and raw pixels: the 2-D UMAP
(umap-learn, 15 neighbours, cosine metric, seed 0) of the 10,000 test images' features, and per class the
weighted-kNN top-1 (k = 200, sigma = 0.1, all 50,000 training images as the reference: the protocol of every
number in the course). Written to ``instdisc_lesson/assets/cifar10_test_umap_<name>.npz`` (float16 coordinates,
about 0.1 MB), so the notebook shows what the network learned on the whole test set without CIFAR-10 or a
minute of UMAP. Prints the file's SHA-256 for ``pretrained.py``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from instdisc_lesson.checkpoint import atomic_write
from instdisc_lesson.data import load_cifar10
from instdisc_lesson.knn import embed, knn_scores, pixel_mean, rank_classes, raw_pixel_features
from instdisc_lesson.pretrained import ASSETS, load_pretrained, sha256
from instdisc_lesson.recipe import TrainConfig
from instdisc_lesson.trainer import Trainer


def per_class_knn(train_f, train_y, test_f, test_y, k=200, sigma=0.1) -> np.ndarray:
    """Weighted-kNN top-1 per class (10,), in [0, 1]."""
    hit = (rank_classes(knn_scores(train_f, train_y, test_f, k, sigma, 10))[:, 0] == test_y).double()
    return np.array([float(hit[test_y == c].mean()) for c in range(10)])


def main() -> None:
    import umap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--name", default="paper200")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, info = load_pretrained(name=args.name, device="cpu")
    train, test = load_cifar10(args.data_root, train=True), load_cifar10(args.data_root, train=False)
    untrained = Trainer(TrainConfig.from_dict(info["config"]), train, None, device="cpu", progress=False).model.eval()
    mean = pixel_mean(train.images)
    sets = {
        "shipped": (embed(model, train.images), embed(model, test.images)),
        "untrained": (embed(untrained, train.images), embed(untrained, test.images)),
        "pixels": (raw_pixel_features(train.images, mean), raw_pixel_features(test.images, mean)),
    }
    out = {"labels": test.labels.numpy().astype(np.int8), "classes": np.array(test.classes)}
    for name, (tr, te) in sets.items():
        start = time.time()
        out[f"knn_per_class_{name}"] = per_class_knn(tr, train.labels, te, test.labels)
        xy = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=0).fit_transform(te.numpy())
        out[f"xy_{name}"] = xy.astype(np.float16)
        print(f"{name}: kNN {out[f'knn_per_class_{name}'].mean():.1%} (per class "
              f"{np.round(100 * out[f'knn_per_class_{name}'], 1).tolist()}), {time.time() - start:.0f} s")

    path = ASSETS / f"cifar10_test_umap_{args.name}.npz"

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **out)

    atomic_write(path, write)
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
