"""One training loop for every objective. Taught in notebook 06.

One step of instance discrimination, whatever the objective (``Trainer.train_step``):

    x = augment(images[idx])                 # a random view of each image in the batch
    f = model(x)                             # (B, d) features
    loss = objective(f, idx)                 # reads bank rows / class weights of idx
    loss.backward(); optimizer.step()        # the optimizer the objective asked for
    objective.after_step(f.detach(), idx)    # memory-bank update (no-op for the parametric softmax)

The loop talks to the objective only through the protocol of ``objectives.py`` (which also orders each
epoch's instances: a permutation, or PIC's sliding window); the run's settings are a
:class:`~instdisc_lesson.recipe.TrainConfig`. Everything else is a collaborator called at fixed points:

- every epoch: kNN on the test images and the kept-network rule (``monitor.py``), then the checkpoint
  (``resume.py``: an interrupted run resumes from its last complete epoch with the same result);
- before the run: its cost on this machine (``cost.py``) and the fastest precision (``precision.py``);
- under ``torchrun``: the gathering of every rank's batch before ``after_step`` (``distributed.py``,
  notebook 08), so the bank stays identical on all ranks; with one process it does nothing.

The data sits on the training device as uint8 and is indexed and augmented there (no DataLoader). No step
reads a value back from the device: the losses are read once per epoch (see ``train_epoch``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from . import cost, distributed as dist, resume
from .augment import augment
from .checkpoint import CheckpointError
from .config import get_device
from .data import InstanceDataset
from .models import batchnorm_pass, build_encoder
from .monitor import Monitor
from .precision import autocast, layout, resolve
from .recipe import TrainConfig, deviations
from .registry import build_objective
from .samplers import batches
from .validate import check_k, trusted


class Trainer:
    """Trains ``cfg.model`` with ``cfg.objective`` on ``train`` and tracks kNN on ``test``.

    Example:
        >>> trainer = Trainer(quick_config(), train_set, test_set, out_dir="runs/quick")
        >>> history = trainer.fit()
        >>> trainer.summary()["knn_top1"]
    """

    def __init__(self, cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset | None = None,
                 device=None, out_dir=None, progress: bool = True):
        # kNN searches every labelled training image; with cfg.train_size the network is pretrained on a
        # random subset of them only (how features grow with more unlabelled images).
        reference, train = train, train.random_subset(cfg.train_size, cfg.seed) if cfg.train_size else train
        if cfg.batch_size > len(train):
            raise ValueError(f"batch_size={cfg.batch_size} is larger than the dataset ({len(train)} images): use at most {len(train)}")
        if test is not None:
            check_k(cfg.knn_k, len(reference))
        self.rank, self.world, self.device = dist.rank(), dist.world_size(), get_device(device)
        if cfg.world_size != self.world:
            raise ValueError(f"the config says world_size={cfg.world_size}, but this process is one of {self.world}: "
                             "start the run with torchrun --nproc_per_node set to the config's world_size")
        if cfg.sync_batchnorm and self.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm runs on GPUs only): leave it out on a CPU")
        self.requested, self.train_set, self.test_set = cfg, train, test  # requested: as asked ("auto" unresolved)
        self.out_dir, self.progress = (Path(out_dir) if out_dir is not None else None), progress
        self.images = train.images.to(self.device)  # (n, 3, 32, 32) uint8, resident on the device
        # The untrained network with BatchNorm statistics from one pass, and that pass's features, from which the
        # bank (InstDisc) or the weight rows (PIC) can start.
        model, initial = build_encoder(cfg, self.images, self.device)
        self.objective = build_objective(cfg, len(train)).to(self.device)
        if cfg.bank_init == "features":
            self.objective.start_from(initial)
        # Augmentations and noise: a stream per rank. The epoch's order is drawn on rank 0 and broadcast.
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed + self.rank)
        sample = augment(self.images[:cfg.batch_size], cfg.augment, torch.Generator(self.device).manual_seed(cfg.seed))
        self.cfg, precision_seconds = resolve(cfg, model, sample, self.device, dist.broadcast)
        self.timings = {"precision_seconds": precision_seconds} if precision_seconds else {}
        self.model, self.net = dist.wrap(model, self.device, cfg.sync_batchnorm)  # net: what a step calls (DDP)
        self.net = torch.compile(self.net) if cfg.compile else self.net
        self.optimizer = self.objective.make_optimizer(list(self.model.parameters()) + list(self.objective.parameters()), cfg)
        if self.world > 1:  # DDP averages the network's gradients; this hook averages the objective's own
            self.optimizer.register_step_pre_hook(lambda *_: dist.average_gradients(self.objective.parameters()))
        self.scheduler = self._scheduler()
        self.monitor = Monitor(reference, test, cfg.knn_k, cfg.knn_sigma, cfg.seed)
        self.epoch, self.history, self.step_losses, self.last_loss = 0, [], [], float("nan")
        self.step_hooks = []  # callables hook(trainer, idx, features), run after each step, before the bank update
        self.step_loss = None  # the current step's loss (a tensor), for the hooks

    def _scheduler(self):
        """lr x 0.1 at the recipe's fractions of the run (the paper: epochs 120 and 160 of 200)."""
        milestones = sorted({max(1, round(f * self.cfg.epochs)) for f in self.cfg.lr_milestones})
        return torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=0.1)

    def set_epochs(self, epochs: int, eval_every: int | None = None) -> None:
        """Before the first epoch: train ``epochs`` instead (the lr milestones follow), kNN every ``eval_every``."""
        if self.epoch:
            raise ValueError(f"set_epochs after {self.epoch} epochs: the run's schedule is fixed once it has started")
        self.cfg = dataclasses.replace(self.cfg, epochs=epochs, eval_every=eval_every or self.cfg.eval_every)
        self.requested = dataclasses.replace(self.requested, epochs=epochs, eval_every=self.cfg.eval_every)
        self.scheduler = self._scheduler()

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
        """The step hooks, then the objective's refresh, both on the whole global batch (under torchrun every
        rank's features, all-gathered). A hook finds the step's loss in ``trainer.step_loss`` (a tensor)."""
        self.step_loss = loss
        f, idx = dist.all_gather_cat(f), dist.all_gather_cat(idx)
        for hook in self.step_hooks:  # e.g. notebook 02 measures the bank's staleness here
            hook(self, idx, f)
        self.objective.after_step(f, idx)

    def epoch_order(self) -> torch.Tensor:
        """This epoch's instances in order, as the objective orders them; under torchrun rank 0's on every rank."""
        return dist.broadcast(self.objective.epoch_order(len(self.images), self.epoch, self.gen).to(self.device))

    def epoch_size(self) -> int:
        return self.objective.epoch_size(len(self.images))

    def train_epoch(self) -> float:
        """One epoch; returns the mean loss.

        The epoch's indices are valid by construction, so the steps run under ``validate.trusted()`` (no index
        check reads a tensor back). The losses stay on the device and are read once, at the end: that read is
        also the NaN guard, so a non-finite loss anywhere in the epoch stops the run before the epoch's
        checkpoint is written (and puts the trainer back to the last one: the steps were already applied).
        """
        self.model.train()
        losses, sizes = [], []
        with trusted():
            for batch in batches(self.epoch_order(), self.cfg.batch_size, min_size=2 * self.world):
                start = time.perf_counter()
                losses.append(self.train_step(batch.tensor_split(self.world)[self.rank]))  # this rank's shard
                sizes.append(len(batch))
                if self.cfg.compile and "compile_warmup_seconds" not in self.timings:
                    self.timings["compile_warmup_seconds"] = time.perf_counter() - start
        step_losses = dist.all_mean(torch.stack(losses)).tolist()  # the epoch's one host read
        bad = next((i for i, value in enumerate(step_losses) if not math.isfinite(value)), None)
        if bad is not None:
            resume.back_to_last(self)
            raise FloatingPointError(
                f"the loss became {step_losses[bad]} at epoch {self.epoch + 1}, step {bad + 1}: training stopped before "
                "this epoch was saved. Try a smaller learning rate or a larger tau; the last complete epoch's "
                "checkpoint and history are kept.")
        self.step_losses, self.last_loss = [round(value, 4) for value in step_losses], step_losses[-1]
        dist.broadcast_buffers(self.model)  # under torchrun: rank 0's BatchNorm statistics everywhere
        self.scheduler.step()
        self.epoch += 1
        return sum(value * size for value, size in zip(step_losses, sizes)) / sum(sizes)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> list[dict]:
        """Train up to ``epochs`` (default ``cfg.epochs``) total epochs; returns the history."""
        from tqdm.auto import tqdm

        target = self.cfg.epochs if epochs is None else epochs
        self.baseline()
        bar = tqdm(range(self.epoch, target), desc=f"{self.cfg.objective}/{self.cfg.model}",
                   disable=not self.progress or self.rank > 0, initial=self.epoch, total=target)
        for _ in bar:
            start, warm = time.perf_counter(), "compile_warmup_seconds" in self.timings
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trains with (the scheduler steps after it)
            try:
                loss = self.train_epoch()
            except FloatingPointError:
                resume.write_history(self)
                raise
            seconds = time.perf_counter() - start - (0 if warm else self.timings.get("compile_warmup_seconds", 0))
            entry = {"epoch": self.epoch, "loss": loss, "lr": lr, "train_seconds": seconds,
                     "step_losses": self.step_losses, **self.objective.extras()}
            if self.test_set is not None and (self.epoch % self.cfg.eval_every == 0 or self.epoch == target):
                entry.update(self.evaluate())
            self.history.append(entry)
            bar.set_postfix(loss=f"{loss:.3f}", **last_knn(self.history, self.baselines))
            if self.out_dir is not None:
                self.save(self.out_dir / "checkpoint.pt")
                resume.write_history(self)
        return self.history

    # -- the collaborators, as the notebooks and the CLI call them --------------------------------
    def evaluate(self) -> dict:
        """kNN on the test set (``monitor.py``); with a memory bank of every image also ``bank_knn_top1``."""
        return self.monitor.evaluate(self.model, self.objective.bank if not self.cfg.train_size else None)

    def baseline(self) -> None:
        """kNN of the untrained network, once per run (``Monitor.baseline``)."""
        self.monitor.baseline(self.model, self.epoch, self.evaluate)

    def kept(self) -> dict:
        """The network this run ends with: the last epoch's, or the untrained one if it scored higher (``monitor.py``)."""
        return self.monitor.kept(self.model, self.epoch, self.history)

    @property
    def baselines(self) -> dict:
        return self.monitor.baselines

    def embed_train(self) -> torch.Tensor:
        """Features of every training image, un-augmented, with BatchNorm in training mode (as in a step)."""
        return batchnorm_pass(self.model, self.images)

    def expected_seconds(self, epochs: int | None = None, steps: int = 3) -> dict:
        """What the remaining epochs will cost here, timed and undone (``cost.expected_seconds``)."""
        return cost.expected_seconds(self, epochs, steps)

    def summary(self) -> dict:
        """The run in one dict, for notebooks and the CLI alike: the last kNN, the untrained baselines, the kept
        network, what the run saw, its precision and its departures from the paper, the history and the config."""
        last, kept = (self.history[-1] if self.history else {}), self.kept()
        top1 = last.get("knn_top1")
        return {"knn_top1": top1, "knn_top5": last.get("knn_top5"), "kept_epoch": kept["epoch"],
                "kept_knn_top1": self.baselines.get("random_init_knn_top1") if kept["epoch"] == 0 else top1,
                "kept_train_loo_top1": kept["train_loo_top1"], **self.baselines,
                "train_images": len(self.train_set), "knn_reference_images": len(self.monitor.reference),
                "test_images": len(self.test_set) if self.test_set is not None else 0,
                "precision": self.cfg.precision, "memory_format": self.cfg.memory_format,
                "deviations": {k: asdict(v) if is_dataclass(v) else v for k, (v, _) in deviations(self.cfg).items()},
                "history": self.history, "config": self.cfg.to_dict()}

    def state_dict(self) -> dict:
        return resume.state_of(self)

    def save(self, path) -> None:
        resume.save(self, path)

    def load(self, path) -> None:
        """Resume the run in ``path``, checked to be this run's (``resume.load``)."""
        resume.load(self, path)

    def data_fingerprint(self) -> str:
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = resume.fingerprint(self.train_set)
        return self._fingerprint


def last_knn(history: list[dict], baselines: dict) -> dict:
    """The progress bar's kNN: this epoch's, else the last one measured with its epoch, else the untrained network's;
    ``{}`` before any (a run without test images)."""
    for entry in reversed(history):
        if "knn_top1" in entry:
            latest = entry is history[-1]
            return {"knn": f"{entry['knn_top1']:.3f}" + ("" if latest else f" (epoch {entry['epoch']})")}
    if "random_init_knn_top1" in baselines:
        return {"knn": f"{baselines['random_init_knn_top1']:.3f} (untrained)"}
    return {}


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
