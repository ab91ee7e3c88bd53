"""torchrun, checked on CPU with gloo and two processes: the banks (and PIC's rows and queue) stay
bit-identical on both ranks, two ranks with half a batch each update like one process with all of it,
Z is one number, resume keeps the world size, and the torchrun command of notebook 08 learns."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import make_dataset
from instdisc_lesson import distributed as D, resume
from instdisc_lesson.memory_bank import MemoryBank
from instdisc_lesson.parametric import ParametricSoftmax
from instdisc_lesson.pic import PIC
from instdisc_lesson.recipe import quick_config
from instdisc_lesson.checkpoint import CheckpointError
from instdisc_lesson.trainer import Trainer

N, DIM = 40, 8


def global_batch(seed=0, B=16):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(N, generator=g)[:B]
    return idx, torch.nn.functional.normalize(torch.randn(B, DIM, generator=g), dim=1)


def my_shard(t):
    return t.tensor_split(D.world_size())[D.rank()]


# -- workers: run on every rank (and, with one process, as the reference) ---------------------------
def bank_after_update():
    idx, f = global_batch()
    bank = MemoryBank(N, DIM, 0.5, torch.Generator().manual_seed(1))
    bank.update(D.all_gather_cat(my_shard(idx)), D.all_gather_cat(my_shard(f)))  # what Trainer.train_step does
    return bank.bank


def rows_after_step(kind):
    idx, f = global_batch()
    torch.manual_seed(2)
    objective = PIC(N, DIM, recent_k=0) if kind == "pic" else ParametricSoftmax(N, DIM)
    recipe = SimpleNamespace(lr=0.5, momentum=0.9, weight_decay=5e-4)
    optimizer = objective.make_optimizer(objective.parameters(), recipe)
    for _ in range(2):  # two steps, so the momentum buffers take part
        objective(my_shard(f), my_shard(idx)).backward()
        D.average_gradients(objective.parameters())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return next(objective.parameters()).detach()


def log_Z_of_scores():
    scores = torch.randn(16, 9, generator=torch.Generator().manual_seed(3)) * 5
    lse, count = D.all_logsumexp(my_shard(scores))
    return lse, count


def train_ranks(objective, extra):
    train, test = make_dataset(64), make_dataset(32, seed=1)
    cfg = quick_config(objective=objective, epochs=2, batch_size=16, knn_k=5, seed=0, world_size=D.world_size(),
                       **({"nce_m": 8} if objective == "nce" else {}), **extra)
    trainer = Trainer(cfg, train, test, progress=False)
    trainer.fit()
    return {"model": trainer.model.state_dict(), "objective": trainer.objective.state_dict(),
            "history": [(h["loss"], h["knn_top1"]) for h in trainer.history]}


def syncs_of_a_step(objective, extra):
    """The reads and data-dependent shapes of rank's second epoch (host_syncs.HostSyncs), and its steps."""
    from host_syncs import HostSyncs

    train = make_dataset(64)
    cfg = quick_config(objective=objective, epochs=2, batch_size=16, knn_k=5, seed=0, world_size=D.world_size(), **extra)
    trainer = Trainer(cfg, train, None, progress=False)
    trainer.train_epoch()
    with HostSyncs() as syncs:
        trainer.train_epoch()
    return len(trainer.step_losses), syncs.reads, syncs.shapes


def resumed_vs_straight(folder):
    train, test = make_dataset(64), make_dataset(32, seed=1)
    cfg = quick_config(objective="nce", epochs=2, batch_size=16, knn_k=5, nce_m=8, seed=0, world_size=D.world_size())
    straight = Trainer(cfg, train, test, progress=False)
    straight.fit()
    Trainer(cfg, train, test, out_dir=folder, progress=False).fit(epochs=1)  # "interrupted" after epoch 1
    resumed = Trainer(cfg, train, test, out_dir=folder, progress=False)
    resume.load(resumed, os.path.join(folder, "checkpoint.pt"))
    resumed.fit()
    return straight.objective.state_dict(), resumed.objective.state_dict()


# -- the tests -------------------------------------------------------------------------------------
def test_two_ranks_with_half_a_batch_update_the_bank_like_one_process_with_all():
    one = bank_after_update()
    two = D.spawn(bank_after_update, 2)
    assert torch.equal(two[0], two[1])  # bit-identical on both ranks
    assert torch.equal(two[0], one)  # and the same update as one process with the whole batch


