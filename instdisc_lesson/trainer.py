"""One training loop for every objective: history, progress, checkpoints, resume.

Taught in notebook 06. One step of instance discrimination, whatever the objective
(``Trainer.train_step``):

    x = augment(images[idx])                 # a random view of each image in the batch
    f = model(x)                             # (B, d) unit features
    loss = objective(f, idx)                 # reads bank rows / class weights of idx
    loss.backward(); optimizer.step()        # the optimizer the objective asked for
    objective.after_step(f.detach(), idx)    # memory-bank update (no-op for the parametric softmax)

The loop talks to the objective only through the protocol of ``objectives.py``; the run's settings
are a :class:`~instdisc_lesson.recipe.TrainConfig` (``recipe.py``). Under ``torchrun`` the same loop
runs on every process, each on its shard of every batch, with the bank kept identical on all of them
(``distributed.py``, notebook 08); with one process those steps do nothing.

The data sits on the training device as uint8 and is indexed and augmented there (no DataLoader).
After every epoch the trainer recomputes kNN accuracy on the test set, appends to ``history``, and
(with ``out_dir``) writes ``checkpoint.pt`` atomically, so an interrupted run resumes from its last
complete epoch with the same result.

No harm done: every evaluation also scores the features without a test image, by leave-one-out kNN on
the training images (``knn.leave_one_out_knn``), and the untrained network is scored the same way
before training. A run ends with its last epoch's network unless the untrained one scored higher
(``Trainer.kept``): on easy data, where instance discrimination makes the features worse, it then
ends with the untrained network's weights.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from . import distributed as dist
from .augment import augment
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .config import get_device
from .data import InstanceDataset
from .knn import evaluate_knn
from .models import batchnorm_pass, build_encoder
from .objectives import build_objective
from .recipe import TrainConfig
from .samplers import SlidingWindowSampler, batches, standard_epoch
from .validate import check_k

STATE_KEYS = ("config", "n", "epoch", "model", "objective", "optimizer", "scheduler", "generator", "history", "baselines")
RESUMABLE_CHANGES = ("eval_every", "compile")  # settings a resumed run may change: they do not change what is trained
LOO_QUERIES = 2000  # training images classified by their neighbours among the others to score an epoch


class Trainer:
    """Trains ``cfg.model`` with ``cfg.objective`` on ``train`` and tracks kNN on ``test``.

    Example:
        >>> trainer = Trainer(quick_config(), train_set, test_set, out_dir="runs/quick")
        >>> history = trainer.fit()
        >>> history[-1]["knn_top1"]
    """

    def __init__(self, cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset | None = None,
                 device=None, out_dir=None, progress: bool = True):
        # The kNN monitor searches every labelled training image; with cfg.train_size the network is
        # pretrained on a random subset of them only (how features grow with more unlabelled images).
        self.reference = train
        train = train.random_subset(cfg.train_size, cfg.seed) if cfg.train_size else train
        n = len(train)
        if cfg.batch_size > n:
            raise ValueError(f"batch_size={cfg.batch_size} is larger than the dataset ({n} images): use at most {n}")
        if test is not None:
            check_k(cfg.knn_k, len(self.reference))
        self.cfg, self.train_set, self.test_set = cfg, train, test
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.world_size != self.world:
            raise ValueError(f"the config says world_size={cfg.world_size}, but this process is one of {self.world}: "
                             "start the run with torchrun --nproc_per_node set to the config's world_size")
        self.device = get_device(device)
        if cfg.sync_batchnorm and self.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm runs on GPUs only): leave it out on a CPU")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.images = train.images.to(self.device)  # (n, 3, 32, 32) uint8, resident on the device
        # The untrained network, BatchNorm statistics from one pass (a fair random-init baseline), and that
        # pass's features, from which the bank (InstDisc) or the weight rows (PIC) can start.
        self.model, initial = build_encoder(cfg, self.images, self.device)
        self.objective = build_objective(cfg, n).to(self.device)
        if cfg.bank_init == "features":
            self.objective.start_from(initial)
        self.timings = {}  # e.g. compile_warmup_seconds: the first compiled step, kept out of the epoch times
        self.net = self._parallel(self.model)
        self.net = torch.compile(self.net) if cfg.compile else self.net  # what a training step calls
        self.optimizer = self.objective.make_optimizer(list(self.model.parameters()) + list(self.objective.parameters()), cfg)
        self.sampler = SlidingWindowSampler(n, cfg.window, cfg.stride or cfg.window, cfg.seed) if cfg.window else None
        milestones = sorted({max(1, round(f * cfg.epochs)) for f in cfg.lr_milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=0.1)
        # Augmentations and noise: a stream per rank (rank 0's is the single-process one). The epoch's order
        # is drawn on rank 0 and broadcast, so every rank shards the same permutation.
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed + self.rank)
        self.epoch, self.history, self.baselines = 0, [], {}
        # The score that decides between the last epoch and the untrained network: leave-one-out kNN of up
        # to LOO_QUERIES training images (a seeded draw, the same at every evaluation) among all the others.
        n_ref = len(self.reference)
        self.loo_queries = torch.randperm(n_ref, generator=torch.Generator().manual_seed(cfg.seed))[:LOO_QUERIES]
        self.untrained = None  # {"train_loo_top1", "model"}: the untrained network, scored by baseline()
        self.last_loss, self.step_losses = float("nan"), []  # the latest step's loss; this epoch's, step by step
        self.step_hooks = []  # callables hook(trainer, idx, features), run after each step, before the bank update

    def _parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        """The network as each step calls it: itself, or under torchrun wrapped in DistributedDataParallel."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self.cfg.sync_batchnorm:  # batch statistics over the global batch instead of each rank's shard
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def embed_train(self) -> torch.Tensor:
        """Features of every training image, un-augmented, with BatchNorm in training mode (as in a step)."""
        return batchnorm_pass(self.model, self.images)

    # -- one step, one epoch ---------------------------------------------------------------------
    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        """One step on the images ``idx``: augment, forward, loss, backward, update, refresh. Returns the features."""
        x = augment(self.images[idx], self.cfg.augment, self.gen)  # (B, 3, 32, 32) in [0, 1]
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            f = self.net(x)
        f = f.float()  # (B, d); the objective runs in float32 (and in log space)
        loss = self.objective(f, idx, self.gen)
        # One scalar read per step (a GPU sync): it lets a NaN stop training before the bad update. Under
        # torchrun it is the mean over the ranks, so every rank stops at the same step.
        self.last_loss = dist.all_mean(loss.detach()).item()
        if not math.isfinite(self.last_loss):
            raise FloatingPointError(
                f"the loss became {self.last_loss} at epoch {self.epoch + 1}, step {len(self.step_losses) + 1}: "
                "training stopped before the bad step was applied. Try a smaller learning rate or a larger tau; "
                "the last complete epoch's checkpoint and history are kept."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under torchrun, DDP averages the network's gradients over the ranks here
        dist.average_gradients(self.objective.parameters())  # ... and this the objective's own (eq. 1's W, PIC's rows)
        self.optimizer.step()
        # Every rank refreshes its bank with the whole global batch, so the banks stay identical.
        f_all, idx_all = dist.all_gather_cat(f.detach()), dist.all_gather_cat(idx)
        for hook in self.step_hooks:  # e.g. notebook 02 measures the bank's staleness here
            hook(self, idx_all, f_all)
        self.objective.after_step(f_all, idx_all)
        return f.detach()

    def train_epoch(self) -> float:
        """One epoch (or, with PIC's sliding window, one window); returns the mean loss."""
        self.model.train()
        if self.sampler is None:  # the standard epoch: every instance once, in a fresh order
            order = standard_epoch(len(self.images), self.gen)
        else:  # PIC: this epoch's window of D instances
            order = self.sampler.window(self.epoch, self.gen).to(self.device)
        order = dist.broadcast(order)  # under torchrun: rank 0's order on every rank
        total, count, self.step_losses = 0.0, 0, []
        for batch in batches(order, self.cfg.batch_size, min_size=2 * self.world):
            idx = batch.tensor_split(self.world)[self.rank]  # this rank's shard of the global batch
            warmup = self.cfg.compile and "compile_warmup_seconds" not in self.timings
            start = time.perf_counter()
            self.train_step(idx)
            if warmup:
                self.timings["compile_warmup_seconds"] = time.perf_counter() - start
            total, count = total + self.last_loss * len(batch), count + len(batch)
            self.step_losses.append(round(self.last_loss, 4))  # the loss of every step (notebook 04's oscillation)
        dist.broadcast_buffers(self.model)  # under torchrun: rank 0's BatchNorm statistics everywhere
        self.scheduler.step()
        self.epoch += 1
        return total / count

    def evaluate(self) -> dict:
        """kNN on the test set: train features recomputed under the test transform (``knn_top1/5``) and,
        for bank objectives, read from the stale memory bank instead (``bank_knn_top1``)."""
        bank = self.objective.bank if self.reference is self.train_set else None  # the bank holds the subset only
        return evaluate_knn(self.model, self.reference, self.test_set, self.cfg.knn_k, self.cfg.knn_sigma, bank,
                            self.loo_queries)

    def kept(self) -> dict:
        """The network this run ends with, ``{"epoch", "train_loo_top1", "model"}``: the last epoch's, unless
        the untrained network scored higher by leave-one-out kNN on the training images; then the untrained
        one (epoch 0). A tie keeps the last epoch. The last epoch of ``fit`` is always evaluated."""
        score = self.history[-1].get("train_loo_top1") if self.history else None
        if self.untrained is not None and score is not None and score < self.untrained["train_loo_top1"]:
            return {"epoch": 0, **self.untrained}
        return {"epoch": self.epoch, "train_loo_top1": score, "model": self.model.state_dict()}

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> list[dict]:
        """Train up to ``epochs`` (default ``cfg.epochs``) total epochs; returns the history."""
        from tqdm.auto import tqdm

        target = self.cfg.epochs if epochs is None else epochs
        self.baseline()
        bar = tqdm(range(self.epoch, target), desc=f"{self.cfg.objective}/{self.cfg.model}",
                   disable=not self.progress or self.rank > 0, initial=self.epoch, total=target)
        for _ in bar:
            start = time.perf_counter()
            warmed_before = "compile_warmup_seconds" in self.timings
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trains with (the scheduler steps after it)
            try:
                loss = self.train_epoch()
            except FloatingPointError:
                self._write_history()
                raise
            seconds = time.perf_counter() - start
            if not warmed_before and "compile_warmup_seconds" in self.timings:  # this epoch paid the compilation
                seconds -= self.timings["compile_warmup_seconds"]
            entry = {"epoch": self.epoch, "loss": loss, "lr": lr, "train_seconds": seconds,
                     "step_losses": self.step_losses, **self.objective.extras()}
            if self.test_set is not None and (self.epoch % self.cfg.eval_every == 0 or self.epoch == target):
                entry.update(self.evaluate())
            self.history.append(entry)
            bar.set_postfix(loss=f"{loss:.3f}", knn=f"{entry.get('knn_top1', float('nan')):.3f}")
            if self.out_dir is not None:
                self.save(self.out_dir / "checkpoint.pt")
                self._write_history()
        return self.history

    def baseline(self) -> None:
        """kNN of the untrained network (once per run), timed: the first evaluation."""
        if self.test_set is not None and "random_init_knn_top1" not in self.baselines:
            start = time.perf_counter()
            scores = self.evaluate()
            self.timings["eval_seconds"] = time.perf_counter() - start
            self.baselines.update(random_init_knn_top1=scores["knn_top1"], random_init_knn_top5=scores["knn_top5"],
                                  random_init_train_loo_top1=scores["train_loo_top1"])
            if self.epoch == 0:  # the network the run falls back to if training makes the features worse
                weights = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
                self.untrained = {"train_loo_top1": scores["train_loo_top1"], "model": weights}

    def expected_seconds(self, epochs: int | None = None, steps: int = 3) -> dict:
        """What the remaining epochs will cost here: a few training steps are timed and then undone.

        The run's state (network, objective, optimizer, random streams) is saved before the timed steps
        and restored after them, so the run goes on exactly as if nothing had been measured. Returns
        ``{"seconds", "step_seconds", "eval_seconds", "steps", "evaluations"}``.
        """
        target = self.cfg.epochs if epochs is None else epochs
        self.baseline()
        saved = copy.deepcopy(self.state_dict())
        kept = self.last_loss, self.step_losses, self.step_hooks
        self.step_hooks = []  # the timed steps are not part of the run: no hook sees them
        batch = torch.arange(min(self.cfg.batch_size, len(self.images)), device=self.device)
        times = []
        for _ in range(steps + 1):  # the first step warms up (allocations, kernels) and is not counted
            start = time.perf_counter()
            self.train_step(batch.tensor_split(self.world)[self.rank])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - start)
        self._restore(saved)
        self.last_loss, self.step_losses, self.step_hooks = kept
        remaining = max(target - self.epoch, 0)
        step_seconds = sorted(times[1:])[len(times[1:]) // 2]
        n_steps = remaining * len(batches(torch.arange(self.sampler.D if self.sampler else len(self.images)),
                                          self.cfg.batch_size, min_size=2 * self.world))
        evaluations = 0 if self.test_set is None else sum(
            1 for e in range(self.epoch + 1, target + 1) if e % self.cfg.eval_every == 0 or e == target)
        eval_seconds = self.timings.get("eval_seconds", 0.0)
        return {"seconds": n_steps * step_seconds + evaluations * eval_seconds, "step_seconds": step_seconds,
                "eval_seconds": eval_seconds, "steps": n_steps, "evaluations": evaluations}

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The run's state. Under torchrun every rank must call it: it gathers each rank's random stream."""
        state = {
            "config": self.cfg.to_dict(), "n": len(self.train_set), "data": self.data_fingerprint(), "epoch": self.epoch,
            "model": self.model.state_dict(), "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.gen.get_state(), "history": self.history, "baselines": self.baselines,
            "untrained": self.untrained, "kept_epoch": self.kept()["epoch"],
        }
        if self.world > 1:
            mine = self.gen.get_state().to(self.device)
            gathered = dist.all_gather_cat(mine.view(1, -1)).cpu()
            state["rank_generators"] = [row.clone() for row in gathered]  # one per rank, each its own tensor
        return state

    def data_fingerprint(self) -> str:
        """SHA-256 of the training images and labels (first 16 hex digits): tells two data sets of one size apart."""
        if not hasattr(self, "_fingerprint"):
            digest = hashlib.sha256(self.train_set.images.numpy().tobytes())
            digest.update(self.train_set.labels.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def save(self, path) -> None:
        """Write the checkpoint (under torchrun: every rank calls this, rank 0 alone writes)."""
        state = self.state_dict()
        if self.rank == 0:
            save_checkpoint(path, state)
        dist.barrier()  # when save returns, every rank can read the file

    def load(self, path) -> None:
        """Restore a run saved by :meth:`save`, checked first: it must be this trainer's checkpoint, made with
        the same settings (``RESUMABLE_CHANGES`` aside) on the same training images. Nothing is changed
        when it is refused."""
        state = load_checkpoint(path)
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{path} is not a checkpoint written by this course's trainer (it lacks "
                                  f"{', '.join(missing)}): choose another --out folder, or move the file away")
        if state["n"] != len(self.train_set):
            raise CheckpointError(f"checkpoint {path} was made for {state['n']} training images, this dataset has "
                                  f"{len(self.train_set)}: use another --out folder")
        mine = self.cfg.to_dict()
        saved = {**TrainConfig().to_dict(), **state["config"]}  # settings added since it was saved: their defaults
        if saved["world_size"] != self.cfg.world_size:
            raise CheckpointError(
                f"checkpoint {path} was made by {saved['world_size']} process(es) and this run has {self.cfg.world_size}: "
                "each process's shard and random stream belong to that number. Resume with "
                + ("plain python -m instdisc_lesson (no torchrun)" if saved["world_size"] == 1 else
                   f"torchrun --nproc_per_node {saved['world_size']}") + ", or use another --out folder")
        changed = [key for key in mine if key not in RESUMABLE_CHANGES and saved.get(key) != mine[key]]
        if changed:
            raise CheckpointError(
                f"checkpoint {path} was made with {', '.join(f'{k}={saved.get(k)!r}' for k in changed)}; this run has "
                f"{', '.join(f'{k}={mine[k]!r}' for k in changed)}. Resuming would mix two different runs: "
                "repeat the checkpoint's settings, or use another --out folder")
        if state.get("data", self.data_fingerprint()) != self.data_fingerprint():
            raise CheckpointError(f"checkpoint {path} was made on other training images ({state['n']} of them, like "
                                  "these, but different): use another --out folder")
        self._restore(state)

    def _restore(self, state: dict) -> None:
        """Put back a state from :meth:`state_dict` (checked by the caller)."""
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["rank_generators"][self.rank] if self.world > 1 else state["generator"])
        self.epoch, self.history, self.baselines = state["epoch"], state["history"], state["baselines"]
        self.untrained = state.get("untrained")  # absent from checkpoints written before it was kept

    def _write_history(self) -> None:
        if self.out_dir is not None and self.rank == 0:
            text = json.dumps({"history": self.history, "baselines": self.baselines, "timings": self.timings}, indent=2)
            atomic_write(self.out_dir / "history.json", lambda tmp: Path(tmp).write_text(text))


def load_or_train(cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset, out_dir, progress: bool = True) -> Trainer:
    """Cache-or-train: resume (or just load) the run in ``out_dir`` if its config matches, else train it there."""
    trainer = Trainer(cfg, train, test, out_dir=out_dir, progress=progress)
    ckpt = Path(out_dir) / "checkpoint.pt"
    if ckpt.exists():
        try:
            trainer.load(ckpt)  # the cached run, if it is this config's on this data
        except CheckpointError:
            pass  # another run, or unreadable: this folder is a cache, so train afresh and replace it
    trainer.fit()
    return trainer
