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
import dataclasses
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
from .registry import build_objective
from .recipe import TrainConfig
from .precision import autocast, choose, layout, measure, set_layout
from .samplers import SlidingWindowSampler, batches, standard_epoch
from .validate import check_k, check_precision_usable, trusted

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
        self.requested = cfg  # as asked: "auto" precision or layout is resolved below, by timing
        self.cfg = cfg = self._resolve_precision(cfg)
        self.net = self._parallel(self.model)
        self.net = torch.compile(self.net) if cfg.compile else self.net  # what a training step calls
        self.optimizer = self.objective.make_optimizer(list(self.model.parameters()) + list(self.objective.parameters()), cfg)
        if self.world > 1:  # DDP averages the network's gradients; this hook averages the objective's own (eq. 1's W, PIC's rows)
            self.optimizer.register_step_pre_hook(lambda *_: dist.average_gradients(self.objective.parameters()))
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
        self.last_loss, self.step_losses = float("nan"), []  # the last epoch's final step loss; its every step's
        self.step_hooks = []  # callables hook(trainer, idx, features), run after each step, before the bank update
        self.step_loss = None  # the current step's loss (a tensor), for the hooks

    def _resolve_precision(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with "auto" precision or memory layout replaced by the fastest here, timed on this run's own
        network and a batch of its images (``precision.measure``; the network is left as it was, and the run's
        random stream is not used). Under torchrun rank 0 chooses for all. The layout is then applied."""
        check_precision_usable(self.device, cfg.precision)
        if "auto" in (cfg.precision, cfg.memory_format):
            gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
            sample = augment(self.images[:min(cfg.batch_size, len(self.images))], cfg.augment, gen)
            timings = measure(self.model, sample, self.device)
            self.timings["precision_seconds"] = {f"{p}/{m}": t for (p, m), t in timings.items()}
            modes = [(p, m) for p in ("fp32", "bf16") for m in ("contiguous", "channels_last")]
            pick = torch.tensor(modes.index(choose(timings, cfg.precision, cfg.memory_format)), device=self.device)
            precision, memory_format = modes[int(dist.broadcast(pick))]  # once per run
            cfg = dataclasses.replace(cfg, precision=precision, memory_format=memory_format)
        set_layout(self.model, cfg.memory_format)
        return cfg

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
        """One step on the images ``idx``; returns the loss as a tensor (reading it would be a host sync)."""
        x = self.view(idx)                                     # a random view of each image, (B, 3, 32, 32)
        with autocast(self.device, self.cfg.precision):
            f = self.net(x).float()                            # (B, d) features; the objective runs in float32
        loss = self.objective(f, idx, self.gen)                # reads bank rows / class weights of idx
        self.optimizer.zero_grad(set_to_none=True); loss.backward(); self.optimizer.step()
        self.after_step(f.detach(), idx, loss.detach())        # the memory bank, Z, PIC's queue; step hooks
        return loss.detach()

    def view(self, idx: torch.Tensor) -> torch.Tensor:
        """The augmented batch, in the memory layout the network runs fastest in (``precision.py``)."""
        return layout(augment(self.images[idx], self.cfg.augment, self.gen), self.cfg.memory_format)

    def after_step(self, f: torch.Tensor, idx: torch.Tensor, loss: torch.Tensor) -> None:
        """The step hooks, then the objective's refresh. Under torchrun both see the whole global batch (every
        rank's features, all-gathered), so every rank's bank stays identical (``distributed.py``). A hook finds
        the step's loss in ``trainer.step_loss``, a tensor (``float()`` of it is a host sync: the hook's choice)."""
        self.step_loss = loss
        f, idx = dist.all_gather_cat(f), dist.all_gather_cat(idx)
        for hook in self.step_hooks:  # e.g. notebook 02 measures the bank's staleness here
            hook(self, idx, f)
        self.objective.after_step(f, idx)

    def epoch_order(self) -> torch.Tensor:
        """The instances of this epoch, in order: a fresh permutation of all n, or PIC's window of D.
        Under torchrun, rank 0's order on every rank."""
        if self.sampler is None:
            order = standard_epoch(len(self.images), self.gen)
        else:
            order = self.sampler.window(self.epoch, self.gen).to(self.device)
        return dist.broadcast(order)

    def train_epoch(self) -> float:
        """One epoch (or, with PIC's sliding window, one window); returns the mean loss.

        No step reads a value back from the device: the epoch's indices are valid by construction, so the
        steps run under ``validate.trusted()`` (no index or NaN check reads a tensor back); the losses stay
        on the device and are read once, at the end of the epoch. That read is also the NaN guard: a non-finite loss anywhere in the epoch stops the run
        before the epoch's checkpoint is written, so the last complete epoch's checkpoint stays intact.
        """
        self.model.train()
        order = self.epoch_order()  # a permutation of range(n), or a window of one: valid indices by construction
        losses, sizes = [], []
        with trusted():
            for batch in batches(order, self.cfg.batch_size, min_size=2 * self.world):
                idx = batch.tensor_split(self.world)[self.rank]  # this rank's shard of the global batch
                warmup = self.cfg.compile and "compile_warmup_seconds" not in self.timings
                start = time.perf_counter()
                losses.append(self.train_step(idx))
                sizes.append(len(batch))
                if warmup:
                    self.timings["compile_warmup_seconds"] = time.perf_counter() - start
        # The epoch's one host read: every step's loss (under torchrun, the mean over the ranks).
        step_losses = dist.all_mean(torch.stack(losses)).tolist()
        bad = next((i for i, value in enumerate(step_losses) if not math.isfinite(value)), None)
        if bad is not None:
            self._back_to_last_checkpoint()
            raise FloatingPointError(
                f"the loss became {step_losses[bad]} at epoch {self.epoch + 1}, step {bad + 1}: training stopped before "
                "this epoch was saved. Try a smaller learning rate or a larger tau; the last complete epoch's "
                "checkpoint and history are kept."
            )
        self.step_losses = [round(value, 4) for value in step_losses]  # every step's loss (notebook 04's oscillation)
        self.last_loss = step_losses[-1]
        dist.broadcast_buffers(self.model)  # under torchrun: rank 0's BatchNorm statistics everywhere
        self.scheduler.step()
        self.epoch += 1
        return sum(value * size for value, size in zip(step_losses, sizes)) / sum(sizes)

    def _back_to_last_checkpoint(self) -> None:
        """After a non-finite epoch: the trainer's state back to the last complete epoch's checkpoint, if it wrote
        one (the steps since then were applied before the loss was read: see ``train_epoch``)."""
        path = self.out_dir / "checkpoint.pt" if self.out_dir is not None else None
        if path is not None and path.exists():
            self._restore(load_checkpoint(path))

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
        kept = self.step_hooks
        self.step_hooks = []  # the timed steps are not part of the run: no hook sees them
        batch = torch.arange(min(self.cfg.batch_size, len(self.images)), device=self.device)
        times = []
        for _ in range(steps + 1):  # the first step warms up (allocations, kernels) and is not counted
            start = time.perf_counter()
            with trusted():
                float(self.train_step(batch.tensor_split(self.world)[self.rank]))  # waits for the step to finish
            times.append(time.perf_counter() - start)
        self._restore(saved)
        self.step_hooks = kept
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
        for key in ("precision", "memory_format"):  # asked for "auto": the run goes on as it was chosen when it started
            if getattr(self.requested, key) == "auto":
                mine[key] = saved[key]
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
        if (mine["precision"], mine["memory_format"]) != (self.cfg.precision, self.cfg.memory_format):
            self.cfg = dataclasses.replace(self.cfg, precision=mine["precision"], memory_format=mine["memory_format"])
            set_layout(self.model, self.cfg.memory_format)
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
