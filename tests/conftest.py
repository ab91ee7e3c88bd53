"""Shared helpers for the tests: tiny datasets the tests make themselves (no network, no shared/)."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from instdisc_lesson.data import InstanceDataset


def make_dataset(n=64, classes=4, seed=0) -> InstanceDataset:
    """n random-but-structured images: each class has its own mean colour, so kNN has something to find."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = torch.rand(classes, 3, 1, 1, generator=g) * 200
    noise = torch.rand(n, 3, 32, 32, generator=g) * 55
    images = (base[labels] + noise).clamp(0, 255).to(torch.uint8)
    return InstanceDataset(images, labels, tuple(f"c{i}" for i in range(classes)), "tiny")


@pytest.fixture
def tiny():
    return make_dataset(64), make_dataset(32, seed=1)


def write_cifar_batches(folder, n_per_batch=6, seed=0):
    """Write files in torchvision's CIFAR-10 on-disk format (pickled dicts of 'data' and 'labels')."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, size=n_per_batch))
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, fh)
        written[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch}, fh)
    return written


def missing_browser(reason: str):
    if os.environ.get("INSTDISC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (INSTDISC_REQUIRE_BROWSER=1: the browser test must run here)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    """The system Chromium's path, once both it and Playwright are known to be here (else skip, or fail in CI)."""
    path = os.environ.get("INSTDISC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing_browser("no chromium on PATH: install Debian's package (apt-get install --no-install-recommends chromium) "
                 "or set INSTDISC_CHROMIUM to a Chromium executable")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_browser("the playwright pip package is not installed (pip install -r requirements.txt installs it, "
                        "with the test extra; or pip install playwright)")
    return path
