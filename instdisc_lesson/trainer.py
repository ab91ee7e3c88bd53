"""One training loop for every objective: history, progress, checkpoints, resume.

Taught in notebook 06. One step of instance discrimination, whatever the objective:

    x = augment(images[idx])                 # a random view of each image in the batch
    f = model(x)                             # (B, d) unit features
    loss = objective(f, idx)                 # reads bank rows / class weights of idx
    loss.backward(); optimizer.step()
    objective.after_step(f.detach(), idx)    # memory-bank update (no-op for the parametric softmax)

The paper's recipe (Wu et al. 2018, CIFAR-10): SGD lr 0.03, momentum 0.9, weight decay 5e-4,
batch 128, 200 epochs, lr x0.1 at epochs 120 and 160, tau = 0.07 (0.1 in the CIFAR code), bank
momentum 0.5, NCE m = 4096, kNN k = 200. ``paper_config()`` holds it; ``quick_config()`` holds the
settings calibrated for a CPU in quick mode (see README and benchmarks/RESULTS.md for the measurements).

The data sits on the training device as uint8 and is indexed and augmented there (no DataLoader).
After every epoch the trainer recomputes kNN accuracy on the test set, appends to ``history``, and
(with ``out_dir``) writes ``checkpoint.pt`` atomically, so an interrupted run resumes from its last
complete epoch with the same result.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from .augment import AugmentConfig, augment
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .config import get_device, is_quick, seed_everything
from .data import InstanceDataset
from .knn import check_k, knn_accuracy
from .models import build_model
from .objectives import build_objective
from .pic import RowSparseSGD
from .samplers import SlidingWindowSampler


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults are the paper's CIFAR-10 recipe."""

    data: str = "cifar10"
    objective: str = "nce"  # parametric | softmax | nce
    model: str = "resnet18"  # convnet | resnet18
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple = (0.6, 0.8)  # fractions of the run: epochs 120 and 160 of 200
    tau: float = 0.07
    nce_m: int = 4096
    bank_momentum: float = 0.5
    bank_init: str = "random"  # random (paper) | features: bank (or PIC weight) rows start as the untrained features
    lam: float = 0.0
    z_mode: str = "ema"
    z_momentum: float = 0.99
    shared_negatives: bool = False
    dim: int = 128
    head: str | None = None  # linear (InstDisc) | mlp (PIC); None picks by objective
    window: int = 0  # PIC sliding window D (0: the standard epoch over all n)
    stride: int = 0  # PIC window stride S
    recent_k: int = 0  # PIC recent negatives K (0: all n)
    correction: bool = True  # PIC weight-update correction
    knn_k: int = 200
    knn_sigma: float = 0.1
    eval_every: int = 1
    compile: bool = False  # torch.compile the model; the first step's warm-up is reported separately
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()})
        self.lr_milestones = tuple(self.lr_milestones)
        for name in ("epochs", "batch_size", "dim", "knn_k", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        for name in ("lr", "knn_sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum} (SGD) must lie in [0, 1)")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")
        if self.bank_init not in ("random", "features"):
            raise ValueError(f"bank_init={self.bank_init!r} is unknown: choose 'random' (paper) or 'features'")
        if not all(0.0 < f < 1.0 for f in self.lr_milestones):
            raise ValueError(f"lr_milestones={self.lr_milestones} are fractions of the run and must lie in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _objective_defaults(overrides: dict) -> dict:
    """PIC's own temperature (0.2, Cao et al. 2020) unless tau is given."""
    if overrides.get("objective") == "pic" and "tau" not in overrides:
        return {**overrides, "tau": 0.2}
    return overrides


def paper_config(**overrides) -> TrainConfig:
    """The paper's CIFAR-10 run: ResNet-18, NCE m = 4096, 200 epochs."""
    return replace(TrainConfig(), **_objective_defaults(overrides))


# Calibrated for the offline quick set on a 2-core CPU (see README, "How quick mode was calibrated").
QUICK_DEFAULTS = dict(data="quick", model="convnet", objective="softmax", epochs=12, batch_size=64, lr=0.03,
                      tau=0.1, nce_m=256, bank_init="features", knn_k=20, eval_every=1)


def quick_config(**overrides) -> TrainConfig:
    """The settings quick mode uses: the offline quick set, the small ConvNet, a few epochs."""
    return replace(TrainConfig(**QUICK_DEFAULTS), **_objective_defaults(overrides))


def default_config(**overrides) -> TrainConfig:
    """``quick_config`` in quick mode, ``paper_config`` otherwise."""
    return quick_config(**overrides) if is_quick() else paper_config(**overrides)


def _batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split a permutation into batches; a last batch of one image joins the previous (BatchNorm needs 2)."""
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


class Trainer:
    """Trains ``cfg.model`` with ``cfg.objective`` on ``train`` and tracks kNN on ``test``.

    Example:
        >>> trainer = Trainer(quick_config(), train_set, test_set, out_dir="runs/quick")
        >>> history = trainer.fit()
        >>> history[-1]["knn_top1"]
    """

    def __init__(self, cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset | None = None,
                 device=None, out_dir=None, progress: bool = True):
        n = len(train)
        if cfg.batch_size > n:
            raise ValueError(f"batch_size={cfg.batch_size} is larger than the dataset ({n} images): use at most {n}")
        if test is not None:
            check_k(cfg.knn_k, n)
        self.cfg, self.train_set, self.test_set = cfg, train, test
        self.device = get_device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        seed_everything(cfg.seed)
        head = cfg.head or ("mlp" if cfg.objective == "pic" else "linear")
        self.model = build_model(cfg.model, cfg.dim, head).to(self.device)
        self.objective = build_objective(cfg.objective, n, cfg.dim, tau=cfg.tau, m=cfg.nce_m,
                                         bank_momentum=cfg.bank_momentum, lam=cfg.lam, z_mode=cfg.z_mode,
                                         z_momentum=cfg.z_momentum, shared_negatives=cfg.shared_negatives,
                                         recent_k=cfg.recent_k, correction=cfg.correction).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.timings = {}  # e.g. compile_warmup_seconds: the first compiled step, kept out of the epoch times
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        params = list(self.model.parameters()) + list(self.objective.parameters())
        # Plain SGD, except that rows of a parameter marked with `sampled_rows` (PIC's weights, with the
        # correction on) are updated alone: see pic.RowSparseSGD.
        self.optimizer = RowSparseSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.sampler = SlidingWindowSampler(n, cfg.window, cfg.stride or cfg.window, cfg.seed) if cfg.window else None
        milestones = sorted({max(1, round(f * cfg.epochs)) for f in cfg.lr_milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=0.1)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.images = train.images.to(self.device)  # (n, 3, 32, 32) uint8, resident on the device
        self.epoch, self.history, self.baselines = 0, [], {}
        self.step_hooks = []  # callables hook(trainer, idx, features), run after each step, before the bank update
        # One pass over the data in training mode: BatchNorm's running statistics then describe the data
        # (so the random-init baseline is a fair one), and the bank can start from these features.
        initial = self.embed_train()  # (n, d)
        if cfg.bank_init == "features" and hasattr(self.objective, "start_from"):
            self.objective.start_from(initial)  # bank rows (InstDisc) or weight rows (PIC) = these features

    @torch.no_grad()
    def embed_train(self, batch_size: int = 512) -> torch.Tensor:
        """Features of every training image, un-augmented, with BatchNorm in training mode (as in a step)."""
        from .data import to_float

        chunks = _batches(torch.arange(len(self.images), device=self.device), batch_size)  # no chunk of 1 (BatchNorm)
        return torch.cat([self.model(to_float(self.images[chunk])).float() for chunk in chunks])

    # -- one step, one epoch ---------------------------------------------------------------------
    def step(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward one augmented batch of the images ``idx``: returns (loss, features); the caller steps."""
        x = augment(self.images[idx], self.cfg.augment, self.gen)  # (B, 3, 32, 32) in [0, 1]
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            f = self.forward(x)
        f = f.float()  # (B, d); the objective runs in float32 (and in log space)
        loss = self.objective(f, idx, self.gen)
        return loss, f

    def train_epoch(self) -> float:
        self.model.train()
        if self.sampler is None:  # the standard epoch: every instance once, in a fresh order
            perm = torch.randperm(len(self.images), generator=self.gen, device=self.device)
        else:  # PIC: this epoch's window of D instances
            perm = self.sampler.window(self.epoch, self.gen).to(self.device)
        total, count, self.step_losses = 0.0, 0, []
        for step, idx in enumerate(_batches(perm, self.cfg.batch_size)):
            warmup = self.cfg.compile and "compile_warmup_seconds" not in self.timings
            start = time.perf_counter()
            loss, f = self.step(idx)
            # One scalar read per step (a GPU sync): it lets a NaN stop training before the bad update.
            value = self.last_loss = loss.item()
            if warmup:
                self.timings["compile_warmup_seconds"] = time.perf_counter() - start
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the loss became {value} at epoch {self.epoch + 1}, step {step + 1}: training stopped before "
                    "the bad step was applied. Try a smaller learning rate or a larger tau; "
                    "the last complete epoch's checkpoint and history are kept."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for hook in self.step_hooks:  # e.g. notebook 02 measures the bank's staleness here
                hook(self, idx, f.detach())
            self.objective.after_step(f.detach(), idx)
            total, count = total + value * len(idx), count + len(idx)
            self.step_losses.append(round(value, 4))  # the loss of every step (notebook 04's oscillation)
        self.scheduler.step()
        self.epoch += 1
        return total / count

    def evaluate(self) -> dict:
        """kNN on the test set: train features recomputed under the test transform (``knn_top1/5``) and,
        for bank objectives, read from the stale memory bank instead (``bank_knn_top1``)."""
        from .knn import embed

        cfg, train, test = self.cfg, self.train_set, self.test_set
        test_f = embed(self.model, test.images)  # computed once, used by both
        top1, top5 = knn_accuracy(embed(self.model, train.images), train.labels, test_f, test.labels,
                                  cfg.knn_k, cfg.knn_sigma, train.num_classes)
        result = {"knn_top1": top1, "knn_top5": top5, "bank_knn_top1": None}
        memory = getattr(self.objective, "memory", None)
        if memory is not None:
            result["bank_knn_top1"] = knn_accuracy(memory.bank, train.labels, test_f, test.labels,
                                                   cfg.knn_k, cfg.knn_sigma, train.num_classes)[0]
        return result

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> list[dict]:
        """Train up to ``epochs`` (default ``cfg.epochs``) total epochs; returns the history."""
        from tqdm.auto import tqdm

        target = self.cfg.epochs if epochs is None else epochs
        if self.test_set is not None and "random_init_knn_top1" not in self.baselines:
            scores = self.evaluate()
            self.baselines.update(random_init_knn_top1=scores["knn_top1"], random_init_knn_top5=scores["knn_top5"])
        bar = tqdm(range(self.epoch, target), desc=f"{self.cfg.objective}/{self.cfg.model}", disable=not self.progress,
                   initial=self.epoch, total=target)
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
                     "step_losses": self.step_losses}
            if self.test_set is not None and (self.epoch % self.cfg.eval_every == 0 or self.epoch == target):
                entry.update(self.evaluate())
            if hasattr(self.objective, "log_Z"):
                entry["log_Z"] = float(self.objective.log_Z)
            self.history.append(entry)
            bar.set_postfix(loss=f"{loss:.3f}", knn=f"{entry.get('knn_top1', float('nan')):.3f}")
            if self.out_dir is not None:
                self.save(self.out_dir / "checkpoint.pt")
                self._write_history()
        return self.history

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(), "n": len(self.train_set), "epoch": self.epoch,
            "model": self.model.state_dict(), "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.gen.get_state(), "history": self.history, "baselines": self.baselines,
        }

    def save(self, path) -> None:
        save_checkpoint(path, self.state_dict())

    def load(self, path) -> None:
        """Restore a run saved by :meth:`save`; refuses one made for another model, objective, n or dim."""
        state = load_checkpoint(path)
        saved = TrainConfig.from_dict(state["config"])
        for name in ("model", "objective", "dim"):
            if getattr(saved, name) != getattr(self.cfg, name):
                raise CheckpointError(f"checkpoint {path} was made with {name}={getattr(saved, name)!r}, "
                                      f"this run has {name}={getattr(self.cfg, name)!r}: use another --out folder")
        if state["n"] != len(self.train_set):
            raise CheckpointError(f"checkpoint {path} was made for {state['n']} training images, this dataset has "
                                  f"{len(self.train_set)}: use another --out folder")
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.epoch, self.history, self.baselines = state["epoch"], state["history"], state["baselines"]

    def _write_history(self) -> None:
        if self.out_dir is not None:
            text = json.dumps({"history": self.history, "baselines": self.baselines, "timings": self.timings}, indent=2)
            atomic_write(self.out_dir / "history.json", lambda tmp: Path(tmp).write_text(text))


def load_or_train(cfg: TrainConfig, train: InstanceDataset, test: InstanceDataset, out_dir, progress: bool = True) -> Trainer:
    """Cache-or-train: resume (or just load) the run in ``out_dir`` if its config matches, else train it there."""
    trainer = Trainer(cfg, train, test, out_dir=out_dir, progress=progress)
    ckpt = Path(out_dir) / "checkpoint.pt"
    if ckpt.exists():
        try:
            saved = load_checkpoint(ckpt)["config"]
        except CheckpointError:
            saved = None
        if saved == cfg.to_dict():
            trainer.load(ckpt)
    trainer.fit()
    return trainer
