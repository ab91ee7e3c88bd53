"""Figures for the notebooks. The only module (with ``widgets.py``) that imports matplotlib.

Every function draws on a new figure (or the ``ax`` given), labels its axes, and returns the figure,
so the notebooks stay short and the figures look alike.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import recipe
from .data import InstanceDataset


def _rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) float for imshow."""
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def show_images(images, titles=None, ncols: int = 10, size: float = 1.0, suptitle: str | None = None):
    """A grid of images (uint8 or float in [0, 1]), optionally titled."""
    n = len(images)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(_rgb(image), interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_classes(dataset: InstanceDataset, per_class: int = 8):
    """``per_class`` images of every class, one row each, class names on the left."""
    C = dataset.num_classes
    fig, axes = plt.subplots(C, per_class, figsize=(per_class * 0.9, C * 0.9), squeeze=False)
    for c in range(C):
        members = torch.nonzero(dataset.labels == c).flatten()[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(members):
                ax.imshow(_rgb(dataset.images[members[j]]), interpolation="nearest")
        axes[c, 0].set_ylabel(dataset.classes[c] if dataset.classes else str(c), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{dataset.name}: {len(dataset)} images, {C} classes (labels used only for evaluation)")
    fig.tight_layout()
    return fig


_BASELINE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))  # one dash style per baseline line
BASELINES = (("untrained network", "random_init_knn_top1"), ("raw pixels", "raw_pixel_knn_top1"))


def draw_baselines(ax, metrics: dict) -> None:
    """A run's baselines (``metrics``: its metrics.json or record) on a kNN axis in %: the untrained network's and
    raw pixels' kNN top-1, dashed grey lines named with their values."""
    for (name, key), style in zip(BASELINES, _BASELINE_STYLES):
        if key in metrics:
            ax.axhline(100 * metrics[key], ls=style, lw=1, color="gray", label=f"{name} {100 * metrics[key]:.1f}")


def plot_curves(curves: dict, xlabel: str, ylabel: str, title: str, ax=None, hlines: dict | None = None, logy=False):
    """Several named curves ``{name: (x, y)}`` (or ``{name: y}``) on one axis, with optional baselines."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, values in curves.items():
        x, y = values if isinstance(values, tuple) else (np.arange(1, len(values) + 1), values)
        ax.plot(x, y, label=name, marker="o" if len(y) <= 30 else None, markersize=3)
    # Baselines are named in the legend, each in its own dash style: text written beside the lines collided
    # when two baselines lie close (untrained and raw pixels often differ by one point).
    for (name, value), style in zip((hlines or {}).items(), _BASELINE_STYLES):
        ax.axhline(value, ls=style, lw=1, color="gray", label=f"{name} {value:.1f}")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def plot_history(histories: dict, baselines: dict | None = None, key: str = "knn_top1"):
    """Loss and kNN accuracy per epoch for several runs, with baseline accuracies as dashed lines."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    plot_curves({n: ([h["epoch"] for h in hist], [h["loss"] for h in hist]) for n, hist in histories.items()},
                "epoch", "training loss", "loss", ax=a1)
    plot_curves({n: ([h["epoch"] for h in hist if key in h], [100 * h[key] for h in hist if key in h]) for n, hist in histories.items()},
                "epoch", "kNN top-1 on held-out images (%)", "kNN accuracy", ax=a2,
                hlines={k: 100 * v for k, v in (baselines or {}).items()})
    fig.tight_layout()
    return fig


def plot_embeddings(embeddings: dict, labels, classes, title: str = "UMAP of the test images"):
    """Side-by-side 2-D embeddings ``{name: (n, 2) array}``, coloured by class."""
    k = len(embeddings)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 4.2), squeeze=False)
    labels = np.asarray(labels)
    cmap = plt.get_cmap("tab10")
    for ax, (name, xy) in zip(axes[0], embeddings.items()):
        size = min(6.0, 20000 / len(xy))  # 1,000 points at 6; 10,000 at 2, small enough that the mix shows
        for c in range(len(classes)):
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=1.0 if size >= 6 else 0.6, color=cmap(c % 10),
                       label=classes[c], linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlabel("UMAP 1"), ax.set_ylabel("UMAP 2")
    legend = axes[0, -1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
        handle.set_sizes([20])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def retrieval_grid(queries: torch.Tensor, query_labels, neighbours: torch.Tensor, neighbour_labels, classes,
                   sims: torch.Tensor | None = None, title="query | its 10 nearest training images"):
    """The paper's figure: each row is a query image then its nearest neighbours; wrong classes framed red."""
    Q, K = neighbours.shape[:2]
    fig, axes = plt.subplots(Q, K + 1, figsize=((K + 1) * 0.95, Q * 1.05), squeeze=False)
    for q in range(Q):
        axes[q, 0].imshow(_rgb(queries[q]), interpolation="nearest")
        axes[q, 0].set_ylabel(classes[int(query_labels[q])], rotation=0, ha="right", va="center", fontsize=8)
        for j in range(K):
            ax = axes[q, j + 1]
            ax.imshow(_rgb(neighbours[q, j]), interpolation="nearest")
            wrong = int(neighbour_labels[q, j]) != int(query_labels[q])
            for spine in ax.spines.values():
                spine.set_edgecolor("red" if wrong else "green")
                spine.set_linewidth(2)
            if sims is not None:
                ax.set_title(f"{float(sims[q, j]):.2f}", fontsize=6)
        for ax in axes[q]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("query", fontsize=8)
    fig.suptitle(title + " (green: same class, red: other class; numbers: cosine)", fontsize=9)
    fig.tight_layout()
    return fig


def bar_table(rows: dict, ylabel="kNN top-1 (%)", title="", reference: dict | None = None,
              label: str = "measured here", more: tuple | None = None):
    """Bars of measured values ``{name: value in [0, 1]}``, with optional reference values (in %) beside them.

    ``more = (label, {name: value in [0, 1]})`` draws a second measured series between the two (a name it
    lacks gets no bar), e.g. the same rows at another training length.
    """
    names = list(rows)
    x = np.arange(len(names))
    series = [(label, {n: 100 * rows[n] for n in names}, None)]
    if more is not None:
        series.append((more[0], {n: 100 * v for n, v in more[1].items()}, "C3"))
    if reference:
        series.append(("paper (CIFAR-10, ResNet-18, 200 epochs)", reference, "lightgray"))
    width = 0.8 / len(series) if len(series) > 1 else 0.6
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) * (1 + 0.25 * (len(series) > 2))), 4.0))
    top = 0.0
    for i, (name, values, color) in enumerate(series):
        vals = [values.get(n, np.nan) for n in names]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name, color=color)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}" for v in vals], fontsize=7)
        top = max([top] + [v for v in vals if not np.isnan(v)])
    if top > 0:
        ax.set_ylim(0, 1.1 * top)   # room for the labels above the tallest bar
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.08), ncol=len(series), frameon=False)
    fig.tight_layout()
    return fig


