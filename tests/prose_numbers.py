"""Every percentage a notebook's prose quotes is printed by a cell of the same notebook, or is the paper's.

Used by ``conftest.py`` on the outputs of nbval's own run of each notebook (so the notebooks are executed
once), and by ``tests/test_prose_numbers.py`` on small made-up notebooks.

A percentage in a markdown cell ("66.7 %", "66.7%", "66.7–68.0 %") is accounted for when the same number,
with the same decimals, appears in some output of the notebook: as a percentage, or as a fraction printed
with two more decimals (0.667). Numbers that are the paper's (its tables, quoted with their source) are
listed in ``PAPER`` and need no output. A percentage that is neither is a number the prose invented or kept
from another run, and fails the notebook.
"""
from __future__ import annotations

import re

# The papers' numbers the course quotes, each with its table (Wu et al. 2018 unless named).
PAPER = {
    # Table 1 (CIFAR-10, ResNet-18, 200 epochs): linear SVM, then kNN; parametric, softmax, NCE m = 1, 10, 512, 4096
    "60.3", "75.4", "44.3", "60.2", "64.3", "70.2", "63.0", "80.8", "42.5", "63.4", "78.4", "80.4",
    # Table 1's other rows (DeepCluster, Exemplar CNN on CIFAR-10 as the paper reports them) are not quoted.
    # ImageNet (ResNet-50): kNN 46.5 (Table 2), linear 54.0 (as cited by MoCo); released models' kNN 41.0, 46.8;
    # semi-supervised ImageNet top-5 with 1 % and 10 % of the labels: 39.2, 77.4
    "46.5", "54.0", "41.0", "46.8", "39.2", "77.4",
    # PIC (Cao et al. 2020), ImageNet linear top-1: 200, 400, 1600 epochs
    "68.6", "70.3", "70.8",
    # SimCLR (Chen et al. 2020), Table 7, ImageNet top-5 with 1 % / 10 % of the labels: InstDisc 39.2 / 77.4 (above),
    # the supervised baseline 48.4 / 80.4 (80.4 is also Table 1's NCE m = 4096 kNN)
    "48.4",
}
# Percentages that are definitions, not measurements: the learning-rate schedule's drops at 60 % and 80 % of a run.
DEFINITIONS = {"60", "80"}

_PCT = re.compile(r"(\d+(?:\.\d+)?)(?:\s?[–-]\s?(\d+(?:\.\d+)?))?\s?%")
_NUM = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])")


def prose_percentages(markdown: str) -> list[str]:
    """The percentages a markdown text quotes, as written ("66.7"), ranges as two numbers. Code spans and
    LaTeX are left out (they hold formulas, not results)."""
    text = re.sub(r"`[^`]*`|\$[^$]*\$", " ", markdown)
    found = []
    for m in _PCT.finditer(text):
        found += [g for g in m.groups() if g]
    return found


def printed_numbers(texts: list[str]) -> set[str]:
    """Every number the outputs print, in the forms prose may quote it: as printed, and a fraction
    (0.6673) as the percentages it rounds to with 0, 1 and 2 decimals (67, 66.7, 66.73)."""
    seen = set()
    for text in texts:
        for raw in _NUM.findall(text):
            seen.add(raw)
            value = float(raw)
            if value <= 1.0 and "." in raw:
                seen.update(f"{100 * value:.{d}f}" for d in (0, 1, 2) if len(raw.split(".")[1]) >= d + 2)
    return seen


def unprinted(markdown_cells: list[str], output_texts: list[str]) -> list[str]:
    """The prose's percentages that no output prints and that are not the paper's (in order, with repeats)."""
    printed = printed_numbers(output_texts)
    return [p for cell in markdown_cells for p in prose_percentages(cell)
            if p not in printed and p not in PAPER and p not in DEFINITIONS]


def output_text(output: dict) -> str:
    """The text of one Jupyter output: a stream, or the text/plain of a result or display."""
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/markdown", "")) + "".join(data.get("text/html", ""))
