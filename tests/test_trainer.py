"""The training loop: history, checkpoints written atomically, resume = uninterrupted, clean stops."""
import json

import pytest
import torch

from conftest import make_dataset
from host_syncs import HostSyncs
from instdisc_lesson import checkpoint, resume
from instdisc_lesson.summary import summary
from instdisc_lesson.checkpoint import CheckpointError
from instdisc_lesson.models import batchnorm_pass
from instdisc_lesson.recipe import quick_config
from instdisc_lesson.trainer import Trainer


def tiny_cfg(**kw):
    base = dict(epochs=3, batch_size=16, knn_k=5, seed=0, **({"nce_m": 8} if kw.get("objective") == "nce" else {}))
    base.update(kw)
    return quick_config(**base)


@pytest.mark.parametrize("objective", ["parametric", "softmax", "nce"])
def test_fit_records_history_for_every_objective(tiny, tmp_path, objective):
    train, test = tiny
    trainer = Trainer(tiny_cfg(objective=objective), train, test, out_dir=tmp_path, progress=False)
    history = trainer.fit()
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(0.0 <= h["knn_top1"] <= h["knn_top5"] <= 1.0 and h["loss"] > 0 for h in history)
    assert "random_init_knn_top1" in trainer.monitor.baselines
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == json.loads(json.dumps(history))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["config"]["objective"] == objective


def test_resume_equals_uninterrupted_run(tiny, tmp_path):
    train, test = tiny
    straight = Trainer(tiny_cfg(objective="nce"), train, test, progress=False)
    straight.fit()
    first = Trainer(tiny_cfg(objective="nce"), train, test, out_dir=tmp_path, progress=False)
    first.fit(epochs=2)  # "interrupted" after epoch 2
    resumed = Trainer(tiny_cfg(objective="nce"), train, test, out_dir=tmp_path, progress=False)
    resume.load(resumed, tmp_path / "checkpoint.pt")
    resumed.fit()
    for a, b in zip(straight.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["knn_top1"] == b["knn_top1"]
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-5), name


def test_a_checkpoint_from_before_a_setting_existed_resumes(tiny, tmp_path):
    """A checkpoint saved before a setting was added (here the views' ``rotate``, inside ``augment``, and a
    top-level field) resumes: the missing settings take their defaults, which the run has too."""
    train, test = tiny
    Trainer(tiny_cfg(), train, test, out_dir=tmp_path, progress=False).fit(epochs=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["config"]["augment"]["rotate"], state["config"]["knn_sigma"]
    checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", state)
    resumed = Trainer(tiny_cfg(), train, test, out_dir=tmp_path, progress=False)
    resume.load(resumed, tmp_path / "checkpoint.pt")
    assert resumed.epoch == 1
    other = Trainer(tiny_cfg(augment={"rotate": 10.0}), train, test, progress=False)
    with pytest.raises(CheckpointError, match="augment="):  # a real change is still refused
        resume.load(other, tmp_path / "checkpoint.pt")


def test_the_kept_network_is_the_last_epoch_unless_the_untrained_one_scores_higher(tiny, tmp_path):
    """No harm done: the last epoch's network, unless the untrained network scored higher by leave-one-out kNN
    on the training images; the untrained weights and score survive a resume."""
    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=2), train, test, out_dir=tmp_path, progress=False)
    untrained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()
    from instdisc_lesson.knn import embed, leave_one_out_knn  # the score, computed here directly
    direct = leave_one_out_knn(embed(trainer.model, train.images), train.labels, 5, 0.1, 4, trainer.monitor.loo_queries)
    assert history[-1]["train_loo_top1"] == pytest.approx(direct)
    before = trainer.monitor.baselines["random_init_train_loo_top1"]
    assert trainer.monitor.untrained["train_loo_top1"] == before
    assert all(torch.equal(untrained[k], v) for k, v in trainer.monitor.untrained["model"].items())
    kept = trainer.monitor.kept(trainer.model, trainer.epoch, trainer.history)
    if direct >= before:
        assert kept["epoch"] == 2 and all(torch.equal(trainer.model.state_dict()[k], v) for k, v in kept["model"].items())
    else:
        assert kept["epoch"] == 0 and all(torch.equal(untrained[k], v) for k, v in kept["model"].items())
    resumed = Trainer(tiny_cfg(epochs=2), train, test, progress=False)
    resume.load(resumed, tmp_path / "checkpoint.pt")
    assert resumed.monitor.kept(resumed.model, resumed.epoch, resumed.history)["epoch"] == kept["epoch"] and resumed.monitor.untrained["train_loo_top1"] == before
    assert all(torch.equal(untrained[k], v) for k, v in resumed.monitor.untrained["model"].items())


