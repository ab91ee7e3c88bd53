"""Run the course's recorded CIFAR-10 experiments and write their records.

    INSTDISC_DATA=data python benchmarks/make_records.py --runs runs/records [--only table1 tau] [--list]

Each entry of ``RUNS`` (in ``instdisc_lesson/records/definitions.py``) is one real training run: its record
name, the experiment it belongs to, and the exact command-line options. The script runs them in order through the CLI
(``python -m instdisc_lesson train ... --resume``, so an interrupted queue continues where it
stopped), then writes ``instdisc_lesson/records/<name>.json``: the CLI's ``metrics.json`` plus where
and how it ran. A learner reproduces any record with its ``command``.

Development tooling: the records were made on this project's 2-core CPU from the JPEG export of
CIFAR-10 in ``shared/data`` (converted with ``benchmarks/jpeg_to_cifar_batches.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "instdisc_lesson" / "records"
sys.path.insert(0, str(ROOT))  # the package of this checkout, installed or not

# The runs (name, experiment, label, options), in the order they run, with the notes and history keys their records
# keep: one list in the package, which `python -m instdisc_lesson reproduce table1` reads too.
from instdisc_lesson.records.definitions import (  # noqa: E402,F401 - the list is part of this script's interface
    HISTORY_KEYS, KEEP_STEP_LOSSES, NOTES, PAPER200, RUNS, command_line, with_command)


def describe_device() -> str:
    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU, {os.cpu_count()} cores ({cpu})"


def to_record(name: str, experiment: str, label: str, options: list[str], metrics: dict, data: str) -> dict:
    import torch

    if options[0] == "semisup":
        return semisup_record(name, experiment, label, options, metrics, data)
    keep = HISTORY_KEYS + (("step_losses",) if experiment in KEEP_STEP_LOSSES else ())
    history = [{k: h[k] for k in keep if h.get(k) is not None} for h in metrics["history"]]
    return {
        "name": name, "experiment": experiment, "label": label,
        "command": command_line(options, name), "device": describe_device(), "torch": torch.__version__,
        "data": data, "epochs": metrics["config"]["epochs"], "train_images": metrics.get("train_images"),
        "train_seconds": round(sum(h["train_seconds"] for h in metrics["history"]), 1),
        "knn_top1": metrics["knn_top1"], "knn_top5": metrics["knn_top5"],
        "random_init_knn_top1": metrics["random_init_knn_top1"], "random_init_knn_top5": metrics["random_init_knn_top5"],
        "raw_pixel_knn_top1": metrics["raw_pixel_knn_top1"], "raw_pixel_knn_top5": metrics["raw_pixel_knn_top5"],
        "precision": metrics["config"].get("precision", "fp32"), "memory_format": metrics["config"].get("memory_format", "contiguous"),
        **{k: metrics[k] for k in ("linear_top1", "random_init_linear_top1", "raw_pixel_linear_top1", "deviations",
                                   "kept_epoch", "kept_knn_top1") if k in metrics},
        **timing(metrics["history"], NOTES.get(name, NOTES.get(experiment))),
        "made": time.strftime("%Y-%m-%d"), "history": history, "config": metrics["config"],
    }


def timing(history: list[dict], note: str | None = None) -> dict:
    """The median epoch's training seconds, and a note on how the run's time was spent (if it has one)."""
    median = statistics.median(h["train_seconds"] for h in history)
    return {"median_epoch_seconds": round(median, 1), **({"note": note} if note else {})}


def semisup_record(name: str, experiment: str, label: str, options: list[str], metrics: dict, data: str) -> dict:
    """A few-labels record: every way of using the labels (see ``semisup.py``); epochs are the pretraining's."""
    import torch

    keys = [k for k in metrics if k.endswith("_top1")] + ["fraction", "labelled_images"]
    return {
        "name": name, "experiment": experiment, "label": label,
        "command": command_line(options, name), "device": describe_device(), "torch": torch.__version__,
        "data": data + "; the labelled images: a balanced random subset of the training images",
        "epochs": metrics["config"]["pretrained"]["epochs"], "steps": metrics["config"]["steps"],
        "train_seconds": round(metrics["seconds"], 1), **{k: metrics[k] for k in keys},
        "made": time.strftime("%Y-%m-%d"), "history": metrics["history"], "config": metrics["config"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "records", help="where the run folders go")
    parser.add_argument("--only", nargs="*", help="experiments or record names to run (default: all)")
    parser.add_argument("--data-note", default="CIFAR-10 (JPEG export), all 50,000 training images; kNN on the 10,000 test images")
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    args = parser.parse_args()
    RECORDS.mkdir(exist_ok=True)
    for name, experiment, label, options in RUNS:
        if args.only and name not in args.only and experiment not in args.only:
            continue
        if args.list:
            print(f"{experiment:>8}  {command_line(options, name)}")
            continue
        out = args.runs / name
        if (RECORDS / f"{name}.json").exists():
            print(f"{name}: recorded already (delete instdisc_lesson/records/{name}.json to run it again)", flush=True)
            continue
        resume = [] if options[0] == "semisup" else ["--resume"]
        cmd = [sys.executable, "-m", "instdisc_lesson", *with_command(options), "--out", str(out), *resume]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
        done = subprocess.run(cmd, cwd=ROOT).returncode == 0
        if not done:
            print(f"[{time.strftime('%H:%M:%S')}] {name} failed; continuing with the next run", flush=True)
            continue
        metrics = json.loads((out / "metrics.json").read_text())
        record = to_record(name, experiment, label, options, metrics, args.data_note)
        (RECORDS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: kNN {record['knn_top1']:.1%} in {record['train_seconds']:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
