"""Table 1 as ``reproduce table1`` writes it: the rows trained here beside the paper's numbers and beside the
course's shipped records, as ``table1.md`` (Markdown) and ``table1.png`` (kNN bars, ``plots.bar_table``).

    >>> write(Path("runs/table1"), runs, {"paper-softmax": metrics, ...}, "convnet, 200 epochs, on CPU (2 cores)")
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from . import records
from .checkpoint import atomic_write
from .records.definitions import PAPER_ROW

PAPER = "Wu et al. 2018, Table 1 (CIFAR-10, ResNet-18, 128-d features, 200 epochs; kNN and a linear SVM)"
BASELINES = (("the same network, untrained", "random_init"), ("raw pixels", "raw_pixel"))


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def shipped(name: str) -> dict | None:
    """The course's record of the row, if it ships one."""
    return records.load(name) if name in records.names() else None


def markdown(runs: list, results: dict, here: str, stopped=()) -> str:
    """The table: each row's paper numbers, its numbers here (or why there are none yet), its shipped record's;
    then the untrained network and raw pixels (here: the first finished row's; records: the first shipped)."""
    from .cli import format_seconds

    lines = ["# Table 1, reproduced", "",
             f"Paper: {PAPER}. Here: {here}; kNN (k = 200) and a ridge classifier on the frozen features. Shipped "
             "records: the course's ConvNet at the paper's schedule (200 epochs). Top-1 % on the test images. The NCE rows use an "
             "EMA of Z (the course's deviation) except `paper-nce-m4096-once`, the paper's exact setting. "
             f"Written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| Table 1 row | paper: kNN | paper: linear SVM | here: kNN | here: linear (ridge) | record: kNN | "
             "record: linear (ridge) | here: epochs, training time |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        paper, mine, record = records.PAPER_TABLE1[PAPER_ROW[run.name]], results.get(run.name), shipped(run.name)
        if mine is not None:
            cells = [_pct(mine["knn_top1"]), _pct(mine.get("linear_top1")),
                     f"{mine['config']['epochs']}, {format_seconds(sum(h['train_seconds'] for h in mine['history']))}"]
        else:
            cells = ["stopped (loss not finite)" if run.name in stopped else "to run", "", ""]
        theirs = [_pct(record["knn_top1"]), _pct(record.get("linear_top1"))] if record else ["not shipped", ""]
        lines.append(f"| {run.label} (`{run.name}`) | {paper['knn']:.1f} | {paper['linear']:.1f} | {cells[0]} | "
                     f"{cells[1]} | {theirs[0]} | {theirs[1]} | {cells[2]} |")
    mine = next((results[run.name] for run in runs if results.get(run.name) is not None), None)
    record = next((r for r in map(shipped, (run.name for run in runs)) if r is not None), None)
    for label, key in BASELINES:
        cells = [_pct(source.get(f"{key}_{column}_top1")) if source else "–" for source in (mine, record)
                 for column in ("knn", "linear")]
        lines.append(f"| {label} | – | – | {' | '.join(cells)} | |")
    if record:
        lines += ["", f"Records made on {record['device']}."]
    return "\n".join(lines) + "\n"


def figure(runs: list, results: dict, here: str):
    """kNN top-1 per row: here, the shipped record, the paper (``plots.bar_table``)."""
    from .plots import bar_table

    short = {run.name: run.label.split(" (")[0] for run in runs}
    mine = {short[run.name]: results[run.name]["knn_top1"] if results.get(run.name) else math.nan for run in runs}
    theirs = {short[run.name]: record["knn_top1"] for run in runs if (record := shipped(run.name))}
    paper = {short[run.name]: records.PAPER_TABLE1[PAPER_ROW[run.name]]["knn"] for run in runs}
    fig = bar_table(mine, title="Table 1: kNN top-1 on the test images", reference=paper, label=f"here ({here})",
                    more=("shipped records (the course's ConvNet, 200 epochs)", theirs))
    ax = fig.axes[0]  # the legend in one column above the axes: its names are long
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.tight_layout(rect=(0, 0, 1, 0.84))
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.01, 0.99), fontsize=8, frameon=False)
    return fig


def write(out: Path, runs: list, results: dict, here: str, stopped=()) -> list[Path]:
    """(Re)write ``out/table1.md`` and ``out/table1.png``, each in one step; returns the paths written (no PNG
    without matplotlib)."""
    text = markdown(runs, results, here, stopped)
    atomic_write(out / "table1.md", lambda tmp: Path(tmp).write_text(text))
    try:
        import matplotlib.pyplot as plt

        fig = figure(runs, results, here)
    except ImportError:
        print("no table1.png: matplotlib is not installed (pip install matplotlib)")
        return [out / "table1.md"]
    atomic_write(out / "table1.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return [out / "table1.md", out / "table1.png"]