@pytest.mark.parametrize("last,kept_epoch", [(0.5, 0), (0.9, 2), (0.95, 2)])
def test_the_untrained_network_is_kept_when_the_last_epoch_scores_lower(tiny, monkeypatch, last, kept_epoch):
    """Scores worked by hand: untrained 0.9; the last epoch 0.5 (kept: untrained), 0.9 (a tie: the last epoch)
    or 0.95. An earlier epoch's 0.99 does not count: the run ends with its last epoch or the untrained one."""
    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=2), train, test, progress=False)
    untrained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda: {**real(), "train_loo_top1": (0.9, 0.99, last)[trainer.epoch]})
    trainer.fit()
    kept = trainer.monitor.kept(trainer.model, trainer.epoch, trainer.history)
    assert (kept["epoch"], kept["train_loo_top1"]) == (kept_epoch, 0.9 if kept_epoch == 0 else last)
    assert all(torch.equal((untrained if kept_epoch == 0 else trainer.model.state_dict())[k], v)
               for k, v in kept["model"].items())
    assert not all(torch.equal(trainer.model.state_dict()[k], v) for k, v in untrained.items())  # it did train


def test_checkpoint_from_another_config_is_refused(tiny, tmp_path):
    train, test = tiny
    Trainer(tiny_cfg(epochs=1), train, test, out_dir=tmp_path, progress=False).fit()
    other = Trainer(tiny_cfg(dim=32), train, test, progress=False)
    with pytest.raises(CheckpointError, match="dim=128"):
        resume.load(other, tmp_path / "checkpoint.pt")
    smaller = Trainer(tiny_cfg(), train.subset(range(32)), test, progress=False)
    with pytest.raises(CheckpointError, match="64 training images"):
        resume.load(smaller, tmp_path / "checkpoint.pt")


def test_crash_during_save_keeps_previous_checkpoint(tiny, tmp_path, monkeypatch):
    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=1), train, test, out_dir=tmp_path, progress=False)
    trainer.fit()
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def crash_halfway(path, data):  # the file write of save_checkpoint (it serialises in memory first)
        with open(path, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(checkpoint.Path, "write_bytes", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        resume.save(trainer, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_nan_stops_training_and_keeps_files(tiny, tmp_path, monkeypatch):
    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=3, objective="softmax"), train, test, out_dir=tmp_path, progress=False)
    trainer.fit(epochs=1)
    bank_before = trainer.objective.memory.bank.clone()
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x: forward(x) * float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 2, step 1"):
        trainer.fit()
    assert torch.equal(trainer.objective.memory.bank, bank_before)  # the bad step was not applied
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert len(json.loads((tmp_path / "history.json").read_text())["history"]) == 1


def test_nan_in_the_middle_of_an_epoch_stops_before_its_checkpoint(tiny, tmp_path, monkeypatch):
    """The loss is read once per epoch (no host sync in the steps): a NaN at step 3 of epoch 2 is still caught
    before epoch 2 is saved, named by its step, and the run is back at epoch 1's checkpoint, intact on disk."""
    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=3, objective="nce", nce_m=8), train, test, out_dir=tmp_path, progress=False)
    trainer.fit(epochs=1)
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    model_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    forward, calls = trainer.model.forward, []

    def nan_at_third_step(x):
        calls.append(1)
        return forward(x) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(trainer.model, "forward", nan_at_third_step)
    with pytest.raises(FloatingPointError, match="epoch 2, step 3"):
        trainer.fit()
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved  # epoch 1's checkpoint, untouched
    assert all(torch.equal(v, model_before[k]) for k, v in trainer.model.state_dict().items())  # and in memory
    assert trainer.epoch == 1 and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_batch_larger_than_dataset_is_rejected(tiny):
    train, test = tiny
    with pytest.raises(ValueError, match="batch_size=100 is larger than the dataset \\(64 images\\)"):
        Trainer(tiny_cfg(batch_size=100), train, test, progress=False)


@pytest.mark.parametrize("kw,message", [(dict(batch_size=0), "batch_size=0"), (dict(epochs=-1), "epochs=-1"),
                                        (dict(lr=0.0), "lr=0.0"), (dict(momentum=1.0), "momentum=1.0")])
def test_bad_config_values(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny_cfg(**kw)


def test_corrupt_checkpoint_gives_clear_message(tiny, tmp_path):
    train, test = tiny
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    trainer = Trainer(tiny_cfg(), train, test, progress=False)
    with pytest.raises(CheckpointError, match="unreadable .*delete it and train again"):
        resume.load(trainer, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        resume.load(trainer, tmp_path / "missing.pt")


def test_unknown_bank_init_is_rejected():
    with pytest.raises(ValueError, match="bank_init='zeros' is unknown"):
        tiny_cfg(bank_init="zeros")


def test_bank_starts_from_features_when_asked(tiny):
    """bank_init='features': row i is the untrained network's (un-augmented) feature of image i."""
    train, test = tiny
    trainer = Trainer(tiny_cfg(bank_init="features"), train, test, progress=False)
    assert torch.allclose(trainer.objective.memory.bank, batchnorm_pass(trainer.model, trainer.images), atol=1e-5)
    random = Trainer(tiny_cfg(bank_init="random"), train, test, progress=False)
    assert (random.objective.memory.bank * batchnorm_pass(random.model, random.images)).sum(1).abs().mean() < 0.3


def test_compile_option_reports_warmup_separately(tiny, monkeypatch):
    """The wiring of cfg.compile: torch.compile is applied (here with the fast 'eager' backend) and the
    first step's time is kept out of the epoch's train_seconds."""
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kw):
        calls.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=1, compile=True), train, test, progress=False)
    trainer.fit()
    assert calls == [trainer.model]
    assert trainer.timings["compile_warmup_seconds"] > 0 and trainer.history[0]["train_seconds"] > 0