@pytest.mark.parametrize("kind", ["pic", "parametric"])
def test_averaged_gradients_step_the_rows_like_one_process(kind):
    one = rows_after_step(kind)
    two = D.spawn(rows_after_step, 2, kind)
    assert torch.equal(two[0], two[1])
    # Mean of two half-batch means = the full-batch mean; only the summation order differs.
    torch.testing.assert_close(two[0], one, rtol=0, atol=1e-6)



def test_z_comes_from_every_rank_s_scores():
    one_lse, one_count = log_Z_of_scores()
    (lse0, count0), (lse1, count1) = D.spawn(log_Z_of_scores, 2)
    assert count0 == count1 == one_count == 16 * 9
    assert torch.equal(lse0, lse1)
    torch.testing.assert_close(lse0, one_lse, rtol=0, atol=1e-5)


@pytest.mark.parametrize("objective, extra", [
    ("softmax", {}), ("nce", {}), ("parametric", {}),
    ("pic", {"window": 32, "stride": 16, "recent_k": 24}),
])
def test_every_objective_keeps_the_ranks_identical(objective, extra):
    rank0, rank1 = D.spawn(train_ranks, 2, objective, extra)
    for part in ("model", "objective"):
        for key, value in rank0[part].items():
            assert torch.equal(value, rank1[part][key]), f"{part}.{key} differs between the ranks"
    assert rank0["history"] == rank1["history"]


# Under two processes the shard sizes come from the split on the host: the all-gathers read nothing back. PIC's
# stated exception grows: its ranks' sparse rows are gathered with each rank's count read back (rows and values:
# 2 gathers x 2 ranks = 4 reads a step) and coalesced twice more (the gathered gradient), besides RowSparseSGD's.
@pytest.mark.parametrize("objective, extra, reads_per_step, shapes_per_step", [
    ("parametric", {}, 0, 0), ("softmax", {}, 0, 0), ("nce", {"nce_m": 8}, 0, 0), ("pic", {}, 4, 3)])
def test_a_step_under_two_processes_reads_nothing_back_but_pic_s_stated_syncs(objective, extra, reads_per_step,
                                                                             shapes_per_step):
    for steps, reads, shapes in D.spawn(syncs_of_a_step, 2, objective, extra):
        assert steps >= 4 and (reads, shapes) == (1 + reads_per_step * steps, shapes_per_step * steps), (steps, reads, shapes)


def test_resume_under_torchrun_equals_the_uninterrupted_run(tmp_path):
    (straight, resumed), _ = D.spawn(resumed_vs_straight, 2, str(tmp_path))
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_a_checkpoint_of_another_world_size_is_refused_with_the_command_to_use(tmp_path):
    train, test = make_dataset(64), make_dataset(32, seed=1)
    cfg = quick_config(objective="nce", epochs=1, batch_size=16, knn_k=5, nce_m=8)
    trainer = Trainer(cfg, train, test, progress=False)
    state = trainer.state_dict()
    state["config"]["world_size"] = 2
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="made by 2 process.*torchrun --nproc_per_node 2"):
        resume.load(trainer, tmp_path / "checkpoint.pt")
    del state["config"]["world_size"]  # a checkpoint from before world_size existed: one process
    torch.save(state, tmp_path / "checkpoint.pt")
    resume.load(trainer, tmp_path / "checkpoint.pt")


def test_batch_too_small_for_the_ranks_is_explained():
    with pytest.raises(ValueError, match="too small for 4 processes.*--batch-size 8"):
        quick_config(batch_size=6, world_size=4)


def test_torchrun_command_learns_and_rank_0_alone_writes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "instdisc_lesson", "train", "--data", "quick", "--objective", "nce", "--epochs", "3", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "INSTDISC_QUICK": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "metrics.json", "report.png"]  # the lock removed; rank 0 drew the report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["world_size"] == 2 and len(metrics["history"]) == 3
    # Learns: 3 epochs on the quick set gave 85.0, 83.0, 83.3 % against 54.5, 47.5, 52.3 % untrained (seeds 0-2).
    assert metrics["knn_top1"] > metrics["random_init_knn_top1"] + 0.10
    assert done.stdout.count("kNN top-1") == 1  # one report, from rank 0


def test_sync_bn_without_a_gpu_is_explained():
    train, test = make_dataset(64), make_dataset(32, seed=1)
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
        Trainer(quick_config(sync_batchnorm=True, batch_size=16, knn_k=5), train, test, device="cpu", progress=False)
