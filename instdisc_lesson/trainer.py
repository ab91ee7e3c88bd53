"""One training loop for every objective. Taught in notebook 06.

One step of instance discrimination, whatever the objective (``Trainer.train_step``):

    x = augment(images[idx])                 # a random view of each image in the batch
    f = model(x)                             # (B, d) features
    loss = objective(f, idx)                 # reads bank rows / class weights of idx
    loss.backward(); optimizer.step()        # the optimizer the objective asked for
    objective.after_step(f.detach(), idx)    # memory-bank update (no-op for the parametric softmax)

The loop talks to the objective only through the protocol of ``objectives.py`` (which also orders each epoch's
instances). It trains exactly the frozen :class:`~instdisc_lesson.recipe.TrainConfig` it is given, resolved
before (``resolve.py``: "auto" precision, the epochs a time cap allows), and owns its state (``state_dict``,
``load_state_dict``). Every epoch: kNN and the kept-network rule (``monitor.py``), then the checkpoint
(``resume.py``). Under ``torchrun`` every rank's batch is gathered before ``after_step`` (``distributed.py``,
notebook 08), so the bank stays identical on all ranks. The data sits on the device as uint8, indexed and
augmented there. No step of the parametric, softmax or NCE objective reads a value back from the device (the
losses are read once per epoch, ``train_epoch``); PIC is the one exception, and says why (``pic.py``).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from . import distributed as dist, resume
from .augment import augment
from .config import get_device
from .data import InstanceDataset
from .models import build_encoder
from .monitor import Monitor, last_knn
from .precision import autocast, layout, set_layout
from .recipe import TrainConfig, lr_drops
from .registry import build_objective
from .samplers import batches
from .validate import check_run, trusted
from .resolve import load_or_train  # noqa: F401,E402 - the notebooks' cache-or-train, at the edge with the config


class Trainer:
    """Trains ``cfg.model`` with ``cfg.objective`` on ``train`` and tracks kNN on ``test``.

    Example: ``history = Trainer(quick_config(), train_set, test_set, out_dir="runs/quick").fit()``
    """

    def __init__(self, cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset | None = None,
                 device=None, out_dir=None, progress: bool = True, timings: dict | None = None):
        # kNN searches every labelled training image; with cfg.train_size the network is pretrained on a
        # random subset of them only (how features grow with more unlabelled images).
        reference, train = train, train.random_subset(cfg.train_size, cfg.seed) if cfg.train_size else train
        self.rank, self.world, self.device = dist.rank(), dist.world_size(), get_device(device)
        check_run(cfg, len(train), len(reference), test is not None, self.world, self.device)
        self.cfg, self.train_set, self.test_set, self.fingerprint = cfg, train, test, resume.fingerprint(train)
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
        self.model, self.net = dist.wrap(set_layout(model, cfg.memory_format), self.device, cfg.sync_batchnorm)
        self.net = torch.compile(self.net) if cfg.compile else self.net  # net: what a step calls (DDP, compiled)
        self.optimizer = self.objective.make_optimizer(list(self.model.parameters()) + list(self.objective.parameters()), cfg)
        if self.world > 1:  # DDP averages the network's gradients; this hook averages the objective's own
            self.optimizer.register_step_pre_hook(lambda *_: dist.average_gradients(self.objective.parameters()))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, lr_drops(cfg.epochs, cfg.lr_milestones), 0.1)
        self.monitor = Monitor(reference, test, cfg.knn_k, cfg.knn_sigma, cfg.seed)
        self.epoch, self.history, self.step_losses, self.timings = 0, [], [], dict(timings or {})
        self.step_hooks = []  # callables hook(trainer, idx, features), run after each step, before the bank update
        self.step_loss, self.shard_sizes = None, [None]  # the current step's loss (for the hooks), its shards' sizes

    # -- one step, one epoch ---------------------------------------------------------------------
    def step(self, batch: torch.Tensor) -> torch.Tensor:
        """One step on the global batch ``batch``: this rank trains its shard (the shards' sizes are known here,
        so gathering them needs no read from the device); returns the loss as a tensor."""
        shards = batch.tensor_split(self.world)
        self.shard_sizes = [len(shard) for shard in shards]
        return self.train_step(shards[self.rank])

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
        f, idx = dist.all_gather_cat(f, self.shard_sizes), dist.all_gather_cat(idx, self.shard_sizes)
        for hook in self.step_hooks:  # e.g. notebook 02 measures the bank's staleness here
            hook(self, idx, f)
        self.objective.after_step(f, idx)

    def epoch_order(self) -> torch.Tensor:
        """This epoch's instances in order, as the objective orders them; under torchrun rank 0's on every rank."""
        return dist.broadcast(self.objective.epoch_order(len(self.images), self.epoch, self.gen).to(self.device))

    def train_epoch(self) -> float:
        """One epoch; returns the mean loss. The indices are valid by construction, so the steps run under
        ``validate.trusted()`` (no index check reads a tensor back). The losses are read once, at the end: that read
        is also the NaN guard, which stops the run before the epoch's checkpoint and goes back to the last one."""
        self.model.train()
        losses, sizes = [], []
        with trusted():
            for batch in batches(self.epoch_order(), self.cfg.batch_size, min_size=2 * self.world):
                start = time.perf_counter()
                losses.append(self.step(batch))
                sizes.append(len(batch))
                if self.cfg.compile and "compile_warmup_seconds" not in self.timings:
                    self.timings["compile_warmup_seconds"] = time.perf_counter() - start
        step_losses = dist.all_mean(torch.stack(losses)).tolist()  # the epoch's one host read
        bad = next((i for i, value in enumerate(step_losses) if not math.isfinite(value)), None)
        if bad is not None:
            last = resume.last_state(self.out_dir)
            if last is not None:
                self.load_state_dict(last)
            raise FloatingPointError(
                f"the loss became {step_losses[bad]} at epoch {self.epoch + 1}, step {bad + 1}: training stopped before "
                "this epoch was saved. Try a smaller learning rate or a larger tau; the last complete epoch's "
                "checkpoint and history are kept.")
        self.step_losses = [round(value, 4) for value in step_losses]
        dist.broadcast_buffers(self.model)  # under torchrun: rank 0's BatchNorm statistics everywhere
        self.scheduler.step()
        self.epoch += 1
        return sum(value * size for value, size in zip(step_losses, sizes)) / sum(sizes)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> list[dict]:
        """Train up to ``epochs`` (default ``cfg.epochs``) total epochs; returns the history."""
        from tqdm.auto import tqdm

        target = self.cfg.epochs if epochs is None else epochs
        self.monitor.baseline(self.model, self.epoch, self.evaluate)  # the untrained network's kNN, once per run
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
            bar.set_postfix(loss=f"{loss:.3f}", **last_knn(self.history, self.monitor.baselines))
            if self.out_dir is not None:
                resume.save(self, self.out_dir / "checkpoint.pt")
                resume.write_history(self)
        return self.history

    def evaluate(self) -> dict:
        """kNN on the test set (``monitor.py``); with a memory bank of every image also ``bank_knn_top1``."""
        return self.monitor.evaluate(self.model, self.objective.bank if not self.cfg.train_size else None)

    # -- the run's state, for checkpoints (``resume.py``) and the cost measurement (``cost.py``) ---------
    def state_dict(self) -> dict:
        """Everything a run needs to go on as if never stopped. Under torchrun every rank must call it: it gathers
        each rank's random stream."""
        state = {"config": self.cfg.to_dict(), "n": len(self.train_set), "data": self.fingerprint, "epoch": self.epoch,
                 "model": self.model.state_dict(), "objective": self.objective.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "generator": self.gen.get_state(), "history": self.history, **self.monitor.state_dict(),
                 "kept_epoch": self.monitor.kept(self.model, self.epoch, self.history)["epoch"]}
        if self.world > 1:
            mine = self.gen.get_state().to(self.device).view(1, -1)
            state["rank_generators"] = [row.clone() for row in dist.all_gather_cat(mine, [1] * self.world).cpu()]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Put back a :meth:`state_dict` (``resume.load`` checks first that it is this run's)."""
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["rank_generators"][self.rank] if self.world > 1 else state["generator"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.monitor.load_state_dict(state)
