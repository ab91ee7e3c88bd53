"""Each objective declares the settings it reads; every other objective's setting is refused, on the command line and
in TrainConfig, for every (objective, option) pair, before anything is loaded or written."""
import dataclasses
import re
from pathlib import Path

import pytest

from instdisc_lesson.cli import build_config, build_parser, main
from instdisc_lesson.preflight import check as preflight
from instdisc_lesson.recipe import TrainConfig, quick_config
from instdisc_lesson.registry import CLASSES, OBJECTIVE_FIELDS, OBJECTIVE_OPTIONS, OBJECTIVES, unread_message

# A value each objective setting accepts (not its default: a default must be refused as firmly as any other value).
VALUES = {"tau": 0.3, "bank_momentum": 0.9, "bank_init": "features", "lam": 10.0, "nce_m": 64, "z_mode": "ema",
          "z_momentum": 0.9, "z_estimator": "all", "shared_negatives": True, "window": 32, "stride": 8, "recent_k": 64,
          "correction": False}


def cli_words(field: str) -> list[str]:
    """The command-line words that set ``field`` to its value in VALUES."""
    option = next(o for o in OBJECTIVE_OPTIONS if o.field == field)
    value = VALUES[field]
    if isinstance(value, bool):
        return [option.given_as(value)]
    return [option.flag, str(value)]


def test_every_setting_has_a_value_to_try_and_every_option_sets_one():
    assert set(VALUES) == set(OBJECTIVE_FIELDS)
    assert {o.field for o in OBJECTIVE_OPTIONS} <= set(OBJECTIVE_FIELDS)
    assert len({o.flag for o in OBJECTIVE_OPTIONS}) == len(OBJECTIVE_OPTIONS)  # an option shared by two, once


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("field", OBJECTIVE_FIELDS)
def test_trainconfig_refuses_every_setting_its_objective_does_not_read(objective, field):
    reads = field in CLASSES[objective].settings
    if reads:
        cfg = TrainConfig(objective=objective, **{field: VALUES[field]})
        assert getattr(cfg, field) == VALUES[field]
        return
    with pytest.raises(ValueError) as refused:
        TrainConfig(objective=objective, **{field: VALUES[field]})
    assert str(refused.value) == unread_message(field, objective)
    assert "\n" not in str(refused.value) and "leave it out" in str(refused.value)
    with pytest.raises(ValueError):  # the presets pass it on, and refuse it the same way
        quick_config(objective=objective, **{field: VALUES[field]})
    assert getattr(TrainConfig(objective=objective), field) is None  # unread settings hold nothing


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("option", OBJECTIVE_OPTIONS, ids=lambda o: o.flag)
def test_the_command_line_refuses_every_option_its_objective_does_not_read(objective, option, tmp_path):
    out = tmp_path / "run"
    words = ["train", "--data", "quick", "--objective", objective, *cli_words(option.field), "--out", str(out)]
    args = build_parser().parse_args(words)
    if option.field in CLASSES[objective].settings:
        preflight(args)  # accepted, and it reaches the run's config
        assert getattr(build_config(args), option.field) == VALUES[option.field]
        return
    with pytest.raises(ValueError) as refused:
        preflight(args)
    flag = cli_words(option.field)[0]
    assert str(refused.value) == unread_message(option.field, objective, flag)
    assert str(refused.value).startswith(f"{flag} is not read by the {objective} objective")


@pytest.mark.parametrize("option", OBJECTIVE_OPTIONS, ids=lambda o: o.flag)
def test_an_option_of_the_default_objective_is_judged_by_that_objective(option, tmp_path):
    """No --objective: the quick set's default (softmax) decides, before any data is loaded."""
    args = build_parser().parse_args(["train", "--data", "quick", *cli_words(option.field), "--out", str(tmp_path)])
    if option.field in CLASSES["softmax"].settings:
        preflight(args)
    else:
        with pytest.raises(ValueError, match="is not read by the softmax objective"):
            preflight(args)


@pytest.mark.parametrize("words", [["--objective", "pic", "--lam", "10"], ["--objective", "pic", "--bank-momentum", "0.9"],
                                   ["--objective", "softmax", "--window", "512"],
                                   ["--objective", "softmax", "--no-correction"],
                                   ["--objective", "nce", "--recent-k", "64"]])
def test_the_issue_s_five_invocations_exit_2_and_leave_nothing(words, tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--data", "quick", *words, "--epochs", "1", "--out", str(out)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {words[2]} is not read by the {words[1]} objective"), err
    assert "leave it out, or choose --objective" in err[0]
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing at all


class Spy:
    """A config that records which objective settings an objective's ``from_config`` reads."""

    def __init__(self, cfg):
        self.cfg, self.read = cfg, set()

    def __getattr__(self, name):
        if name in OBJECTIVE_FIELDS:
            self.read.add(name)
        return getattr(self.cfg, name)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_declares_exactly_the_settings_it_reads(objective):
    """``from_config`` reads the declared settings (the start from features is read through ``start_from``, which
    only the objectives with rows to start override) and no other objective's."""
    from instdisc_lesson.objectives import Objective

    cls = CLASSES[objective]
    cfg = quick_config(objective=objective, **({"window": 32} if "window" in cls.settings else {}))
    spy = Spy(cfg)
    cls.from_config(spy, 1000)
    starts = cls.start_from is not Objective.start_from
    assert spy.read | ({"bank_init"} if starts else set()) == set(cls.settings), spy.read


def test_a_resolved_config_is_frozen():
    cfg = quick_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3


PACKAGE = Path(__file__).resolve().parents[1] / "instdisc_lesson"
ASSIGNS = re.compile(r"^\s*([^=#\n]*?)\s(?:[-+*/|&]?)=\s")  # the left side of an assignment statement


def assignments_to_a_trainer(package: Path) -> list[str]:
    """``file:line`` of every statement outside trainer.py that assigns an attribute of a trainer (``trainer.x = ...``,
    ``a, trainer.x = ...``, ``trainer.x += ...``, ``setattr(trainer, ...)``)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "trainer.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            left = ASSIGNS.match(line)
            if (left and re.search(r"\b(trainer|t|probe)\.\w+", left.group(1))) or re.search(r"setattr\(\s*trainer\b", line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_no_module_assigns_a_trainer_s_attributes():
    """The Trainer owns its state: resume.py and cost.py go through state_dict / load_state_dict."""
    assert assignments_to_a_trainer(PACKAGE) == []
