"""Records of real CIFAR-10 runs, shipped with the course. Used from notebook 03 on.

The paper's phenomena (Table 1's ordering, NCE against m, tau, lambda, one-shot against EMA Z, PIC
against InstDisc) need real data and tens of epochs; a notebook cell on a CPU has a minute. So each
phenomenon is shown from a **record**: one JSON file per real run, made once by
``benchmarks/make_records.py`` through the CLI, holding

    name, experiment, label     what the run is (experiment: table1, tau, lambda, z_mode, pic)
    command                     the exact CLI line that reproduces it
    device, torch, data, made   where, with what, on which images, when
    epochs, train_seconds       the budget, and the training time it took there
    history                     per epoch: loss, knn_top1/5 (where evaluated), lr, log_Z (NCE), ...
    knn_top1, knn_top5          kNN on the 10,000 test images at the end
    linear_top1 (newer records) a linear classifier on the frozen features (ridge probe; the paper used a linear SVM)
    precision, deviations       the network's arithmetic (fp32 or bf16), and where the run departs from the paper
    random_init_knn_top1/5, raw_pixel_knn_top1/5   the baselines, on the same images
    config                      the full TrainConfig
    note (optional)             anything a reader of the numbers should know (e.g. shared cores)

Example:
    >>> from instdisc_lesson import records
    >>> table1 = records.load_experiment("table1")       # {name: record}
    >>> table1["table1-softmax"]["knn_top1"]
"""
from __future__ import annotations

import json
from pathlib import Path

RECORDS_DIR = Path(__file__).resolve().parent
REQUIRED = ("name", "experiment", "label", "command", "device", "data", "epochs", "train_seconds", "history",
            "knn_top1", "random_init_knn_top1", "raw_pixel_knn_top1", "config")


# Wu et al. 2018, Table 1: CIFAR-10, ResNet-18, 128-d features, 200 epochs; top-1 % of a linear SVM and of kNN.
PAPER_TABLE1 = {
    "parametric softmax": {"linear": 60.3, "knn": 63.0},
    "non-parametric softmax": {"linear": 75.4, "knn": 80.8},
    "NCE m=1": {"linear": 44.3, "knn": 42.5},
    "NCE m=10": {"linear": 60.2, "knn": 63.4},
    "NCE m=512": {"linear": 64.3, "knn": 78.4},
    "NCE m=4096": {"linear": 70.2, "knn": 80.4},
}


class RecordError(RuntimeError):
    """A record that is missing or damaged; the message says what to do."""


def names(experiment: str | None = None) -> list[str]:
    """The names of the shipped records (of one experiment), sorted."""
    found = sorted(p.stem for p in RECORDS_DIR.glob("*.json"))
    return [n for n in found if experiment is None or load(n)["experiment"] == experiment]


def load(name: str) -> dict:
    """The record ``name`` (a file ``records/<name>.json``), checked for the keys every record has."""
    path = RECORDS_DIR / f"{name}.json"
    if not path.exists():
        raise RecordError(f"no record named {name!r}; shipped records: {', '.join(names()) or 'none'}. "
                          "Restore the file with `git checkout -- instdisc_lesson/records/`, or make it again with "
                          "`python benchmarks/make_records.py --only NAME`.")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RecordError(f"record {path} is unreadable ({err}); restore it with `git checkout -- {path.name}`") from None
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise RecordError(f"record {path} lacks {', '.join(missing)}: it was not written by benchmarks/make_records.py")
    return record


def load_experiment(experiment: str, order: list[str] | None = None) -> dict[str, dict]:
    """Every record of ``experiment``, as ``{name: record}`` (in ``order`` when given, else by name)."""
    chosen = order if order is not None else names(experiment)
    if not chosen:
        raise RecordError(f"no records of experiment {experiment!r} are shipped")
    return {name: load(name) for name in chosen}


def describe(record: dict) -> str:
    """One line: what ran, where, on what, for how long, and the result beside its baselines."""
    # A run that shared the cores or was paused has a note (in the record) and a median epoch: its wall time is not
    # its speed, so the line gives the median epoch instead.
    took = (f"a median epoch of {record['median_epoch_seconds']:.0f} s" if record.get("note") and "median_epoch_seconds" in record
            else f"{record['train_seconds'] / 60:.0f} min")
    return (f"{record['label']}: kNN top-1 {record['knn_top1']:.1%} (untrained {record['random_init_knn_top1']:.1%}, "
            f"raw pixels {record['raw_pixel_knn_top1']:.1%}); {record['epochs']} epochs, {took} on {record['device']}")


def train_args(record: dict, out_dir) -> list[str]:
    """The record's command as arguments for ``python -m instdisc_lesson``, writing to ``out_dir`` (and, for
    ``train``, resuming).

    ``subprocess.run([sys.executable, "-m", "instdisc_lesson", *train_args(rec, "runs/mine")])`` trains it again.
    """
    import shlex

    words = shlex.split(record["command"])
    if words[:3] != ["python", "-m", "instdisc_lesson"] or words[3:4] not in (["train"], ["semisup"]) or "--out" not in words:
        raise RecordError(f"record {record.get('name')!r} has no CLI command: {record['command']!r}")
    at = words.index("--out")
    resume = ["--resume"] if words[3] == "train" else []
    return [*words[3:at], *words[at + 2:], "--out", str(out_dir), *resume]


def train_yourself(record: dict, start: bool = False) -> dict | None:
    """Print the command that reproduces ``record``; with ``start=True`` run it into ``runs/records/<name>``
    (an interrupted run resumes; a finished one is read back) and print its result beside the record's.

    Returns the run's ``metrics.json`` (None when not started).
    """
    import json
    import subprocess
    import sys

    from ..config import runs_root

    out = runs_root() / "records" / record["name"]
    args = train_args(record, out)
    print("python -m instdisc_lesson " + " ".join(args))
    if not start:
        budget = f"{record['steps']} steps" if "steps" in record else f"{record['epochs']} epochs"  # few labels: steps
        print(f"(set start=True to run it: {budget} took {record['train_seconds'] / 60:.0f} min on "
              f"{record['device'].split(' (')[0]}; the command prints its expected time here before it starts)")
        return None
    subprocess.run([sys.executable, "-m", "instdisc_lesson", *args], check=True)
    mine = json.loads((out / "metrics.json").read_text())
    print(f"your run: kNN top-1 {mine['knn_top1']:.1%} (record: {record['knn_top1']:.1%})")
    return mine
