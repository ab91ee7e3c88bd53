"""The shipped records of real CIFAR-10 runs: complete, consistent, and reproducible from their commands."""
import json

import pytest

from instdisc_lesson import records
from instdisc_lesson.cli import build_config, build_parser
from instdisc_lesson.pretrained import load_pretrained
from instdisc_lesson.recipe import TrainConfig
from instdisc_lesson.registry import CLASSES, OBJECTIVE_FIELDS

NCE_ONLY = tuple(f for f in CLASSES["nce"].settings if f not in CLASSES["softmax"].settings)  # defaults differ by preset


def unread(objective: str) -> tuple:
    """The settings ``objective`` does not read (the records, written before they were refused, hold them all)."""
    return tuple(f for f in OBJECTIVE_FIELDS if f not in CLASSES[objective].settings)
EXPERIMENTS = {"table1", "tau", "lambda", "z_mode", "pic", "semi_supervised", "semi_steps", "dim", "train_size",
               "paper200"}
SHIPPED = records.names()
FEW_LABELS = [n for n in SHIPPED  # made by `semisup` on the shipped checkpoint
              if records.load(n)["command"].startswith("python -m instdisc_lesson semisup ")]
TRAINED = [n for n in SHIPPED if n not in FEW_LABELS]  # made by `train`


def test_table1_ships_the_rows_the_notebooks_read():
    """Notebooks 03 and 06 assert on these four; every Table 1 record shares one budget (never mix budgets)."""
    assert {"table1-parametric", "table1-softmax", "table1-nce-m1", "table1-nce-m4096"} <= set(SHIPPED)
    table1 = records.load_experiment("table1")
    # the budget: everything but the objective, the settings it does not read, and the arithmetic (fp32 or bf16)
    free = ("objective", "precision", "memory_format") + NCE_ONLY
    shared = {k: v for k, v in table1["table1-softmax"]["config"].items() if k not in free}
    for rec in table1.values():
        skip = unread(rec["config"]["objective"])
        assert {k: rec["config"][k] for k in shared if k not in skip} == \
            {k: v for k, v in shared.items() if k not in skip}, rec["name"]
    assert table1["table1-softmax"]["knn_top1"] > table1["table1-softmax"]["raw_pixel_knn_top1"] + 0.10
    assert table1["table1-nce-m4096"]["knn_top1"] > table1["table1-nce-m1"]["knn_top1"] + 0.05


def test_paper200_records_are_the_papers_run_but_for_their_named_deviations():
    """Notebook 06 sets the 200-epoch rows beside the paper's: each must be the paper's recipe and schedule
    (the softmax row's config) but for its objective, and NCE's rows may depart only in the one deviation the
    queue names (the EMA of Z), except paper-nce-m4096-once, the paper's exact setting."""
    runs = records.load_experiment("paper200")
    reference = runs["paper-softmax"]["config"]
    free = ("objective", "precision", "memory_format") + NCE_ONLY
    assert reference["epochs"] == 200 and reference["z_mode"] == "once" and reference["bank_init"] == "random"
    for name, rec in runs.items():
        same = [k for k in reference if k not in free and k not in unread(rec["config"]["objective"])]
        assert {k: rec["config"][k] for k in same} == {k: reference[k] for k in same}, name
        ema = rec["config"]["objective"] == "nce" and name != "paper-nce-m4096-once"
        assert rec["deviations"] == ({"z_mode": "ema"} if ema else {}), name
        assert ("--z-mode ema" in rec["command"]) == ema, name


@pytest.mark.parametrize("experiment,varied", [("dim", {"dim"}), ("train_size", {"train_size", "epochs", "eval_every"})])
def test_dim_and_train_size_records_differ_from_tau_007_in_one_setting(experiment, varied):
    """Notebook 09 plots tau-0.07 as the d = 128, all-50,000-images point of both: nothing else may differ.
    The subsets train for the same number of steps: epochs x images = 5 x 50,000."""
    reference = {**TrainConfig().to_dict(), **records.load("tau-0.07")["config"]}  # fields added since: defaults
    runs = records.load_experiment(experiment)
    assert len(runs) >= 3
    for rec in runs.values():
        assert {k for k, v in rec["config"].items() if reference.get(k) != v} == varied, rec["name"]
        if experiment == "train_size":
            size = rec["config"]["train_size"]
            assert rec["train_images"] == size and rec["epochs"] * size == 5 * 50_000


