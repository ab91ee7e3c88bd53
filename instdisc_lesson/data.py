"""Datasets that return ``(image, label, index)``: the index is the class instance discrimination predicts.

Taught in notebook 00. Every source (CIFAR-10, the offline quick set, an image folder) ends up in one
:class:`InstanceDataset`: a uint8 tensor of shape (n, 3, 32, 32) plus integer labels. Labels are used
only to *evaluate* (kNN, probes); training sees nothing but the index.

Keeping the whole set as one uint8 tensor is the airbench habit: 50,000 CIFAR images are 150 MB,
they can sit on the GPU, and a batch is just ``images[idx]``; augmentation then runs on the batch
(see ``augment.py``) with no DataLoader workers at all.
"""
from __future__ import annotations

import pickle
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import data_root
from .validate import check_data_source

IMAGE_SIZE = 32
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DatasetUnavailableError(RuntimeError):
    """Raised when a dataset cannot be found or downloaded; the message says what to do."""


@dataclass
class InstanceDataset:
    """n images (uint8, shape (n, 3, 32, 32)) with labels; item i is ``(image_i, label_i, i)``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or tuple(self.images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"images must be a uint8 tensor of shape (n, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images: they must match")
        if len(self.images) == 0:
            raise ValueError(f"dataset {self.name!r} has no images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index]), index

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def subset(self, indices) -> "InstanceDataset":
        """A smaller dataset; its indices are renumbered 0..len-1."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return InstanceDataset(self.images[indices], self.labels[indices], self.classes, self.name)

    def random_subset(self, size: int, seed: int = 0) -> "InstanceDataset":
        """``size`` images drawn at random (labels unused, as for unlabelled pretraining), in their original order;
        the same ``seed`` gives the same images, and a larger ``size`` contains every smaller one's images."""
        if not 0 < size <= len(self):
            raise ValueError(f"a subset of {size} images from {self.name or 'a dataset'} of {len(self)}: "
                             f"choose between 1 and {len(self)} (0 means all of them)")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[:size].sort().values)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float images in [0, 1]: the 'test transform' of the course. Float images (an
    augmented batch) are taken to be in [0, 1] already and come back as float32, never changed in place."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)  # .float() made a new tensor: dividing it in place is safe
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], not {images.dtype}")


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------
def _cifar_help(root: Path) -> str:
    return (
        f"CIFAR-10 is not in {root} and could not be downloaded.\n"
        "Fix it in one of these ways:\n"
        f"  1. download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it so that\n"
        f"     {root / 'cifar-10-batches-py'}/data_batch_1 ... test_batch exist;\n"
        "  2. point the course at a folder that already has it: set INSTDISC_DATA=/path/to/folder,\n"
        "     or pass root=... (CLI: --data-root);\n"
        "  3. or work offline: --data quick on the command line, INSTDISC_BUDGET=quick for the notebooks."
    )


def _read_cifar_batches(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    arrays, labels = [], []
    for name in names:
        with open(folder / name, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        arrays.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        if len(labels) != sum(len(a) for a in arrays):
            raise ValueError(f"{name} holds {len(arrays[-1])} images but a different number of labels")
    return np.concatenate(arrays), np.asarray(labels, dtype=np.int64)


def load_cifar10(root=None, train: bool = True, download: bool = True) -> InstanceDataset:
    """CIFAR-10 (train: 50,000 images, test: 10,000) in torchvision's on-disk format under ``root``.

    When ``root/cifar-10-batches-py`` is missing it is fetched with torchvision's own download
    (``torchvision.datasets.CIFAR10(download=True)``); if that fails (no network, say) the error
    says where to put the files or how to work offline instead (the quick set).
    """
    root = data_root(root)
    folder = root / "cifar-10-batches-py"
    needed = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if not all((folder / name).exists() for name in needed):
        if not download:
            raise DatasetUnavailableError(_cifar_help(root))
        new = not root.exists()
        try:
            import torchvision

            root.mkdir(parents=True, exist_ok=True)
            torchvision.datasets.CIFAR10(str(root), train=train, download=True)
        except BaseException as err:  # URLError, socket timeouts, bad archives ...: one clear message
            if new:  # a download that failed (or was stopped) leaves no folder behind
                shutil.rmtree(root, ignore_errors=True)
            if not isinstance(err, Exception):
                raise
            raise DatasetUnavailableError(f"{_cifar_help(root)}\n(download failed: {type(err).__name__}: {err})") from None
    try:
        images, labels = _read_cifar_batches(folder, train)
        classes = CIFAR10_CLASSES
        meta = folder / "batches.meta"
        if meta.exists():
            with open(meta, "rb") as fh:
                classes = tuple(pickle.load(fh, encoding="latin1")["label_names"])
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError, AttributeError, IndexError) as err:
        raise DatasetUnavailableError(
            f"The CIFAR-10 files in {folder} are unreadable ({type(err).__name__}: {err}).\n"
            "Delete that folder and download again, or work offline: --data quick (notebooks: INSTDISC_BUDGET=quick)."
        ) from None
    return InstanceDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, "cifar10-" + ("train" if train else "test"))


