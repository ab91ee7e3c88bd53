"""``python -m instdisc_lesson reproduce table1`` end to end on a tiny budget, and the one list of record definitions.

Tiny CIFAR-format files (300 training and 60 test images), the ConvNet, 2 epochs a row; the precision is not
timed (``precision.measure`` answers fp32 at once: on a CPU without native bf16 the timing alone takes ~25 s)
and the report draws no UMAP, so the whole file runs in seconds.
"""
import json
import sys
from pathlib import Path

import pytest

from conftest import write_cifar_batches
from instdisc_lesson import precision, records
from instdisc_lesson.cli import main
from instdisc_lesson.records import definitions

ROOT = Path(__file__).resolve().parent.parent
ROWS = ["paper-softmax", "paper-nce-m10"]


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    write_cifar_batches(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=60)
    monkeypatch.setattr(precision, "measure", lambda model, x, device, steps=3: {("fp32", "contiguous"): 1.0})
    monkeypatch.setitem(sys.modules, "umap", None)  # the report's UMAP panel says "pip install umap-learn" instead
    monkeypatch.delenv("INSTDISC_TEST_SIGNAL", raising=False)
    return tmp_path / "data"


def reproduce(data, out, *rows, code=None, epochs=2):
    argv = ["reproduce", "table1", "--rows", *rows, "--epochs", str(epochs), "--data-root", str(data), "--out", str(out)]
    if code is None:
        assert main(argv) == 0
        return
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == code


def test_two_rows_interrupted_resumed_and_skipped_write_the_table(tiny_cifar, tmp_path, monkeypatch, capsys):
    out = tmp_path / "table1"
    reproduce(tiny_cifar, out, ROWS[0])  # the first row alone
    first = capsys.readouterr().out
    assert "expected: about" in first and "done about" in first and "1 of 1 row done" in first, first
    assert (out / ROWS[0] / "metrics.json").exists() and (out / "table1.md").exists()
    finished_at = (out / ROWS[0] / "metrics.json").stat().st_mtime_ns

    monkeypatch.setenv("INSTDISC_TEST_SIGNAL", "SIGTERM@2")  # the second row stops in its second epoch
    reproduce(tiny_cifar, out, *ROWS, code=143)
    stopped = capsys.readouterr()
    assert f"done already, skipped: {ROWS[0]}" in stopped.out and "row 1 of 1: paper-nce-m10" in stopped.out
    assert "the same command goes on from here" in stopped.err, stopped.err
    assert (out / ROWS[1] / "checkpoint.pt").exists() and not (out / ROWS[1] / "metrics.json").exists()
    assert "| to run |" in (out / "table1.md").read_text()

    monkeypatch.delenv("INSTDISC_TEST_SIGNAL")
    reproduce(tiny_cifar, out, *ROWS)
    again = capsys.readouterr()
    assert f"done already, skipped: {ROWS[0]}" in again.out and "resuming" in again.err and "from epoch 1" in again.err
    assert "2 of 2 rows done" in again.out and "all rows done about" in again.out
    assert (out / ROWS[0] / "metrics.json").stat().st_mtime_ns == finished_at  # the finished row was not trained again
    metrics = json.loads((out / ROWS[1] / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]

    table = (out / "table1.md").read_text()
    for name in ROWS:
        run = definitions.by_name(name)
        paper = records.PAPER_TABLE1[definitions.PAPER_ROW[name]]
        mine = json.loads((out / name / "metrics.json").read_text())
        row = next(line for line in table.splitlines() if f"(`{name}`)" in line)
        assert row.startswith(f"| {run.label} ") and f"| {paper['knn']:.1f} | {paper['linear']:.1f} |" in row, row
        assert f"| {100 * mine['knn_top1']:.1f} |" in row and "to run" not in row, row
        record = records.load(name) if name in records.names() else None
        assert (f"| {100 * record['knn_top1']:.1f} |" if record else "not shipped") in row, row
    assert "| the same network, untrained |" in table and "| raw pixels |" in table
    png = (out / "table1.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    # Once more: every row is done, so nothing trains. With other settings (--epochs 3) the finished rows are
    # refused before any data is loaded, and nothing is written.
    monkeypatch.setattr("instdisc_lesson.cli.train_command", lambda args: pytest.fail("a finished row was trained again"))
    reproduce(tiny_cifar, out, *ROWS)
    assert "every row is done" in capsys.readouterr().out
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    for where in ("instdisc_lesson.data.load_dataset", "instdisc_lesson.cli.load_dataset"):
        monkeypatch.setattr(where, lambda *a, **k: pytest.fail("data loaded before the refusal"))
    reproduce(tiny_cifar, out, *ROWS, code=2, epochs=3)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "epochs=2" in err and "epochs=3" in err, err
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before


@pytest.mark.parametrize("extra, message", [
    (["--rows", "paper-nope"], "invalid choice: 'paper-nope'"),
    (["--epochs", "0"], "0 must be at least 1"),
    (["--model", "vgg"], "invalid choice: 'vgg'"),
])
def test_bad_arguments_are_argparse_usage_errors_and_leave_nothing(tmp_path, capsys, extra, message):
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "table1", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage:") and message in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_help_names_every_row():
    import subprocess

    text = subprocess.run([sys.executable, "-m", "instdisc_lesson", "reproduce", "--help"], capture_output=True,
                          text=True, check=True).stdout
    for run in definitions.PAPER200:
        assert run.name in text
    assert "--rows" in text and "--resume" in text and "table1.md" in text


def test_make_records_and_reproduce_read_one_list():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import make_records
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert make_records.RUNS is definitions.RUNS and make_records.PAPER200 is definitions.PAPER200
    from instdisc_lesson.reproduce import ROWS as reproduced

    assert list(reproduced) == [run.name for run in definitions.PAPER200]
    for name in set(reproduced) & set(records.names()):  # a shipped row's command is its definition's
        run = definitions.by_name(name)
        assert records.load(name)["command"] == definitions.command_line(run.options, name)