def plot_records(records: dict, highlight: str | None = None, title: str = "", logy: bool = False):
    """Loss and kNN top-1 per epoch of recorded runs ``{label: record}`` (``instdisc_lesson.records``).

    The baselines of the first record (untrained network, raw pixels) are drawn dashed; ``highlight``
    draws one run bold and the others faint (for sliders). The suptitle says where the records ran.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (label, record) in enumerate(records.items()):
        bold = highlight is None or label == highlight
        style = dict(color=f"C{i}", lw=2.4 if bold else 0.9, alpha=1.0 if bold else 0.4, marker="o", markersize=3, label=label)
        history = record["history"]
        a1.plot([h["epoch"] for h in history], [h["loss"] for h in history], **style)
        evaluated = [h for h in history if "knn_top1" in h]
        a2.plot([h["epoch"] for h in evaluated], [100 * h["knn_top1"] for h in evaluated], **style)
    first = next(iter(records.values()))
    draw_baselines(a2, first)
    a1.set_ylabel("training loss" + (" (log scale)" if logy else "")); a1.set_title("loss per epoch")
    a2.set_ylabel("kNN top-1 on the test images (%)"); a2.set_title("kNN accuracy")
    if logy:
        a1.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for ax in (a1, a2):
        ax.set_xlabel("epoch"); ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    # Outside the axes, so that it covers neither a curve nor a baseline, whatever the records hold.
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    where = f"{first['data'].split(';')[0]}, {first['epochs']} epochs, {first['device'].split(' (')[0]}"
    fig.suptitle(f"{title} (records: {where})" if title else f"records: {where}", fontsize=10)
    fig.tight_layout()
    return fig


def lr_drops(run: dict) -> list[int]:
    """The epochs after which a run's learning rate fell x0.1 (``recipe.lr_drops`` of its config)."""
    cfg = run["config"]
    return recipe.lr_drops(cfg["epochs"], tuple(cfg.get("lr_milestones", recipe.TrainConfig.lr_milestones)))


def plot_budget(runs: dict, title: str = ""):
    """The same objective trained for different numbers of epochs: loss and kNN top-1 against the epoch
    (log axis, so a 5-epoch run is not squeezed against a 200-epoch one). ``runs`` is ``{label: record}``
    (``instdisc_lesson.records``, or anything with ``history`` and ``config``); each run's learning-rate
    drops are marked with a triangle on its kNN curve's axis, and the first run's baselines drawn dashed.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    lowest = []
    for i, (label, run) in enumerate(runs.items()):
        # runs that share their first epochs draw on top of each other: the later (longer) ones wider and beneath
        history, style = run["history"], dict(color=f"C{i}", lw=1.2 + 0.8 * i, zorder=10 - i, label=label)
        a1.plot([h["epoch"] for h in history], [h["loss"] for h in history], **style)
        evaluated = [h for h in history if "knn_top1" in h]
        a2.plot([h["epoch"] for h in evaluated], [100 * h["knn_top1"] for h in evaluated], marker="o", markersize=3, **style)
        lowest += [100 * h["knn_top1"] for h in evaluated]
        drops = lr_drops(run)
        a2.plot(drops, [0.03] * len(drops), "^", color=f"C{i}", markersize=7, transform=a2.get_xaxis_transform(),
                clip_on=False)
    first = next(iter(runs.values()))
    draw_baselines(a2, first)
    lowest += [100 * first[key] for _, key in BASELINES if key in first]
    a2.set_ylim(bottom=min(lowest) - 4)  # room under the lowest line for the lr-drop triangles
    a2.plot([], [], "^", color="gray", label="lr × 0.1 after this epoch")
    a1.set_ylabel("training loss"); a1.set_title("loss per epoch")
    a2.set_ylabel("kNN top-1 on the test images (%)"); a2.set_title("kNN accuracy")
    for ax in (a1, a2):
        ax.set_xscale("log"); ax.set_xlabel("epoch (log scale)"); ax.grid(alpha=0.3, which="both")
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
