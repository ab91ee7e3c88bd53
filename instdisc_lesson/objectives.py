"""The objective protocol: everything the training loop may ask of an objective. Taught in notebook 06.

Every objective is an ``nn.Module`` that the loop (``trainer.py``) uses in exactly these ways:

    loss = objective(features, idx, gen)            # (B, d) features of the batch (unit rows, but raw for eq. 1), (B,) indices
    optimizer = objective.make_optimizer(params, cfg)   # plain SGD; PIC's row-sparse SGD
    objective.start_from(features)                  # bank_init="features": rows start as these (n, d) features
    objective.after_step(features.detach(), idx)    # after optimizer.step(): refresh bank rows, queues...
    objective.epoch_order(n, epoch, gen)            # the instances of an epoch, in order: a permutation of n; PIC's window
    objective.epoch_size(n)                         # how many instances that is
    objective.extras()                              # per-epoch values to log, e.g. {"log_Z": ...}
    objective.bank                                  # the memory bank (n, d) if there is one, else None
    type(objective).head, type(objective).default_tau   # the head the model gets; the objective's own tau
    type(objective).unit_features                   # whether the model L2-normalises its output (not for eq. 1)
    type(objective).settings, type(objective).options   # the config fields it reads (with its defaults), its CLI options

:class:`Objective` gives the defaults (linear head, no own temperature, nothing to start or refresh,
plain SGD), and :class:`BankObjective` is the parent of the two memory-bank objectives (eq. 2 and
NCE): it owns the bank, its momentum update and the proximal term of eqs. 8-9, so each child writes only
its loss. lightly's ``MemoryBankModule`` and d2l's ``configure_optimizers`` are the precedents.

Each objective declares the :class:`~instdisc_lesson.recipe.TrainConfig` fields it reads (``settings``, with its
own defaults) and the command-line options that set them (``options``), next to the code that reads them, as
solo-learn's methods add their own arguments. ``TrainConfig`` and the CLI refuse every other objective's setting:
an option that is silently ignored would misreport the run.

The four objectives: ``parametric`` (eq. 1), ``softmax`` (non-parametric, eq. 2), ``nce`` (eqs. 3-8),
``pic`` (Cao et al. 2020); ``registry.build_objective(cfg, n)`` makes the one a config names.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field

import torch
import torch.nn as nn

from .memory_bank import BANK_MOMENTUM, MemoryBank
from .proximal import proximal_term
from .samplers import standard_epoch
from .validate import check_lam, check_tau

TAU = 0.07  # Wu et al. 2018 (ImageNet); their CIFAR code uses 0.1


@dataclass(frozen=True)
class Option:
    """A command-line option of ``train`` that sets the config field ``field`` (``--field-name``).

    ``help`` may hold ``{cases}``: the CLI puts there the default of each case (quick set, CPU, paper), which the
    presets decide, not the objective. ``kwargs`` are argparse's (type, choices, metavar, action)."""

    field: str
    help: str
    kwargs: dict = dataclass_field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def given_as(self, value) -> str:
        """The flag as typed for ``value``: ``--no-correction`` for an on/off option set to False."""
        return "--no-" + self.flag[2:] if value is False and "action" in self.kwargs else self.flag


TAU_OPTION = Option("tau", "temperature (eqs. 2-3). {cases}", {"type": float})
BANK_INIT_OPTION = Option("bank_init", "start the bank (PIC: its weight rows) from random vectors (the paper) or the "
                          "untrained network's features. {cases} (--preset course: features)",
                          {"choices": ("random", "features")})