# ----------------------------------------------------------------------------------------------
# Image folders: root/train/<class>/*.png and optionally root/test/<class>/*.png
# ----------------------------------------------------------------------------------------------
def pil_to_tensor32(image) -> torch.Tensor:
    """Any PIL image -> uint8 (3, 32, 32): RGB, centre-cropped to a square, resized with antialiasing."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit (or 32-bit int) grey: scale, do not clip
        array = np.asarray(image, dtype=np.int64)
        scale = 257 if image.mode.startswith("I;16") or array.max() > 255 else 1  # 65535 / 257 = 255
        image = Image.fromarray((array // scale).clip(0, 255).astype(np.uint8), mode="L")
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != IMAGE_SIZE:
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8).copy()  # (32, 32, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_image(path) -> torch.Tensor | None:
    """One image file as uint8 (3, 32, 32), as the folder loader reads it; None when it is not a readable image
    (damaged, not an image, or too large to decode safely)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return pil_to_tensor32(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _read_split(split_dir: Path, classes: tuple[str, ...] | None):

    if not split_dir.is_dir():
        raise ValueError(f"image folder {split_dir} does not exist: expected {split_dir}/<class_name>/<images>")
    found = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if classes is None:
        classes = found
    if not classes:
        raise ValueError(f"image folder {split_dir} has no class sub-folders: expected {split_dir}/<class_name>/<images>")
    images, labels, bad = [], [], []
    for label, name in enumerate(classes):
        folder = split_dir / name
        # Images in sub-folders of a class folder belong to that class too (hidden files and folders aside).
        paths = sorted(p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)) \
            if folder.is_dir() else []
        for path in paths:
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            image = read_image(path)
            if image is None:
                bad.append(path)  # unreadable, or so large that decoding it could exhaust memory
            else:
                images.append(image), labels.append(label)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {split_dir}, e.g. {bad[0]} "
                      "(damaged, not an image, or too large to decode safely)", stacklevel=3)
    if not images:
        raise ValueError(
            f"image folder {split_dir} holds no readable images "
            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))} inside its class folders)"
        )
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), classes


