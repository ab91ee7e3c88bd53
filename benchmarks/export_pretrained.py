"""Write the shipped checkpoint and CIFAR-10 sample from a finished run (development tooling).

    python benchmarks/export_pretrained.py runs/pretrained-convnet-cifar10 --data-root data/

Reads the run's ``checkpoint.pt`` and ``metrics.json`` (from ``instdisc_lesson.pretrained.COMMAND``),
measures the exported weights again on the full CIFAR-10 test set (kNN k = 200, sigma = 0.1, all
50,000 training images as the reference), and writes to ``instdisc_lesson/assets/``:
- ``convnet_cifar10_instdisc.pt``: the model's state_dict (float32), config, how it was made, metrics;
- ``cifar10_test_sample.npz``: 1,000 test images (100 per class, fixed seed), the features of the
  first 16, and kNN top-1 on the sample's split (500 reference / 500 queries, k = 20) for the
  model, the same network untrained, and raw pixels.
Prints the two SHA-256 values that ``instdisc_lesson/pretrained.py`` records.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from instdisc_lesson.checkpoint import atomic_write, load_checkpoint
from instdisc_lesson.data import InstanceDataset, load_cifar10
from instdisc_lesson.knn import embed, knn_accuracy, pixel_mean, raw_pixel_features
from instdisc_lesson.models import build_model
from instdisc_lesson.pretrained import CHECKPOINT, COMMAND, SAMPLE, sha256
from instdisc_lesson.recipe import TrainConfig
from instdisc_lesson.trainer import Trainer

SAMPLE_K, SIGMA = 20, 0.1


def sample_indices(labels: torch.Tensor, per_class: int = 100, seed: int = 0) -> torch.Tensor:
    """per_class test images of each class; the first half of each class first (reference), then the rest."""
    g = torch.Generator().manual_seed(seed)
    chosen = [torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=g)[:per_class]]
              for c in range(int(labels.max()) + 1)]
    half = per_class // 2
    return torch.cat([c[:half] for c in chosen] + [c[half:] for c in chosen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    state = load_checkpoint(args.run / "checkpoint.pt")
    metrics = json.loads((args.run / "metrics.json").read_text())
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg.model, cfg.dim, cfg.head or "linear")
    model.load_state_dict(state["model"])
    model.eval()

    train, test = load_cifar10(args.data_root, train=True), load_cifar10(args.data_root, train=False)
    train_f, test_f = embed(model, train.images), embed(model, test.images)
    top1, top5 = knn_accuracy(train_f, train.labels, test_f, test.labels, cfg.knn_k, cfg.knn_sigma)
    assert abs(top1 - metrics["knn_top1"]) < 1e-6, (top1, metrics["knn_top1"])  # the run's own last evaluation
    train_seconds = sum(h["train_seconds"] for h in metrics["history"])
    shipped = {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "made_by": {
            "command": COMMAND, "epochs": state["epoch"], "train_seconds": round(train_seconds),
            "device": "CPU, 2 cores (Intel Xeon), torch 2.14.1", "date": "2026-11-23",
            "data": "CIFAR-10 from a JPEG export (pixels differ slightly from the original files), "
                    "50,000 training and 10,000 test images",
        },
        "metrics": {
            "knn_k": cfg.knn_k, "knn_sigma": cfg.knn_sigma,
            "knn_top1": top1, "knn_top5": top5,
            "random_init_knn_top1": metrics["random_init_knn_top1"], "random_init_knn_top5": metrics["random_init_knn_top5"],
            "raw_pixel_knn_top1": metrics["raw_pixel_knn_top1"], "raw_pixel_knn_top5": metrics["raw_pixel_knn_top5"],
            "history": [{k: h[k] for k in ("epoch", "loss", "knn_top1", "knn_top5") if k in h} for h in metrics["history"]],
        },
    }
    atomic_write(CHECKPOINT, lambda tmp: torch.save(shipped, tmp))

    # The offline sample: 1,000 test images, the recorded features and kNN on its own split.
    idx = sample_indices(test.labels)
    images, labels = test.images[idx].contiguous(), test.labels[idx]
    ref = InstanceDataset(images[:500], labels[:500], test.classes, "ref")
    qry = InstanceDataset(images[500:], labels[500:], test.classes, "qry")
    untrained = Trainer(cfg, ref, None, device="cpu", progress=False).model.eval()
    mean = pixel_mean(ref.images)
    feats = {"pretrained": model, "random_init": untrained}
    record = {f"knn_{name}_top1": knn_accuracy(embed(m, ref.images), ref.labels, embed(m, qry.images), qry.labels,
                                               SAMPLE_K, SIGMA)[0] for name, m in feats.items()}
    record["knn_raw_pixels_top1"] = knn_accuracy(raw_pixel_features(ref.images, mean), ref.labels,
                                                 raw_pixel_features(qry.images, mean), qry.labels, SAMPLE_K, SIGMA)[0]
    first16 = embed(model, ref.images[:16]).float().numpy()

    def write_sample(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=images.numpy(), labels=labels.numpy().astype(np.int64),
                                test_index=idx.numpy(), features_first16=first16, knn_k=SAMPLE_K, knn_sigma=SIGMA,
                                **{k: np.float64(v) for k, v in record.items()})

    atomic_write(SAMPLE, write_sample)
    print(json.dumps({k: v for k, v in shipped["metrics"].items() if k != "history"}, indent=1))
    print(json.dumps(record, indent=1), "train seconds", round(train_seconds))
    for path in (CHECKPOINT, SAMPLE):
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
