"""What a run leaves to look at: ``report.png`` beside its ``metrics.json``, and features to take away.

``write_report`` draws, for the user's own images: the loss and kNN top-1 per epoch with the untrained
network's and raw pixels' kNN as lines; a retrieval grid (test images and their nearest training images,
by the learned features and by pixels; a red frame marks another class); and a UMAP of the test features
coloured by class when umap-learn is installed. ``embed_folder`` writes the features of any folder of
images, one row per readable file with its name, to a ``.npz`` (``python -m instdisc_lesson embed``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .knn import embed, pixel_mean, raw_pixel_features, retrieve

QUERIES, NEIGHBOURS = 6, 5


def _mosaic(rows: list[list[torch.Tensor]], frames: list[list[bool | None]], pad: int = 3) -> np.ndarray:
    """uint8 images (3, H, W) in rows -> one RGB array; a frame green (True), red (False) or white (None)."""
    h, w = rows[0][0].shape[1:]
    out = np.ones((len(rows) * (h + 2 * pad), len(rows[0]) * (w + 2 * pad), 3), dtype=np.float32)
    colours = {True: (0.1, 0.65, 0.1), False: (0.85, 0.1, 0.1), None: (1.0, 1.0, 1.0)}
    for r, (row, marks) in enumerate(zip(rows, frames)):
        for c, (image, mark) in enumerate(zip(row, marks)):
            y, x = r * (h + 2 * pad), c * (w + 2 * pad)
            out[y:y + h + 2 * pad, x:x + w + 2 * pad] = colours[mark]
            out[y + pad:y + pad + h, x + pad:x + pad + w] = image.permute(1, 2, 0).float().numpy() / 255
    return out


def _grid(train, test, train_f, test_f, picks) -> np.ndarray:
    _, nn = retrieve(train_f, test_f[picks], NEIGHBOURS)
    rows = [[test.images[q]] + [train.images[j] for j in nn[i]] for i, q in enumerate(picks)]
    frames = [[None] + [bool(train.labels[j] == test.labels[q]) for j in nn[i]] for i, q in enumerate(picks)]
    return _mosaic(rows, frames)


def write_report(model, train, test, metrics: dict, path, seed: int = 0) -> list[str]:
    """Draw the run's report into ``path`` (a PNG); returns the panels drawn, by name."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import draw_baselines

    history = metrics["history"]
    train_f, test_f = embed(model, train.images), embed(model, test.images)
    mean = pixel_mean(train.images)
    train_p, test_p = raw_pixel_features(train.images, mean), raw_pixel_features(test.images, mean)
    picks = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:QUERIES]
    fig = plt.figure(figsize=(15, 9.5))
    grid = fig.add_gridspec(2, 6, height_ratios=(1, 1.25))
    ax = fig.add_subplot(grid[0, 0:2])
    ax.plot([e["epoch"] for e in history], [e["loss"] for e in history], "o-", ms=3)
    ax.set(xlabel="epoch", ylabel="training loss", title=f"loss ({metrics['config']['objective']})")
    ax = fig.add_subplot(grid[0, 2:4])
    scored = [e for e in history if "knn_top1" in e]
    ax.plot([0] + [e["epoch"] for e in scored], [100 * metrics["random_init_knn_top1"]] + [100 * e["knn_top1"] for e in scored],
            "o-", ms=3, label="learned features")
    draw_baselines(ax, metrics)
    ax.set(xlabel="epoch", ylabel="kNN top-1 on the test images (%)", title=f"kNN (k = {metrics['config']['knn_k']})")
    ax.legend(fontsize=8, loc="lower right")
    panels = ["loss", "knn"]
    ax = fig.add_subplot(grid[0, 4:6])
    try:
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = umap.UMAP(random_state=seed, n_jobs=1).fit_transform(test_f.numpy())
        labels = test.labels.numpy()
        cmap = plt.get_cmap("tab10")
        for c in np.unique(labels):
            name = test.classes[c] if test.classes else str(c)
            ax.scatter(*xy[labels == c].T, s=5, color=cmap(int(c) % 10), label=name)
        ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set(title="UMAP of the test features (colour: class)", xticks=[], yticks=[])
        panels.append("umap")
    except ImportError:
        ax.axis("off")
        ax.text(0.5, 0.5, "UMAP: pip install umap-learn", ha="center", va="center")
    for col, (name, (a, b)) in enumerate({"learned features": (train_f, test_f), "raw pixels": (train_p, test_p)}.items()):
        ax = fig.add_subplot(grid[1, 3 * col:3 * col + 3])
        ax.imshow(_grid(train, test, a, b, picks), interpolation="nearest")
        ax.set(xticks=[], yticks=[], title=f"by {name}: a test image, then its {NEIGHBOURS} nearest training images "
                                           "(green: same class, red: another)")
        ax.title.set_fontsize(9)
        panels.append(f"retrieval: {name}")
    fig.suptitle(f"{Path(str(metrics['config']['data'])).name}: kNN {metrics['knn_top1']:.1%} (untrained {metrics['random_init_knn_top1']:.1%}, "
                 f"raw pixels {metrics['raw_pixel_knn_top1']:.1%}), {len(history)} epochs", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
    return panels


def embed_folder(model, folder, out, batch_size: int = 256) -> dict:
    """Features of every image under ``folder`` (any depth) to ``out`` (.npz: ``features`` (n, d) float32,
    ``files`` relative paths). Files that cannot be read as images are skipped, each named in one warning."""
    from .data import read_image

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder: give a folder of images to embed")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images, names, skipped = [], [], []
    for path in files:
        image = read_image(path)
        if image is None:
            skipped.append(str(path.relative_to(root)))
        else:
            images.append(image), names.append(str(path.relative_to(root)))
    if skipped:
        warnings.warn(f"{len(skipped)} file(s) under {root} are not readable images and were left out: "
                      + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""), stacklevel=2)
    if not images:
        raise ValueError(f"no readable images under {root}: nothing to embed")
    features = embed(model, torch.stack(images), batch_size).numpy().astype(np.float32)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, features=features, files=np.array(names))
    return {"images": len(names), "skipped": skipped, "dim": features.shape[1], "out": str(out)}