def load_image_folder(path, holdout: float = 0.2, seed: int = 0) -> tuple[InstanceDataset, InstanceDataset]:
    """A practitioner's own images: ``path/train/<class>/*`` and optionally ``path/test/<class>/*``.

    Images of any size or mode (grayscale, RGBA, ...) become RGB 32x32. Class folders give labels,
    used only for evaluation. Without a ``test/`` folder a stratified ``holdout`` fraction of
    ``train/`` is held out for evaluation. Unreadable files are skipped with a warning that counts them.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    images, labels, classes = _read_split(root / "train", None)
    if (root / "test").is_dir():
        test_classes = {p.name for p in (root / "test").iterdir() if p.is_dir() and not p.name.startswith(".")}
        if test_classes and not test_classes & set(classes):
            raise ValueError(f"{root / 'test'} has classes {', '.join(sorted(test_classes))}, none of which is in "
                             f"{root / 'train'} ({', '.join(classes)}): name the class folders alike in both")
        if test_classes - set(classes):
            warnings.warn(f"{root / 'test'}: class folder(s) {', '.join(sorted(test_classes - set(classes)))} are not in "
                          "train/, so their images are left out of the evaluation (kNN can only predict train classes)",
                          stacklevel=2)
        test_images, test_labels, _ = _read_split(root / "test", classes)
        train = InstanceDataset(images, labels, classes, f"{root.name}-train")
        return train, InstanceDataset(test_images, test_labels, classes, f"{root.name}-test")
    full = InstanceDataset(images, labels, classes, root.name)
    return stratified_split(full, holdout, seed)


def stratified_split(dataset: InstanceDataset, holdout: float, seed: int = 0) -> tuple[InstanceDataset, InstanceDataset]:
    """Split off ``holdout`` of every class (at least one image of classes with two or more)."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout={holdout} must lie strictly between 0 and 1")
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in torch.unique(dataset.labels):
        members = torch.nonzero(dataset.labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        k = int(round(holdout * len(members))) if len(members) > 1 else 0
        k = max(k, 1) if len(members) > 1 else 0
        test_idx.append(members[:k])
        train_idx.append(members[k:])
    train_idx, test_idx = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    if len(test_idx) == 0:
        raise ValueError(f"dataset {dataset.name!r} is too small to hold out test images: add a test/ folder")
    train, test = dataset.subset(train_idx), dataset.subset(test_idx)
    train.name, test.name = f"{dataset.name}-train", f"{dataset.name}-test"
    return train, test


# ----------------------------------------------------------------------------------------------
# The offline quick set
# ----------------------------------------------------------------------------------------------
SHAPE_CLASSES = ("disc", "square", "triangle", "cross", "ring", "diamond", "bar", "frame", "target", "x")


def _shape_masks(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Ten shapes as boolean masks over coordinates (dx, dy) relative to the centre, in units of the radius."""
    ax, ay, r = dx.abs(), dy.abs(), torch.sqrt(dx ** 2 + dy ** 2)
    return torch.stack([
        r < 1,                                                    # disc
        (ax < 0.85) & (ay < 0.85),                                # square
        (dy < 0.8) & (dy > 1.9 * ax - 0.9),                       # triangle
        ((ax < 0.3) & (ay < 1)) | ((ay < 0.3) & (ax < 1)),        # cross
        (r < 1) & (r > 0.6),                                      # ring
        ax + ay < 1.1,                                            # diamond
        (ay < 0.3) & (ax < 1.1),                                  # bar
        (ax < 0.9) & (ay < 0.9) & ~((ax < 0.55) & (ay < 0.55)),   # frame
        ((r < 1) & (r > 0.7)) | ((ax < 0.15) & (ay < 1)) | ((ay < 0.15) & (ax < 1)),  # target
        (((dx - dy).abs() < 0.35) | ((dx + dy).abs() < 0.35)) & (r < 1.1),            # x
    ], dim=1)  # (n, 10, H, W)


def make_shapes(n_per_class: int = 200, seed: int = 0) -> InstanceDataset:
    """The quick set: ten kinds of shape, light on dark, at random places and sizes, with pixel noise.

    Each image draws its centre (8-24 px), radius (6-12 px), a light foreground and a dark background
    with a slight random tint, and Gaussian noise (sd 0.05). What tells the classes apart is the shape
    alone; where it sits, how big it is, and its exact shade are nuisances, which are the things the
    paper's augmentations (crops, colour jitter) vary. Raw pixels see mostly position, so pixel kNN
    is mediocre, and a random ConvNet is worse still (see README, "Quick mode").
    """
    g = torch.Generator().manual_seed(seed)
    n = 10 * n_per_class
    labels = torch.arange(10).repeat_interleave(n_per_class)  # (n,)
    ys, xs = torch.meshgrid(torch.arange(IMAGE_SIZE) + 0.5, torch.arange(IMAGE_SIZE) + 0.5, indexing="ij")
    cx, cy = 8 + 16 * torch.rand(n, 1, 1, generator=g), 8 + 16 * torch.rand(n, 1, 1, generator=g)
    radius = 6 + 6 * torch.rand(n, 1, 1, generator=g)
    masks = _shape_masks((xs - cx) / radius, (ys - cy) / radius)  # (n, 10, H, W)
    mask = masks[torch.arange(n), labels].unsqueeze(1).float()  # (n, 1, H, W): each image's own shape
    fg = 0.6 + 0.3 * torch.rand(n, 1, 1, 1, generator=g) + 0.1 * torch.rand(n, 3, 1, 1, generator=g)
    bg = 0.3 * torch.rand(n, 1, 1, 1, generator=g) + 0.1 * torch.rand(n, 3, 1, 1, generator=g)
    image = mask * fg + (1 - mask) * bg + 0.05 * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    images = (image.clamp(0, 1) * 255).round().to(torch.uint8)  # (n, 3, 32, 32)
    return InstanceDataset(images, labels, SHAPE_CLASSES, "shapes")


def load_quick(seed: int = 0) -> tuple[InstanceDataset, InstanceDataset]:
    """The offline quick set of the quick budget: 2,000 generated shapes, split 1,600 train / 400 test.

    Why not scikit-learn's digits: raw pixels already reach 96 % kNN there and instance discrimination
    made features worse, not better, in short runs (README, "Quick mode"). The shapes are built so that
    the nuisances are what the augmentations vary, which is the situation the method is made for.
    """
    return stratified_split(make_shapes(200, seed), 0.2, seed)


SMOKE_SIZES = (512, 256)  # training and test images kept under INSTDISC_SMOKE=1 (course_data)


def load_dataset(name: str, root=None, limit: tuple[int, int] | None = None) -> tuple[InstanceDataset, InstanceDataset]:
    """``"quick"``, ``"cifar10"`` or the path of an image folder -> (train, test).

    ``limit=(n_train, n_test)`` keeps only the first images of each split: the smoke scale, under which the
    same code runs in seconds. Nothing shrinks unless asked.
    """
    train, test = _load(name, root)
    if limit is not None:
        train, test = (part.subset(range(min(len(part), size))) for part, size in zip((train, test), limit))
    return train, test


def course_data(root=None) -> tuple[InstanceDataset, InstanceDataset]:
    """The notebooks' data in this budget: the quick set, or CIFAR-10; at the smoke scale (``INSTDISC_SMOKE=1``)
    its first ``SMOKE_SIZES`` images. The environment is read here, once, at the notebooks' edge."""
    from .config import dataset_name, is_smoke

    return load_dataset(dataset_name(), root, SMOKE_SIZES if is_smoke() else None)


def _load(name: str, root=None) -> tuple[InstanceDataset, InstanceDataset]:
    check_data_source(name)
    if name == "quick":
        return load_quick()
    if name == "cifar10":
        return load_cifar10(root, train=True), load_cifar10(root, train=False)
    return load_image_folder(name)