def test_the_longer_few_labels_record_differs_in_steps_alone():
    """Notebook 09 sets semi-20pct-3000steps beside semi-20pct: the same labels and checkpoint, 5x the steps."""
    runs = records.load_experiment("semi_steps")
    same = lambda config: {**config, "pretrained": TrainConfig.from_dict(config["pretrained"]).to_dict()}  # fields added since
    short = same(records.load("semi-20pct")["config"])
    for rec in runs.values():
        assert {k for k, v in same(rec["config"]).items() if short[k] != v} == {"steps", "eval_every"}, rec["name"]
        assert rec["steps"] == 5 * short["steps"] and rec["labelled_images"] == records.load("semi-20pct")["labelled_images"]


@pytest.mark.parametrize("name", SHIPPED)
def test_record_is_complete_and_consistent(name):
    rec = records.load(name)
    assert rec["name"] == name and rec["experiment"] in EXPERIMENTS
    assert rec["device"] and rec["data"].startswith("CIFAR-10") and rec["train_seconds"] > 0
    assert len(json.dumps(rec)) < 64_000, "records stay small (kilobytes)"
    for key in ("knn_top1", "random_init_knn_top1", "raw_pixel_knn_top1"):
        assert 0.0 <= rec[key] <= 1.0
    if name in FEW_LABELS:  # fine-tuning curves: test accuracy every eval_every steps, the last one the result
        every = rec["config"]["eval_every"]
        assert [h["step"] for h in rec["history"]] == list(range(every, rec["steps"] + 1, every))
        assert rec["history"][-1]["finetune_top1"] == rec["finetune_top1"]
        assert rec["history"][-1]["scratch_top1"] == rec["scratch_top1"]
        return
    epochs = [h["epoch"] for h in rec["history"]]
    assert epochs == list(range(1, rec["epochs"] + 1)) and rec["epochs"] == rec["config"]["epochs"]
    last = rec["history"][-1]
    assert last["knn_top1"] == rec["knn_top1"]  # the final number is the last evaluation of the history


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("quick", ["1", "0"])
def test_record_command_rebuilds_its_config(name, quick, monkeypatch, tmp_path):
    """The command alone gives the recorded config, in quick and in full mode (NCE's settings aside where unused)."""
    monkeypatch.setenv("INSTDISC_QUICK", quick)
    rec = records.load(name)
    rebuilt = build_config(build_parser().parse_args(records.train_args(rec, tmp_path))).to_dict()
    saved = TrainConfig.from_dict(rec["config"]).to_dict()  # JSON keeps tuples as lists; unread settings left out
    for key in ("precision", "memory_format"):  # "auto" is resolved by timing when the run starts: any value fits
        if rebuilt[key] == "auto":
            rebuilt[key] = saved[key]
    assert rebuilt == saved


@pytest.mark.parametrize("name", FEW_LABELS)
def test_few_labels_command_rebuilds_its_config(name, tmp_path):
    rec = records.load(name)
    args = build_parser().parse_args(records.train_args(rec, tmp_path))
    assert args.command == "semisup" and args.checkpoint == rec["config"]["checkpoint"] == "shipped:60-epoch"
    # the name in the command is the checkpoint the record was made with: the same training config
    _, info = load_pretrained("cpu", name=args.checkpoint.partition(":")[2])
    made_with = TrainConfig.from_dict(rec["config"]["pretrained"]).to_dict()
    assert TrainConfig.from_dict(info["config"]).to_dict() == made_with
    assert (args.fraction, args.steps, args.seed, args.eval_every) == tuple(
        rec["config"][k] for k in ("fraction", "steps", "seed", "eval_every"))


def test_missing_and_damaged_records_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(records.RecordError, match="no record named 'nope'.*git checkout"):
        records.load("nope")
    monkeypatch.setattr(records, "RECORDS_DIR", tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(records.RecordError, match="unreadable"):
        records.load("broken")
    (tmp_path / "partial.json").write_text(json.dumps({"name": "partial"}))
    with pytest.raises(records.RecordError, match="lacks experiment"):
        records.load("partial")


def test_describe_puts_the_result_beside_its_baselines():
    rec = {"label": "x", "knn_top1": 0.5, "random_init_knn_top1": 0.4, "raw_pixel_knn_top1": 0.41, "epochs": 3,
           "train_seconds": 120, "device": "CPU, 2 cores"}
    assert records.describe(rec) == "x: kNN top-1 50.0% (untrained 40.0%, raw pixels 41.0%); 3 epochs, 2 min on CPU, 2 cores"
