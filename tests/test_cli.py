"""The CLI contract: options, metrics.json keys, one-line errors with exit code 2, resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instdisc_lesson.cli import main

KEYS = {"knn_top1", "knn_top5", "random_init_knn_top1", "raw_pixel_knn_top1", "history", "config",
        "linear_top1", "random_init_linear_top1", "raw_pixel_linear_top1", "precision", "memory_format", "deviations"}


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


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "instdisc_lesson", *args], capture_output=True, text=True,
                          env=env or {**os.environ, "INSTDISC_QUICK": "1"}, **kw)


def test_help_explains_every_option():
    out = run_cli("train", "--help").stdout
    for option in ("--data", "--objective", "--model", "--epochs", "--nce-m", "--tau", "--lr", "--batch-size",
                   "--seed", "--resume", "--out"):
        assert option in out


def test_train_on_image_folder_writes_metrics(folder, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--data", str(folder), "--objective", "nce", "--nce-m", "16", "--epochs", "2", "--batch-size", "16",
          "--knn-k", "5", "--out", str(out)])
    said = capsys.readouterr().err
    # 48 images in batches of 16: 3 steps per epoch, 2 epochs; kNN after each epoch. The time is this machine's.
    assert "budget: 2 epochs of 48 images (0 done), 6 steps of 16 and 2 kNN evaluations to go; expected about " in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= metrics.keys()
    assert len(metrics["history"]) == 2 and metrics["config"]["objective"] == "nce"
    assert metrics["raw_pixel_knn_top1"] == 1.0  # red vs blue: pixels solve it, as they should
    assert metrics["raw_pixel_linear_top1"] == 1.0  # ... and so does a linear classifier on them
    assert 0.5 <= metrics["linear_top1"] <= 1.0 and 0.0 <= metrics["random_init_linear_top1"] <= 1.0
    assert metrics["precision"] in ("fp32", "bf16") and metrics["config"]["precision"] == metrics["precision"]
    assert "at risk: on these images raw pixels already reach 100.0%" in said  # ... and the CLI says so
    assert (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("args,message", [
    (["--tau", "0"], "tau=0.0 must be > 0"),
    (["--tau", "-0.5"], "tau=-0.5 must be > 0"),
    (["--nce-m", "0", "--objective", "nce"], "m=0 noise samples must be at least 1"),
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
              "--knn-k", "5", "--seed", "3", "--precision", "fp32", "--memory-format", "contiguous"]  # not timed: two runs compared
    straight = run_cli(*common, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"  # the run kills itself during epoch 4's first step: 3 epochs saved, on any machine
    killed = run_cli(*common, "--out", str(out), env={**os.environ, "INSTDISC_QUICK": "1", "INSTDISC_TEST_SIGNAL": "SIGKILL@4"})
    assert killed.returncode == -signal.SIGKILL
    done = len(json.loads((out / "history.json").read_text())["history"])
    assert done == 3
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


def test_defaults_fit_the_folder_and_this_machines_time(folder, tmp_path, capsys, monkeypatch):
    """On a CPU the defaults come from the data (recipe.fitted_config) and shrink to the time a default run
    may take; --epochs is taken as given."""
    from instdisc_lesson import recipe

    monkeypatch.setenv("INSTDISC_BUDGET", "quick")
    monkeypatch.delenv("INSTDISC_QUICK", raising=False)
    monkeypatch.setattr(recipe, "CPU_SECONDS", 1e-6)  # a machine far too slow for more than one epoch
    out = tmp_path / "fitted"
    main(["train", "--data", str(folder), "--out", str(out)])
    said = capsys.readouterr().err
    assert "epochs: 1, as many as fit in 0 of the 0 minutes a default run may take on a CPU" in said
    assert "recipe: softmax, convnet, tau 0.07, batch 12, lr 0.03, kNN k 5 (defaults fitted to 48 images" in said
    config = json.loads((out / "metrics.json").read_text())["config"]  # 48 images, 24 per class
    assert (config["epochs"], config["batch_size"], config["knn_k"], config["eval_every"]) == (1, 12, 5, 1)
    monkeypatch.setattr(recipe, "CPU_SECONDS", 1e9)  # resumed on a faster machine: the run keeps its 1 epoch
    main(["train", "--data", str(folder), "--out", str(out), "--resume"])
    assert json.loads((out / "metrics.json").read_text())["config"]["epochs"] == 1
    main(["train", "--data", str(folder), "--epochs", "2", "--out", str(tmp_path / "given")])
    assert "would take" not in capsys.readouterr().err  # --epochs: trained as asked, however long
    assert json.loads((tmp_path / "given" / "metrics.json").read_text())["config"]["epochs"] == 2


def test_a_run_that_makes_features_worse_keeps_the_untrained_network(folder, tmp_path, capsys, monkeypatch):
    """No harm done: when the last epoch scores below the untrained network on the training images, the run keeps
    the untrained weights, says so, and semisup uses them; a kept epoch worse on the test images is called out."""
    from instdisc_lesson import resume
    from instdisc_lesson.cli import pretrained_encoder
    from instdisc_lesson.data import load_dataset
    from instdisc_lesson.models import build_encoder
    from instdisc_lesson.recipe import TrainConfig
    from instdisc_lesson.trainer import Trainer

    def one_epoch_scoring(score):
        def fit(self):  # one epoch that moves every weight, scores `score` on the training images and kNN 0 on test
            with torch.no_grad():
                for p in self.model.parameters():
                    p.add_(1.0)
            self.epoch = 1
            self.history.append({"epoch": 1, "loss": 1.0, "knn_top1": 0.0, "knn_top5": 0.0, "train_loo_top1": score})
            resume.save(self, self.out_dir / "checkpoint.pt")
        return fit

    args = ["train", "--data", str(folder), "--epochs", "1", "--batch-size", "8", "--knn-k", "5", "--out"]
    monkeypatch.setattr(Trainer, "fit", one_epoch_scoring(0.0))  # below the untrained network's score
    main(args + [str(tmp_path / "worse")])
    metrics, said = json.loads((tmp_path / "worse" / "metrics.json").read_text()), capsys.readouterr().err
    assert "kept: the untrained network" in said and "warning" not in said
    assert (metrics["kept_epoch"], metrics["kept_knn_top1"]) == (0, metrics["random_init_knn_top1"])
    untrained, _ = build_encoder(TrainConfig.from_dict(metrics["config"]), load_dataset(str(folder))[0].images, "cpu")
    model, _ = pretrained_encoder(str(tmp_path / "worse" / "checkpoint.pt"), "cpu")
    assert all(torch.equal(untrained.state_dict()[k], v) for k, v in model.state_dict().items())

    monkeypatch.setattr(Trainer, "fit", one_epoch_scoring(1.0))  # better on the training images, kNN 0 on the test images
    main(args + [str(tmp_path / "kept")])
    metrics, said = json.loads((tmp_path / "kept" / "metrics.json").read_text()), capsys.readouterr().err
    assert (metrics["kept_epoch"], metrics["kept_knn_top1"]) == (1, 0.0)
    assert "warning: the kept network (0.0%) is below the untrained one" in said


def test_train_size_pretrains_on_part_and_reports_both_sizes(folder, tmp_path, capsys):
    out = tmp_path / "part"
    main(["train", "--data", str(folder), "--objective", "softmax", "--epochs", "1", "--batch-size", "8", "--knn-k", "5",
          "--train-size", "16", "--out", str(out)])
    assert "budget: 1 epochs of 16 images (0 done), 2 steps of 8" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["knn_reference_images"], metrics["config"]["train_size"]) == (16, 48, 16)
    bad = run_cli("train", "--data", str(folder), "--train-size", "49", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "choose between 1 and 48" in bad.stderr


# -- round two of bad inputs (issue 16): each refused with a message, nothing on disk lost or mixed --------------
def tiny_run(folder, out, *extra):
    return run_cli("train", "--data", str(folder), "--epochs", "1", "--batch-size", "16", "--knn-k", "5", *extra,
                   "--out", str(out))


def test_out_folder_is_checked_and_expanded(folder, tmp_path):
    empty = tiny_run(folder, "")
    assert empty.returncode == 2 and "--out is empty" in empty.stderr and "Traceback" not in empty.stderr
    (tmp_path / "afile").write_text("notes")
    a_file = tiny_run(folder, tmp_path / "afile")
    assert a_file.returncode == 2 and "is a file, not a folder" in a_file.stderr
    assert (tmp_path / "afile").read_text() == "notes"
    home = run_cli("train", "--data", str(folder), "--epochs", "1", "--batch-size", "16", "--knn-k", "5",
                   "--out", "~/runs/x", cwd=tmp_path, env={**os.environ, "INSTDISC_QUICK": "1", "HOME": str(tmp_path / "home")})
    assert home.returncode == 0, home.stderr
    assert (tmp_path / "home" / "runs" / "x" / "metrics.json").exists() and not (tmp_path / "~").exists()


def test_a_second_run_on_the_same_folder_is_refused(folder, tmp_path):
    from instdisc_lesson.checkpoint import run_lock

    out = tmp_path / "busy"
    with run_lock(out):  # another run holds the folder
        busy = tiny_run(folder, out)
    assert busy.returncode == 2 and "in use by another run" in busy.stderr
    assert sorted(p.name for p in out.iterdir()) == [], "the refused run must not write anything (the holder removed its lock)"
    assert tiny_run(folder, out).returncode == 0  # the lock went with its holder


def test_resume_refuses_changed_settings_and_foreign_files(folder, tmp_path):
    import torch

    out = tmp_path / "run"
    assert tiny_run(folder, out).returncode == 0
    before = (out / "checkpoint.pt").read_bytes()
    changed = tiny_run(folder, out, "--resume", "--seed", "7", "--tau", "0.2")
    assert changed.returncode == 2 and "seed=0" in changed.stderr and "seed=7" in changed.stderr and "tau=0.07" in changed.stderr
    assert "mix two different runs" in changed.stderr and "Traceback" not in changed.stderr
    assert (out / "checkpoint.pt").read_bytes() == before
    longer = run_cli("train", "--data", str(folder), "--epochs", "2", "--batch-size", "16", "--knn-k", "5", "--resume",
                     "--out", str(out))
    assert longer.returncode == 2 and "epochs=1" in longer.stderr and "epochs=2" in longer.stderr

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"weights": torch.zeros(3)}, foreign / "checkpoint.pt")
    refused = tiny_run(folder, foreign, "--resume")
    assert refused.returncode == 2 and "not a checkpoint written by this course's trainer" in refused.stderr
    assert torch.load(foreign / "checkpoint.pt", weights_only=True)["weights"].shape == (3,)


def test_resume_without_a_checkpoint_says_it_starts_fresh(folder, tmp_path):
    fresh = tiny_run(folder, tmp_path / "new", "--resume")
    assert fresh.returncode == 0 and "holds no checkpoint yet, so this starts a new run" in fresh.stderr


def test_data_naming_a_file_and_missing_devices_are_explained(folder, tmp_path):
    image = next((folder / "train" / "red").iterdir())
    as_file = run_cli("train", "--data", str(image), "--out", str(tmp_path / "r"))
    assert as_file.returncode == 2 and "is a file, not a folder" in as_file.stderr
    for device, message in (("cuda:7", "no such CUDA GPU here"), ("banana", "is not a device")):
        result = tiny_run(folder, tmp_path / device.replace(":", "_"), "--device", device)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("epoch, saved", [(1, False), (3, True)])
def test_sigterm_stops_cleanly_and_says_what_was_saved(folder, tmp_path, epoch, saved):
    """SIGTERM mid-epoch: exit 143, the message says what is on disk, no stray temporary file. Deterministic:
    the run signals itself during epoch ``epoch``'s first step (``INSTDISC_TEST_SIGNAL``), before any
    checkpoint or after two of them."""
    out = tmp_path / "term"
    result = run_cli("train", "--data", str(folder), "--epochs", "200", "--batch-size", "8", "--knn-k", "5",
                     "--out", str(out), env={**os.environ, "INSTDISC_QUICK": "1", "INSTDISC_TEST_SIGNAL": f"SIGTERM@{epoch}"})
    assert result.returncode == 143 and "terminated (SIGTERM)" in result.stderr and "Traceback" not in result.stderr
    if saved:
        assert "continue with --resume" in result.stderr
        assert len(json.loads((out / "history.json").read_text())["history"]) == epoch - 1
    else:
        assert "nothing was saved" in result.stderr and not out.exists()  # not even the folder it made
        return
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "no stray temporary file"


def test_sigterm_inside_exec_of_a_string_still_exits_143(tmp_path):
    """A SIGTERM that lands in ``exec(str)`` (dataclasses and torch's lazy imports run such code) exits 143.

    Under ``python -m``, CPython ends a process by SIGINT once a plain KeyboardInterrupt has left an
    ``exec`` of a string, even if it was caught (this failed CI once, as returncode -2). Deterministic:
    the fake command sends the signal from inside exec'd code.
    """
    (tmp_path / "fake_cli.py").write_text(
        "import sys\n"
        "from instdisc_lesson import cli\n"
        "def train_command(args):\n"
        "    exec('import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(60)')\n"
        "cli.train_command = train_command\n"
        f"sys.exit(cli.main(['train', '--out', {str(tmp_path / 'run')!r}]))\n")
    paths = [str(Path(__file__).resolve().parents[1])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "INSTDISC_QUICK": "1", "PYTHONPATH": os.pathsep.join(paths)}  # the package, run from tmp_path
    result = subprocess.run([sys.executable, "-m", "fake_cli"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 143, (result.returncode, result.stderr)
    assert "terminated (SIGTERM) before the first epoch finished: nothing was saved" in result.stderr
    assert "Traceback" not in result.stderr


def test_expected_time_reads_like_a_person_would_say_it():
    from instdisc_lesson.cli import format_seconds

    assert [format_seconds(s) for s in (4.2, 89, 600, 5399, 12_240)] == ["4 s", "89 s", "10 min", "90 min", "3.4 h"]


def test_timing_the_budget_does_not_change_the_run(tmp_path):
    """cost.time_steps times a few steps and undoes them: the run is bit-identical to one never timed."""
    from conftest import make_dataset
    from instdisc_lesson import cost as costs
    from instdisc_lesson.recipe import quick_config
    from instdisc_lesson.trainer import Trainer

    train, test = make_dataset(64), make_dataset(32, seed=1)
    for objective, extra in (("nce", {"nce_m": 8}), ("pic", {"window": 32, "stride": 16, "recent_k": 24})):
        cfg = quick_config(objective=objective, epochs=2, batch_size=16, knn_k=5, **extra)
        plain, timed = Trainer(cfg, train, test, progress=False), Trainer(cfg, train, test, progress=False)
        plain.fit()
        timed.monitor.baseline(timed.model, 0, timed.evaluate)
        cost = costs.expected_seconds(timed, costs.time_steps(timed), timed.monitor.eval_seconds)
        timed.fit()
        assert cost["steps"] == (2 * 4 if objective == "nce" else 2 * 2) and cost["evaluations"] == 2
        for part in ("model", "objective"):
            mine = getattr(timed, part).state_dict()
            assert all(torch.equal(value, mine[key]) for key, value in getattr(plain, part).state_dict().items())
        assert [h["loss"] for h in plain.history] == [h["loss"] for h in timed.history]


def test_semisup_on_a_train_run_reports_every_way(folder, tmp_path):
    """Few labels: kNN/probe on frozen features, fine-tuning and from scratch, on a train run's checkpoint."""
    run = tmp_path / "run"
    main(["train", "--data", str(folder), "--objective", "softmax", "--epochs", "1", "--batch-size", "16", "--knn-k", "5",
          "--out", str(run)])
    main(["semisup", "--data", str(folder), "--checkpoint", str(run / "checkpoint.pt"), "--fraction", "0.5",
          "--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "semi")])
    metrics = json.loads((tmp_path / "semi" / "metrics.json").read_text())
    assert metrics["labelled_images"] == 24  # half of the 48 images, 12 of each of the 2 classes
    assert [h["step"] for h in metrics["history"]] == [2, 4]
    for key in ("finetune_top1", "scratch_top1", "pretrained_probe_top1", "untrained_knn_top1", "raw_pixel_probe_top1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["knn_top1"] == metrics["pretrained_knn_top1"] and metrics["config"]["fraction"] == 0.5


def test_semisup_refuses_bad_fraction_and_checkpoint(folder, tmp_path):
    for args, message in ((["--fraction", "0"], "fraction=0.0 must lie in (0, 1]"),
                          (["--fraction", "0.5", "--checkpoint", str(tmp_path / "none.pt")], "no such file")):
        result = run_cli("semisup", "--data", str(folder), *args, "--out", str(tmp_path / "s"))
        assert result.returncode == 2 and message in result.stderr, result.stderr


def _refuse(monkeypatch, target, method, code, when=lambda path, calls: True):
    """Make ``target.method`` raise OSError(code) for the paths ``when`` picks: the write the system refuses."""
    original, calls = getattr(target, method), []

    def refusing(self, *args, **kwargs):
        calls.append(str(self))
        if when(str(self), calls):
            raise OSError(code, os.strerror(code), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(target, method, refusing)


@pytest.mark.parametrize("code, where, message", [
    ("EROFS", "mkdir", "cannot create {out}: the file system is read-only. Choose an --out folder on a writable disk"),
    ("EACCES", "mkdir", "cannot create {out}: permission denied. Choose an --out folder you may write to"),
    ("EPERM", "lock", "cannot write .lock in {out}: the operation is not permitted (an immutable or protected folder?)"),
])
def test_an_out_folder_the_system_refuses_is_one_line(folder, tmp_path, monkeypatch, capsys, code, where, message):
    """A read-only file system, a folder we may not write, an immutable one: exit 2, one line naming the folder and
    what to do, no traceback, nothing left behind. Faults are injected at the write, so this runs as any user."""
    import builtins
    import errno

    out = tmp_path / "run"
    if where == "mkdir":
        _refuse(monkeypatch, Path, "mkdir", getattr(errno, code), lambda path, calls: path == str(out))
    else:
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if str(file).endswith(".lock"):
                raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", str(folder), "--epochs", "1", "--batch-size", "8", "--knn-k", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message.format(out=out) in err and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == err.splitlines()[-1:], err  # one line, last
    assert not out.exists() or not list(out.iterdir())  # nothing half-written


def test_a_disk_that_fills_mid_run_keeps_the_last_checkpoint_and_leaves_nothing_behind(folder, tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "run"
    args = ["train", "--data", str(folder), "--epochs", "3", "--batch-size", "8", "--knn-k", "5", "--precision", "fp32",
            "--memory-format", "contiguous", "--out", str(out)]
    saved = []
    real_replace = os.replace

    def keep_first(src, dst):  # what epoch 1 wrote, to compare with what is left
        real_replace(src, dst)
        if str(dst).endswith("checkpoint.pt") and not saved:
            saved.append(Path(dst).read_bytes())

    monkeypatch.setattr(os, "replace", keep_first)
    # the disk fills after epoch 1: the second checkpoint write fails with ENOSPC
    _refuse(monkeypatch, Path, "write_bytes", errno.ENOSPC,
            lambda path, calls: "checkpoint.pt" in path and sum("checkpoint.pt" in c for c in calls) >= 2)
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"cannot write checkpoint.pt in {out}: the disk is full. Free some disk space" in err
    assert "Traceback" not in err
    assert (out / "checkpoint.pt").read_bytes() == saved[0]  # epoch 1's checkpoint, untouched
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json"]  # no .tmp, no .lock


def test_an_out_path_through_a_file_is_refused(folder, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = tiny_run(folder, tmp_path / "afile" / "run")
    assert result.returncode == 2 and "a part of the path is a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr


# -- the front door (issue 43): help that says what will happen; refusals that come first and leave nothing --------
def test_help_groups_options_and_states_the_defaults_used():
    from instdisc_lesson.recipe import CPU_SECONDS, MAX_PASSES
    from instdisc_lesson.views import _KEYS

    text = run_cli("train", "--help").stdout
    for group in ("data:", "objective and network:", "optimisation:", "evaluation:", "run:", "distributed (torchrun):"):
        assert f"\n{group}\n" in text, group
    assert "examples:" in text and text.count("python -m instdisc_lesson train") >= 3
    assert "(paper: " not in text and "NCE_M" not in text and "EVAL_EVERY" not in text
    flat = " ".join(text.split())  # argparse wraps the help: compare the words, not the lines
    assert f"{CPU_SECONDS // 60:.0f}-minute" in flat and str(MAX_PASSES) in flat and "200" in flat  # --epochs
    assert all(key in flat for key in _KEYS)  # --augment lists its keys
    for written in ("checkpoint.pt", "history.json", "metrics.json", "report.png"):
        assert written in flat
    assert "32x32" in flat and "in memory" in flat  # own images, said in --data
    assert "--correction, --no-correction" in text and "(off by default)" not in flat
    for command in ("semisup", "embed"):
        sub = run_cli(command, "--help").stdout
        assert "usage:" in sub and len(sub.split("\n\n")[1].split()) > 8, sub  # a description, not only the usage


def test_progress_bar_shows_the_last_knn_not_nan(tiny, capsys):
    from instdisc_lesson.recipe import quick_config
    from instdisc_lesson.trainer import Trainer

    train, test = tiny
    cfg = quick_config(epochs=4, eval_every=2, batch_size=16, knn_k=5, precision="fp32")
    Trainer(cfg, train, test, progress=True).fit()
    bar = capsys.readouterr().err
    assert "knn=" in bar and "nan" not in bar, bar
    assert "(untrained)" in bar and "(epoch 2)" in bar, bar  # before the first evaluation, then after epoch 2


def _every_path(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


EARLY = [  # refused before any data or checkpoint is loaded
    (["train", "--data", "{folder}", "--device", "cuda:99", "--out", "{out}"], "no such CUDA GPU here"),
    (["train", "--data", "{tmp}/no/such/folder", "--out", "{out}"], "no/such/folder does not exist"),
    (["train", "--data", "{tmp}/imgs/train/red", "--out", "{out}"], "train does not exist"),
    (["train", "--data", "{folder}", "--tau", "0", "--out", "{out}"], "tau=0.0 must be > 0"),
    (["train", "--data", "{folder}", "--objective", "nce", "--nce-m", "0", "--out", "{out}"], "must be at least 1"),
    (["train", "--data", "{folder}", "--objective", "parametric", "--tau", "0.1", "--out", "{out}"], "--tau is not read"),
    (["train", "--data", "{folder}", "--augment", "crop=0.5", "--out", "{out}"], "KEY one of crop_min"),
    (["train", "--data", "{folder}", "--train-size", "-3", "--out", "{out}"], "train_size=-3 must be >= 0"),
    (["semisup", "--data", "{folder}", "--fraction", "2", "--out", "{out}"], "fraction=2.0 must lie in (0, 1]"),
    (["semisup", "--data", "{folder}", "--fraction", "0.5", "--steps", "0", "--out", "{out}"], "steps=0 must be"),
    (["semisup", "--data", "{folder}", "--fraction", "0.5", "--checkpoint", "{tmp}/none.pt", "--out", "{out}"],
     "no such file"),
    (["semisup", "--data", "{folder}", "--fraction", "0.5", "--checkpoint", "shipped:nope", "--out", "{out}"],
     "no shipped checkpoint named 'nope'"),
    (["semisup", "--data", "{tmp}/no/such", "--fraction", "0.5", "--out", "{out}"], "no/such does not exist"),
    (["embed", "--data", "{tmp}/no/such", "--out", "{out}/f.npz"], "no/such does not exist"),
    (["embed", "--data", "{folder}", "--out", "{tmp}/imgs"], "is a folder"),
    (["embed", "--data", "{folder}", "--checkpoint", "{tmp}/none.pt", "--out", "{out}/f.npz"], "no such file"),
]
LATE = [  # refused once the data says so: still nothing left behind, not even the folders --out named
    (["train", "--data", "{folder}", "--epochs", "1", "--batch-size", "500", "--out", "{out}"],
     "batch_size=500 is larger than the dataset"),
    (["train", "--data", "{folder}", "--epochs", "1", "--knn-k", "49", "--out", "{out}"], "must lie in [1, 48]"),
]


@pytest.mark.parametrize("argv, message, early", [(*case, True) for case in EARLY] + [(*case, False) for case in LATE])
def test_refusals_come_first_and_leave_nothing_behind(folder, tmp_path, monkeypatch, capsys, argv, message, early):
    from instdisc_lesson import cli

    if early:  # loading anything would come too late: make it fail the test
        def loaded(*args, **kwargs):
            raise AssertionError("data or a checkpoint was loaded before the refusal")
        for name in ("load_dataset", "pretrained_encoder"):
            monkeypatch.setattr(cli, name, loaded)
    out = tmp_path / "runs" / "deeper" / "run"
    argv = [a.format(folder=folder, tmp=tmp_path, out=out) for a in argv]
    before = _every_path(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err, err
    assert err.startswith("error: ") if early else err.splitlines()[-1].startswith("error: "), err
    assert _every_path(tmp_path) == before  # no --out folder, no parent of it, no lock, no temporary file
