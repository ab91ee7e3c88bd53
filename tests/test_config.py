"""Quick switch, device choice, seeding, and a light package import."""
import subprocess
import sys

import pytest
import torch

from instdisc_lesson import config


@pytest.mark.parametrize("env,ci,expected", [("1", None, True), ("0", None, False), ("0", "true", False),
                                             (None, "true", True), ("yes", None, True), ("off", "1", False)])
def test_quick_switch_reads_environment(monkeypatch, env, ci, expected):
    for name, value in (("INSTDISC_QUICK", env), ("CI", ci)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert config.is_quick() is expected


def test_quick_switch_without_env_follows_hardware(monkeypatch):
    monkeypatch.delenv("INSTDISC_QUICK", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert config.is_quick() is (not torch.cuda.is_available())


def test_quick_switch_rejects_gibberish(monkeypatch):
    monkeypatch.setenv("INSTDISC_QUICK", "maybe")
    with pytest.raises(ValueError, match="INSTDISC_QUICK='maybe'"):
        config.is_quick()


def test_device_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert config.get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert config.get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.get_device() == torch.device("cuda")
    assert config.get_device("cpu") == torch.device("cpu")


def test_describe_setup_names_device_and_budget(monkeypatch):
    monkeypatch.setenv("INSTDISC_QUICK", "1")
    line = config.describe_setup()
    assert "quick budget" in line and "device:" in line and "SMOKE" not in line
    monkeypatch.setenv("INSTDISC_SMOKE", "1")
    assert "SMOKE" in config.describe_setup()


@pytest.mark.parametrize("budget_env, quick_env, ci, cuda, expected", [
    ("gpu", "1", None, False, "gpu"),        # INSTDISC_BUDGET wins over everything
    ("Paper", None, "true", True, "paper"),
    (None, "1", None, True, "quick"),        # INSTDISC_QUICK: 1 is quick ...
    (None, "0", "true", False, "paper"),     # ... 0 is paper, even under CI
    (None, None, "true", True, "quick"),     # CI means quick
    (None, None, None, True, "gpu"),         # unset: gpu with CUDA ...
    (None, None, None, False, "quick"),      # ... quick without
])
def test_budget_precedence(monkeypatch, budget_env, quick_env, ci, cuda, expected):
    for name, value in (("INSTDISC_BUDGET", budget_env), ("INSTDISC_QUICK", quick_env), ("CI", ci)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert config.budget() == expected
    assert config.is_quick() is (expected == "quick")
    assert config.dataset_name() == ("quick" if expected == "quick" else "cifar10")


def test_budget_and_smoke_reject_gibberish(monkeypatch):
    monkeypatch.setenv("INSTDISC_BUDGET", "fast")
    with pytest.raises(ValueError, match="INSTDISC_BUDGET='fast'.*quick.*gpu.*paper"):
        config.budget()
    monkeypatch.setenv("INSTDISC_SMOKE", "sometimes")
    with pytest.raises(ValueError, match="INSTDISC_SMOKE='sometimes'"):
        config.is_smoke()


def test_pick_follows_budget_and_smoke(monkeypatch):
    monkeypatch.delenv("INSTDISC_SMOKE", raising=False)
    for budget, expected in (("quick", 6), ("gpu", 20), ("paper", 20)):  # paper never starts a long run by itself
        monkeypatch.setenv("INSTDISC_BUDGET", budget)
        assert config.pick(quick=6, gpu=20, smoke=1) == expected
    monkeypatch.setenv("INSTDISC_SMOKE", "1")
    assert config.pick(quick=6, gpu=20, smoke=1) == 1
    assert config.pick(quick=6, gpu=20) == 6  # no smoke value: the quick one


def test_smoke_keeps_a_few_hundred_images_only_where_asked(monkeypatch):
    from instdisc_lesson.data import SMOKE_SIZES, course_data, load_dataset

    monkeypatch.setenv("INSTDISC_SMOKE", "1")
    monkeypatch.setenv("INSTDISC_BUDGET", "quick")
    train, test = course_data()  # the notebooks' edge reads the flag
    assert (len(train), len(test)) == SMOKE_SIZES
    assert (len(load_dataset("quick")[0]), len(load_dataset("quick", limit=(10, 5))[1])) == (1600, 5)  # no hidden shrink


def test_seed_everything_repeats_draws():
    g1 = config.seed_everything(123)
    a = (torch.rand(5), torch.rand(3, generator=g1))
    g2 = config.seed_everything(123)
    b = (torch.rand(5), torch.rand(3, generator=g2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("INSTDISC_DATA", str(tmp_path / "env"))
    assert config.data_root() == tmp_path / "env"
    assert config.data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("INSTDISC_DATA")
    assert config.data_root().name == "data"


def test_import_is_light():
    """Reference: the issue's rule that nothing heavy loads at import (umap, sklearn, matplotlib).

    Checked by which modules load, not by a time: a timed assert fails on a busy machine.
    """
    code = ("import sys; import instdisc_lesson; "
            "print([m for m in ('umap', 'sklearn', 'matplotlib', 'ipywidgets', 'torchvision') if m in sys.modules])")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert heavy == "[]", f"heavy modules imported by instdisc_lesson: {heavy}"


def test_runs_and_data_resolve_beside_the_course_or_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("INSTDISC_RUNS", raising=False)
    monkeypatch.delenv("INSTDISC_DATA", raising=False)
    checkout = config.project_root()
    assert (checkout / "pyproject.toml").is_file()  # the tests run from the checkout
    assert config.runs_root() == checkout / "runs" and config.data_root() == checkout / "data"
    # installed elsewhere (site-packages): the learner's working directory, not the package folder
    fake = tmp_path / "site-packages" / "instdisc_lesson" / "config.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(config, "__file__", str(fake))
    monkeypatch.chdir(tmp_path)
    assert config.project_root() == tmp_path
    assert config.runs_root() == tmp_path / "runs" and "instdisc_lesson" not in str(config.data_root())


def test_fitted_defaults_worked_by_hand():
    """recipe.fitted_config: 300,000 images seen (5-200 epochs), batch <= n/4, k = 4 % of the smallest class
    (at least 5, at most the class and 200), NCE m = n/8 (at most 4096), kNN every tenth of the run."""
    from instdisc_lesson.recipe import MAX_PASSES, fitted_config, time_epochs

    def knobs(n, smallest):  # m is NCE's: the default objective (softmax) reads none, and has None
        cfg, nce = fitted_config(n, smallest), fitted_config(n, smallest, objective="nce")
        assert cfg.nce_m is None
        return cfg.epochs, cfg.batch_size, cfg.knn_k, nce.nce_m, cfg.eval_every, cfg.tau, cfg.model, cfg.bank_init

    assert knobs(5_000, 500) == (60, 128, 20, 625, 6, 0.07, "convnet", "features")
    assert knobs(50_000, 5_000) == (6, 128, 200, 4096, 1, 0.07, "convnet", "features")
    assert knobs(1_438, 143) == (200, 128, 6, 179, 20, 0.07, "convnet", "features")  # ceil(208.6) capped
    assert knobs(40, 4) == (200, 10, 4, 5, 20, 0.07, "convnet", "features")  # k at most the class
    assert fitted_config(5_000, 500, objective="pic").tau == 0.2  # PIC's own temperature
    assert fitted_config(5_000, 500, epochs=7, tau=0.2).epochs == 7  # options given win
    # time_epochs: 40 steps of 50 ms = 2 s an epoch; 648 s (0.9 of 12 min) less 11 evaluations of 8 s = 560 s -> 280
    cost = {"steps_per_epoch": 40, "step_seconds": 0.05, "eval_seconds": 8.0}
    assert time_epochs(cost)[0] == 280 and "as many as fit in 11 of the 12 minutes" in time_epochs(cost)[1]
    assert time_epochs(cost, seconds=100.0)[0] == 6  # (100 - 88) // 2
    assert time_epochs({**cost, "step_seconds": 100.0})[0] == 1  # at least one epoch, however slow
    assert time_epochs({**cost, "step_seconds": 1e-4})[0] == MAX_PASSES  # a tiny folder: the ceiling binds, and says so
    assert "MAX_PASSES" in time_epochs({**cost, "step_seconds": 1e-4})[1]