class Objective(nn.Module):
    """The defaults every objective shares; subclasses override what they need.

    Attributes:
        head: the projection head the encoder ends in: ``"linear"`` (InstDisc) or ``"mlp"`` (PIC).
        default_tau: the objective's own temperature, used when a preset's tau is not overridden
            (None: the recipe's tau applies).
        unit_features: whether the network's output is L2-normalised before the objective sees it (False
            for eq. 1, which the paper writes on the network's raw output).
        settings: the objective's own config fields, each with its default (the paper's); ``from_config`` reads
            these and no other objective-specific field.
        options: the command-line options that set ``settings`` (a setting may have none, e.g. ``z_momentum``).
    """

    head = "linear"
    default_tau: float | None = None
    unit_features = True
    settings: dict = {}  # TrainConfig field -> this objective's default; the fields nothing else of the run reads
    options: tuple[Option, ...] = ()

    @classmethod
    def from_config(cls, cfg, n: int) -> "Objective":
        """This objective for ``n`` instances with the settings of a :class:`~instdisc_lesson.recipe.TrainConfig`."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor, idx: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def start_from(self, features: torch.Tensor) -> None:
        """Start per-instance rows from ``features`` (n, d). Nothing to start by default."""

    def after_step(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        """Refresh state after the optimizer stepped. Nothing to refresh by default."""

    def extras(self) -> dict:
        """Per-epoch values for the history, besides the loss. None by default."""
        return {}

    def epoch_order(self, n: int, epoch: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """The instances of epoch ``epoch`` in the order they are trained: a fresh permutation of all n by default."""
        return standard_epoch(n, gen)

    def epoch_size(self, n: int) -> int:
        """The number of instances :meth:`epoch_order` returns: n by default."""
        return n

    @property
    def bank(self) -> torch.Tensor | None:
        """The memory bank (n, d), read by the bank-kNN monitor; None without one."""
        return None

    def make_optimizer(self, params, cfg) -> torch.optim.Optimizer:
        """Plain SGD with the recipe's learning rate, momentum and weight decay."""
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class BankObjective(Objective):
    """An objective over a memory bank (Wu et al. 2018, sec. 3.1) with the proximal term of eqs. 8-9.

    Subclasses write :meth:`loss`; this class checks the batch, adds ``lam * ||f_i - v_i||^2``, starts
    the bank from features when asked, and updates it after each step (``v_i <- normalize(mu v_i + (1 - mu) f_i)``).

    Attributes:
        memory: the :class:`~instdisc_lesson.memory_bank.MemoryBank` (n, dim).
        tau: temperature.
        lam: weight of the proximal term of eqs. 8-9 (0: off).
    """

    settings = {"tau": TAU, "bank_momentum": BANK_MOMENTUM, "bank_init": "random", "lam": 0.0}
    options = (TAU_OPTION,
               Option("bank_momentum", "memory bank: how much of a row's old value it keeps at each update "
                      f"(default: {BANK_MOMENTUM}, from the paper's code)", {"type": float, "metavar": "MOMENTUM"}),
               BANK_INIT_OPTION,
               Option("lam", "proximal weight lambda of eqs. 8-9 (default: 0, off; the paper's Fig. 3 plots 10-50)",
                      {"type": float, "metavar": "LAMBDA"}))

    def __init__(self, n: int, dim: int, tau: float = TAU, bank_momentum: float = BANK_MOMENTUM, lam: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_tau(tau)
        check_lam(lam)
        self.memory = MemoryBank(n, dim, bank_momentum, generator)
        self.tau, self.lam = float(tau), float(lam)

    def loss(self, features: torch.Tensor, idx: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, idx: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        self.memory.check(idx, features)
        features = features.to(self.memory.bank.dtype)  # any float dtype in; the loss runs in the bank's
        # The loss and the proximal term read the bank rows of idx *before* after_step overwrites them.
        return self.loss(features, idx, gen) + proximal_term(features, self.memory.read(idx), self.lam)

    def start_from(self, features: torch.Tensor) -> None:
        """Fill the bank with ``features`` (n, d) instead of random vectors."""
        self.memory.fill(features)

    def after_step(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        self.memory.update(idx, features)

    @property
    def bank(self) -> torch.Tensor:
        return self.memory.bank
