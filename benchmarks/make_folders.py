"""Build image folders as a practitioner has them, for calibrating the CLI's defaults (issue 13).

    python benchmarks/make_folders.py --cifar ../shared/data --per-class 500 --test-per-class 100 --out /tmp/cifar5k
    python benchmarks/make_folders.py --digits --out /tmp/digits
    python benchmarks/make_folders.py --mnist ../shared/data --part calib --per-class 250 --test-per-class 50 --out /tmp/mnist-calib

CIFAR-10: the JPEG files of the export in ``shared/data`` written unchanged as
``OUT/train/<class>/<i>.jpg`` and ``OUT/test/<class>/<i>.jpg`` (a balanced random subset of each split,
seeded). Digits: scikit-learn's 1,797 8x8 digits as grey PNGs at their own size, ``OUT/train`` 80 % and
``OUT/test`` 20 % per class (the folder loader upscales them to 32x32 like any photo).
Development tooling: the course never needs these folders.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def cifar_folder(data: Path, out: Path, per_class: int, test_per_class: int, seed: int = 0) -> int:
    written = 0
    for split, count in (("train", per_class), ("test", test_per_class)):
        z = np.load(data / f"cifar10_{split}_jpeg.npz")
        jpeg, offsets, labels, classes = z["jpeg"], z["offsets"], z["labels"], [str(c) for c in z["classes"]]
        rng = np.random.default_rng(seed)
        for c, name in enumerate(classes):
            (out / split / name).mkdir(parents=True, exist_ok=True)
            for i in np.sort(rng.permutation(np.flatnonzero(labels == c))[:count]):
                (out / split / name / f"{i}.jpg").write_bytes(jpeg[offsets[i]:offsets[i + 1]].tobytes())
                written += 1
    return written


def digits_folder(out: Path, seed: int = 0) -> int:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    written = 0
    for c in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == c))
        cut = round(0.8 * len(members))
        for split, chosen in (("train", members[:cut]), ("test", members[cut:])):
            (out / split / str(c)).mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)  # 8x8, 17 grey levels
                Image.fromarray(pixels, mode="L").save(out / split / str(c) / f"{i}.png")
                written += 1
    return written


def mnist_folder(data: Path, out: Path, part: str, per_class: int, test_per_class: int) -> int:
    """The grey digits of shared/data, as PNG files unchanged. ``part`` "calib" takes the first ``per_class`` training
    and the first half of the test images of each digit; "check" the next ``per_class`` and the other half: two
    folders with no image in common, one to choose the defaults on and one to check them on."""
    written = 0
    for split, count in (("train", per_class), ("test", test_per_class)):
        z = np.load(data / f"mnist_calib_{split}_png.npz")
        png, offsets, labels = z["png"], z["offsets"], z["labels"]
        for c in range(10):
            members = np.flatnonzero(labels == c)
            start = 0 if part == "calib" else (count if split == "train" else len(members) // 2)
            chosen = members[start:start + (count if split == "train" else min(count, len(members) // 2))]
            (out / split / str(c)).mkdir(parents=True, exist_ok=True)
            for i in chosen:
                (out / split / str(c) / f"{i}.png").write_bytes(png[offsets[i]:offsets[i + 1]].tobytes())
                written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, help="folder with cifar10_{train,test}_jpeg.npz")
    parser.add_argument("--digits", action="store_true", help="scikit-learn's digits instead")
    parser.add_argument("--mnist", type=Path, help="folder with mnist_calib_{train,test}_png.npz (grey 28x28 digits)")
    parser.add_argument("--part", choices=("calib", "check"), default="calib", help="--mnist: which disjoint slice")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty: choose a new folder")
    if args.digits:
        n = digits_folder(args.out, args.seed)
    elif args.mnist:
        n = mnist_folder(args.mnist, args.out, args.part, args.per_class, args.test_per_class)
    elif args.cifar:
        n = cifar_folder(args.cifar, args.out, args.per_class, args.test_per_class, args.seed)
    else:
        raise SystemExit("give --cifar FOLDER or --digits")
    print(f"{n:,} images -> {args.out}")


if __name__ == "__main__":
    main()
