"""``python -m instdisc_lesson reproduce table1``: the paper's Table 1 rows at its schedule, trained here.

The rows are ``records.definitions.PAPER200``: the runs, and the commands, of the shipped 200-epoch records.
Each row trains through ``train`` (``cli.train_command``) into ``--out/ROW`` with ``--resume``, one after
another, so an interrupted reproduction goes on where it stopped: a row whose ``metrics.json`` was written with
the settings asked is skipped, the row under way resumes from its last complete epoch. Before the first row,
a few steps of every row are timed (``cost.time_steps``, ``cost.expected_seconds``) and the expected total is printed; after every
row, the overall progress and the expected finish, and the table is written again (``table1.py``).

    python -m instdisc_lesson reproduce table1 [--rows NAME ...] [--out FOLDER] [--model resnet18] [--epochs N]
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .records.definitions import PAPER200

ROWS = {run.name: run for run in PAPER200}


def chosen(args) -> list:
    """The rows asked for, in the order given, each once (default: every row, in ``PAPER200``'s order)."""
    return [ROWS[name] for name in dict.fromkeys(args.rows or ROWS)]


def row_argv(run, args) -> list[str]:
    """The row's ``train`` command line: its record's options with this reproduction's network, epochs, data,
    device and folder, and ``--resume``."""
    options = list(run.options)
    if args.model:
        options[options.index("--model") + 1] = args.model
    for option, value in (("--epochs", args.epochs), ("--data-root", args.data_root), ("--device", args.device)):
        options += [option, str(value)] if value is not None else []
    return ["train", *options, "--out", str(Path(args.out).expanduser() / run.name), "--resume"]


def train_args(run, args):
    """``row_argv`` parsed, as ``train_command`` takes it."""
    from .options import build_parser

    return build_parser().parse_args(row_argv(run, args))


def finished(targs) -> dict | None:
    """The row's ``metrics.json`` if its run finished with the settings asked (``metrics.json`` is written last, in
    one step), else None. A run that finished with other settings is refused: its folder is not this row's."""
    from .arguments import build_config
    from .recipe import TrainConfig
    from .resume import RESUMABLE_CHANGES

    path = Path(targs.out) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or "knn_top1" not in metrics or "config" not in metrics:
        return None
    asked = build_config(targs).to_dict()
    saved = TrainConfig.from_dict({**TrainConfig().to_dict(), **metrics["config"]}).to_dict()  # fields added since
    free = RESUMABLE_CHANGES + ("precision", "memory_format")  # asked "auto": chosen when the run started
    changed = [key for key in asked if key not in free and saved.get(key) != asked[key]]
    if changed:
        raise ValueError(f"{path.parent} holds a finished run with {', '.join(f'{k}={saved.get(k)!r}' for k in changed)}; "
                         f"this reproduction asks {', '.join(f'{k}={asked[k]!r}' for k in changed)}. Choose another --out "
                         "(or remove that folder to train the row again)")
    return metrics


def measure(plan: list) -> dict[str, dict]:
    """What each row still costs here, ``{name: cost.expected_seconds(...)}``: the row's trainer built as ``train``
    builds it (resumed where it has a checkpoint, which refuses one of other settings before any row runs), a few
    steps timed and undone, then dropped. Every row has the same network, batch and images, so the precision is
    timed once (``precision.resolve``, for the first row) and evaluations cost what the first row's took."""
    import dataclasses

    from . import resolve, resume
    from .arguments import build_config
    from .config import is_smoke
    from .cost import expected_seconds, time_steps
    from .data import SMOKE_SIZES, load_dataset
    from .trainer import Trainer

    first = plan[0][1]
    train, test = load_dataset(first.data, first.data_root, SMOKE_SIZES if is_smoke() else None)
    costs, eval_seconds, arithmetic = {}, None, {}
    for run, targs in plan:
        checkpoint = Path(targs.out) / "checkpoint.pt"
        cfg = resolve.as_saved(build_config(targs, train), resume.saved_config(checkpoint) if checkpoint.exists() else None)
        if arithmetic and "auto" in (cfg.precision, cfg.memory_format):  # chosen for the first row: the same here
            cfg = dataclasses.replace(cfg, **arithmetic)
        cfg, _ = resolve.precision(cfg, train, targs.device)
        arithmetic = arithmetic or {"precision": cfg.precision, "memory_format": cfg.memory_format}
        trainer = Trainer(cfg, train, test, device=targs.device, progress=False)
        if checkpoint.exists():
            resume.load(trainer, checkpoint)
        if eval_seconds is None:
            trainer.monitor.baseline(trainer.model, trainer.epoch, trainer.evaluate)
            eval_seconds = trainer.monitor.eval_seconds or 0.0
        costs[run.name] = expected_seconds(trainer, time_steps(trainer), eval_seconds)
        del trainer
    return costs


def rows(n: int) -> str:
    return f"{n} row" + "s" * (n != 1)


def clock(seconds_from_now: float) -> str:
    """The wall-clock time that far ahead, as ``Wed 14:05``."""
    return time.strftime("%a %H:%M", time.localtime(time.time() + seconds_from_now))


def describe_here(args) -> str:
    """``convnet, 200 epochs, on 2 CPU cores``: what this reproduction trains, and where."""
    import torch

    from .config import get_device
    from .recipe import paper_config

    device = get_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{os.cpu_count()} CPU cores" if device.type == "cpu" else device.type.upper())
    return f"{args.model or 'convnet'}, {args.epochs or paper_config().epochs} epochs, on {where}"


def reproduce_command(args) -> dict:
    """Train the rows asked that are not done, one after another, and write the table after each; returns
    ``{row: metrics}`` (None for a row not run)."""
    from . import table1
    from .cli import format_seconds, train_command
    from .preflight import check, run_folder

    check(args)  # every row's command, before anything is loaded or written
    out, here = run_folder(args.out), describe_here(args)
    plan = [(run, train_args(run, args)) for run in chosen(args)]
    runs = [run for run, _ in plan]
    results = {run.name: finished(targs) for run, targs in plan}
    todo = [(run, targs) for run, targs in plan if results[run.name] is None]
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"Table 1 at the paper's schedule: {rows(len(plan))} ({here}); runs and table in {out}")
    if len(todo) < len(plan):
        say("done already, skipped: " + ", ".join(run.name for run in runs if results[run.name] is not None))
        table1.write(out, runs, results, here)
    if not todo:
        say(f"every row is done: {out / 'table1.md'}")
        return results
    say(f"timing a few steps of {'each of the ' * (len(todo) > 1)}{rows(len(todo))} to train (nothing is trained yet) ...")
    expected = {name: cost["seconds"] for name, cost in measure(todo).items()}
    say(f"expected: about {format_seconds(sum(expected.values()))} here for {rows(len(todo))} ("
        + ", ".join(f"{name} {format_seconds(s)}" for name, s in expected.items()) + "), done about "
        f"{clock(sum(expected.values()))}. That is training and kNN, timed here; loading, the linear column and each "
        "row's report come on top, and the estimate is corrected by the rows as they finish.")
    spent, stopped = {}, []
    for i, (run, targs) in enumerate(todo):
        pace = sum(spent.values()) / max(sum(expected[name] for name in spent), 1e-9) if spent else 1.0
        left = sum(expected[r.name] for r, _ in todo[i:]) * pace
        say(f"[{time.strftime('%H:%M')}] row {i + 1} of {len(todo)}: {run.name} ({run.label}), expected "
            f"{format_seconds(expected[run.name] * pace)}; all rows done about {clock(left)}\n"
            f"  python -m instdisc_lesson {' '.join(row_argv(run, args))}")
        began = time.perf_counter()
        try:
            results[run.name] = train_command(targs)
        except FloatingPointError as err:  # the loss diverged: the row says so in the table, and the others go on
            say(f"{run.name} stopped: {err}")
            stopped.append(run.name)
        spent[run.name] = time.perf_counter() - began
        written = table1.write(out, runs, results, here, stopped)
        pace = sum(spent.values()) / max(sum(expected[name] for name in spent), 1e-9)
        rest = sum(expected[r.name] for r, _ in todo[i + 1:]) * pace
        say(f"[{time.strftime('%H:%M')}] {run.name} took {format_seconds(spent[run.name])}; "
            f"{sum(m is not None for m in results.values())} of {rows(len(plan))} done"
            + (f", {rows(len(todo) - i - 1)} left, expected to take {format_seconds(rest)} (done about {clock(rest)})"
               if i + 1 < len(todo) else "") + "; table: " + ", ".join(str(path) for path in written))
    if stopped:
        raise FloatingPointError(f"the loss became non-finite in {', '.join(stopped)} (above); the other rows finished "
                                 f"and the table is in {out}")
    return results
