"""Write the JPEG export of CIFAR-10 (``shared/data``) in torchvision's on-disk format.

    python benchmarks/jpeg_to_cifar_batches.py ../shared/data data/

makes ``data/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta), the folder
``load_cifar10`` and the CLI's ``--data cifar10`` read. The shipped checkpoint was trained from
it with exactly the command a learner with the real CIFAR-10 runs (see benchmarks/RESULTS.md).
Development tooling only: the course itself never needs ``shared/data``.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar_jpeg import load_jpeg_npz  # noqa: E402


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray, name: str) -> None:
    entry = {"batch_label": name, "labels": [int(y) for y in labels],
             "data": images.reshape(len(images), -1), "filenames": [f"{name}_{i}.jpg" for i in range(len(images))]}
    with open(path, "wb") as fh:
        pickle.dump(entry, fh, protocol=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared_data", type=Path, help="folder with cifar10_{train,test}_jpeg.npz")
    parser.add_argument("root", type=Path, help="data root; cifar-10-batches-py/ is written inside")
    args = parser.parse_args()
    folder = args.root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = load_jpeg_npz(args.shared_data / "cifar10_train_jpeg.npz")
    test = load_jpeg_npz(args.shared_data / "cifar10_test_jpeg.npz")
    x, y = train.images.numpy(), train.labels.numpy()  # (50000, 3, 32, 32) uint8, CHW like the original
    for b in range(5):
        part = slice(b * 10_000, (b + 1) * 10_000)
        write_batch(folder / f"data_batch_{b + 1}", x[part], y[part], f"training batch {b + 1} of 5")
    write_batch(folder / "test_batch", test.images.numpy(), test.labels.numpy(), "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(train.classes), "num_cases_per_batch": 10_000, "num_vis": 3072}, fh, protocol=2)
    print(f"wrote {len(x)} train and {len(test.labels)} test images to {folder}")


if __name__ == "__main__":
    main()