def test_dataset_with_a_lone_last_image_trains():
    """n = 17, batch 8: the last batch (and the BatchNorm pass) would hold one image; it joins the previous one."""
    train = make_dataset(17)
    trainer = Trainer(tiny_cfg(epochs=1, batch_size=8, objective="pic"), train, None, progress=False)
    trainer.fit()
    assert len(trainer.history) == 1


def test_resume_on_other_images_of_the_same_size_is_refused(tiny, tmp_path):
    train, test = tiny
    Trainer(tiny_cfg(epochs=1), train, test, out_dir=tmp_path, progress=False).fit()
    other = Trainer(tiny_cfg(epochs=1), make_dataset(64, seed=5), test, progress=False)
    with pytest.raises(CheckpointError, match="other training images"):
        resume.load(other, tmp_path / "checkpoint.pt")


def test_full_disk_while_saving_gives_a_message_and_keeps_the_checkpoint(tiny, tmp_path, monkeypatch):
    import errno

    train, test = tiny
    trainer = Trainer(tiny_cfg(epochs=1), train, test, out_dir=tmp_path, progress=False)
    trainer.fit()
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def disk_full(path, data):  # the file write of save_checkpoint (it serialises in memory first)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.Path, "write_bytes", disk_full)
    with pytest.raises(CheckpointError, match="the disk is full.*anything saved there before is kept"):
        resume.save(trainer, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_train_size_pretrains_on_a_subset_and_searches_every_image(tiny):
    """--train-size: the network sees a seeded random subset; kNN still searches all labelled training images."""
    from instdisc_lesson.knn import evaluate_knn

    train, test = tiny
    trainer = Trainer(tiny_cfg(objective="softmax", train_size=24, epochs=1), train, test, progress=False)
    assert len(trainer.train_set) == 24 and trainer.monitor.reference is train
    assert trainer.objective.bank.shape[0] == 24  # one bank row per pretraining image
    chosen = train.random_subset(24, seed=0)
    assert torch.equal(trainer.train_set.images, chosen.images) and torch.equal(trainer.train_set.labels, chosen.labels)
    history = trainer.fit()
    direct = evaluate_knn(trainer.model, train, test, k=5, sigma=trainer.cfg.knn_sigma)
    assert history[-1]["knn_top1"] == direct["knn_top1"]  # searched all 64 training images, not the 24
    assert history[-1]["bank_knn_top1"] is None  # the bank covers the subset only: no bank kNN over all 64


def test_random_subsets_are_nested_and_checked(tiny):
    train, _ = tiny
    small, large = train.random_subset(10, seed=3), train.random_subset(40, seed=3)
    rows = {tuple(x.flatten().tolist()) for x in large.images}
    assert all(tuple(x.flatten().tolist()) in rows for x in small.images)  # 10 of the same 40
    assert not torch.equal(train.random_subset(10, seed=4).images, small.images)
    with pytest.raises(ValueError, match="choose between 1 and 64"):
        train.random_subset(65)


# (objective, settings, data-dependent shapes per step). One value read per epoch for all: the losses and the NaN
# guard together. PIC is the stated exception (pic.py): RowSparseSGD's coalesce each step, and with recent negatives
# torch.unique of the candidates too; without the correction its gradient is made dense and nothing is read.
SYNCS = [("parametric", {}, 0), ("softmax", {}, 0), ("nce", {"z_mode": "ema"}, 0), ("nce", {"z_mode": "once"}, 0),
         ("pic", {}, 1), ("pic", {"recent_k": 16}, 2), ("pic", {"correction": False}, 0)]


@pytest.mark.parametrize("objective, extra, per_step", SYNCS)
def test_a_training_step_reads_nothing_back_from_the_device(tiny, objective, extra, per_step):
    """Counted at the Python level (host_syncs.HostSyncs): value reads and data-dependent shapes. The first epoch
    (NCE's one check of Z, allocations) is left out: it is the steady state that the promise is about."""
    train, test = tiny
    trainer = Trainer(tiny_cfg(objective=objective, **extra), train, None, progress=False)
    trainer.train_epoch()
    with HostSyncs() as syncs:
        trainer.train_epoch()
    steps = len(trainer.step_losses)
    assert steps >= 4  # so one read per epoch is far below one per step
    assert (syncs.reads, syncs.shapes) == (1, per_step * steps), (syncs.reads, syncs.shapes)


def test_every_objective_is_counted():
    from instdisc_lesson.registry import OBJECTIVES

    assert {objective for objective, _, _ in SYNCS} == set(OBJECTIVES)
