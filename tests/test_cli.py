"""The CLI contract: options, metrics.json keys, one-line errors with exit code 2, resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from instdisc_lesson.cli import main

KEYS = {"knn_top1", "knn_top5", "random_init_knn_top1", "raw_pixel_knn_top1", "history", "config"}


@pytest.fixture
def folder(tmp_path):
    """A practitioner's image folder: two colour classes, 24 train and 8 test images each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(count):
                img = np.clip(np.array(colour) + rng.normal(0, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(tmp_path / "imgs" / split / c / f"{i}.png")
    return tmp_path / "imgs"


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "instdisc_lesson", *args], capture_output=True, text=True,
                          env={**os.environ, "INSTDISC_QUICK": "1"}, **kw)


def test_help_explains_every_option():
    out = run_cli("train", "--help").stdout
    for option in ("--data", "--objective", "--model", "--epochs", "--nce-m", "--tau", "--lr", "--batch-size",
                   "--seed", "--resume", "--out"):
        assert option in out


def test_train_on_image_folder_writes_metrics(folder, tmp_path):
    out = tmp_path / "run"
    main(["train", "--data", str(folder), "--objective", "nce", "--nce-m", "16", "--epochs", "2", "--batch-size", "16",
          "--knn-k", "5", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= metrics.keys()
    assert len(metrics["history"]) == 2 and metrics["config"]["objective"] == "nce"
    assert metrics["raw_pixel_knn_top1"] == 1.0  # red vs blue: pixels solve it, as they should
    assert (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("args,message", [
    (["--tau", "0"], "tau=0.0 must be > 0"),
    (["--tau", "-0.5"], "tau=-0.5 must be > 0"),
    (["--nce-m", "0", "--objective", "nce"], "m=0 noise samples must lie in [1, 47]"),
    (["--nce-m", "100000", "--objective", "nce"], "m=100000 noise samples must lie in [1, 47]"),
    (["--batch-size", "0"], "batch_size=0 must be a positive integer"),
    (["--batch-size", "500"], "batch_size=500 is larger than the dataset (48 images)"),
    (["--knn-k", "0"], "knn_k=0 must be a positive integer"),
    (["--knn-k", "49"], "k=49 neighbours must lie in [1, 48]"),
    (["--lam", "-1"], "lam=-1.0 must be >= 0"),
    (["--bank-momentum", "1.5"], "momentum=1.5 must lie in [0, 1)"),
])
def test_bad_values_exit_2_with_one_readable_line(folder, tmp_path, args, message):
    result = run_cli("train", "--data", str(folder), "--epochs", "1", "--knn-k", "5", "--batch-size", "16", *args,
                     "--out", str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_names_exit_2(tmp_path):
    for args in (["--objective", "triplet"], ["--model", "vgg"], ["--data", "imagenet"]):
        result = run_cli("train", *args, "--out", str(tmp_path / "r"))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert ("invalid choice" in result.stderr) or ("unknown data 'imagenet'" in result.stderr)


def test_existing_run_is_not_overwritten(folder, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--data", str(folder), "--epochs", "1", "--batch-size", "16", "--knn-k", "5", "--out", str(out)]
    assert run_cli(*common).returncode == 0
    again = run_cli(*common)
    assert again.returncode == 2 and "already holds a run: pass --resume" in again.stderr


def test_sigkill_then_resume_matches_uninterrupted(folder, tmp_path):
    common = ["train", "--data", str(folder), "--objective", "softmax", "--epochs", "6", "--batch-size", "8",
              "--knn-k", "5", "--seed", "3"]
    straight = run_cli(*common, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "instdisc_lesson", *common, "--out", str(out)],
                            env={**os.environ, "INSTDISC_QUICK": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "history.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.loads((out / "history.json").read_text())["history"])
    assert done < 6, "the run finished before it could be killed: make it longer"
    resumed = run_cli(*common, "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-5)
    assert a["knn_top1"] == b["knn_top1"] and a["random_init_knn_top1"] == b["random_init_knn_top1"]


def test_pic_options_reach_the_trainer(folder, tmp_path):
    out = tmp_path / "pic"
    main(["train", "--data", str(folder), "--objective", "pic", "--epochs", "2", "--batch-size", "8", "--knn-k", "5",
          "--window", "24", "--stride", "8", "--recent-k", "16", "--no-correction", "--out", str(out)])
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["objective"], config["tau"], config["window"], config["stride"], config["recent_k"], config["correction"]) == \
        ("pic", 0.2, 24, 8, 16, False)
    bad = run_cli("train", "--data", str(folder), "--objective", "pic", "--window", "100", "--batch-size", "8",
                  "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "need 1 <= stride <= window <= n" in bad.stderr
