"""Noise-contrastive estimation over the memory bank (Wu et al. 2018, sec. 3.2, eqs. 4-7).

Taught in notebook 03. The full softmax needs all n bank rows per image. NCE turns it into binary
classification: is ``v`` the image's own feature (the data) or one of m noise samples drawn from
the uniform noise distribution ``P_n = 1/n``?

    P(i | v) = exp(v^T f_i / tau) / Z_i                                        (eq. 4)
    h(i, v)  = P(i | v) / (P(i | v) + m P_n(i))                                (eq. 5)
    J_NCE    = -E_{P_d}[log h(i, v)] - m E_{P_n}[log(1 - h(i, v'))]            (eq. 6)
    Z ~ Z_i ~ n E_j[exp(v_j^T f_i / tau)] = (n / m) sum_k exp(v_{j_k}^T f_i / tau)   (eq. 7, Monte Carlo)

Everything is computed in log space so nothing overflows, even in fp16/bf16 at tau = 0.07
(exp(1/0.07) = 1.6e6 is above fp16's 65,504):

    log P      = s / tau - log Z
    log h      = log P - logaddexp(log P, log(m/n))
    log(1 - h) = log(m/n) - logaddexp(log P, log(m/n))

Z is one number for all instances. **Eq. 7 as written** averages over the m noise samples only
(``z_estimator="noise"``, the default). lemniscate's code averages over all 1 + m scores, the image's
own (positive) score included (``z_estimator="all"``): with trained features the positive is often the
largest term, and at m = 1 it caps h(i, v) of the positive near 2/3 (Z >= n exp(s_pos) / 2, so
P <= 2/n and h <= (2/n) / (2/n + 1/n)), a floor of log 1.5 under its part of the loss.

The paper (and lemniscate) estimates Z **once**, from the first batch, and keeps it fixed
(``z_mode="once"``, what ``recipe.paper_config`` uses). On 5,000 CIFAR images with tau = 0.07 and a
random bank that diverged in a short run (loss 99 -> 368): the features move away from the random ones
Z was measured on. An exponential moving average of the per-batch estimate (``z_mode="ema"``, the
course's deviation, ``recipe.course_config``) follows them (notebook 03 shows both).

When Z moves: the first batch sets it inside ``forward`` (the loss needs a Z), and from then on the EMA
is updated in ``after_step`` from the scores that ``forward`` kept, so an extra forward (an evaluation,
a timed step) never moves Z.
"""
from __future__ import annotations

import math

import torch

from .distributed import all_logsumexp
from .memory_bank import BANK_MOMENTUM
from .objectives import TAU, BankObjective, Option
from .validate import check_choice, check_nce_m, check_z

Z_MODES = ("ema", "once")
Z_ESTIMATORS = ("noise", "all")  # eq. 7 as written (the m noise scores) | lemniscate's code (all 1 + m, positive included)
NCE_M = 4096  # the paper's noise samples per image (CIFAR-10 and ImageNet)


def exact_log_Z(bank: torch.Tensor, features: torch.Tensor, tau: float) -> torch.Tensor:
    """``log sum_j exp(v_j^T f / tau)`` over all n rows, per query: (B,). O(n) per query."""
    return torch.logsumexp(features @ bank.t() / tau, dim=1)


def mc_log_Z(bank: torch.Tensor, features: torch.Tensor, tau: float, m: int, gen=None) -> torch.Tensor:
    """Eq. 7's Monte-Carlo estimate ``log[(n/m) sum_k exp(v_{j_k}^T f / tau)]``, j_k ~ U{0..n-1}: (B,)."""
    n = bank.shape[0]
    noise = torch.randint(0, n, (features.shape[0], m), generator=gen, device=bank.device)  # (B, m)
    s = torch.einsum("bd,bmd->bm", features, bank[noise]) / tau  # (B, m)
    return math.log(n) + torch.logsumexp(s, dim=1) - math.log(m)


def use_full_scores(n: int, m: int, batch: int) -> bool:
    """Whether one (B x d)(d x n) matmul plus a gather beats gathering the (B, 1 + m, d) noise rows.

    Both give the same B x (1 + m) scores. The gather reads B(1 + m)d floats scattered over the bank;
    the matmul reads the bank once and does B n d multiply-adds. On a CPU the matmul wins while n is
    within about 32 x (1 + m) and the (B, n) score matrix stays small (benchmarks/bench_ops.py).
    """
    return n <= 32 * (m + 1) and batch * n <= 2**25


def nce_loss(scores: torch.Tensor, log_Z: torch.Tensor | float, n: int) -> torch.Tensor:
    """J_NCE (eq. 6) for one batch, from the scaled similarities ``scores = v^T f / tau``: (B, 1 + m).

    Column 0 holds the positive (the image's own bank entry), columns 1..m the noise samples.
    Returns the batch mean of ``-[log h(i, v_i) + sum_k log(1 - h(i, v_k))]``.
    """
    m = scores.shape[1] - 1
    log_P = scores - log_Z  # (B, 1 + m): log P(i | v)
    log_mPn = math.log(m / n)  # log(m * P_n(i)), P_n uniform
    log_denominator = torch.logaddexp(log_P, torch.full_like(log_P, log_mPn))  # log(P + m P_n)
    log_h_pos = log_P[:, 0] - log_denominator[:, 0]  # (B,)
    log_1mh_neg = log_mPn - log_denominator[:, 1:]  # (B, m)
    return -(log_h_pos + log_1mh_neg.sum(dim=1)).mean()


class NCE(BankObjective):
    """NCE with m uniform noise samples from the memory bank, and Z estimated once or as an EMA.

    The bank, its update and the proximal term come from :class:`~instdisc_lesson.objectives.BankObjective`.

    Attributes:
        memory: the :class:`MemoryBank`.
        m: number of noise samples per image (paper: 4096 on CIFAR/ImageNet).
        tau: temperature.
        z_mode: ``"ema"`` (default here, follows the features) or ``"once"`` (the paper: first batch only).
        z_estimator: ``"noise"`` (default, eq. 7: the m noise scores) or ``"all"`` (lemniscate's code: the
            mean of all 1 + m scores, the positive included).
        z_momentum: EMA factor for ``z_mode="ema"``: ``Z <- mu Z + (1 - mu) Z_batch``.
        shared_negatives: draw one set of m noise rows for the whole batch (one matmul instead of a
            (B, m, d) gather; the estimate is the same in expectation).
        full_scores: how per-sample scores are computed, with identical results: True scores the batch
            against the whole bank with one matmul and picks the needed columns, False gathers the
            (B, 1 + m, d) rows (the paper's code), None chooses by size (:func:`use_full_scores`).
        log_Z: the current estimate of log Z (NaN until the first batch).

    Raises:
        ValueError: for tau <= 0, m outside [1, n - 1], an unknown z_mode, z_momentum outside [0, 1),
            lam < 0, or (in :meth:`forward`) inputs that do not fit the bank.
        FloatingPointError: when the first batch gives a Z that is not finite and positive.

    Example:
        >>> objective = NCE(n=50_000, dim=128, m=4096, tau=0.07)
        >>> loss = objective(features, idx); loss.backward(); optimizer.step()
        >>> objective.after_step(features.detach(), idx)
    """

    def __init__(self, n: int, dim: int, m: int = NCE_M, tau: float = TAU, bank_momentum: float = BANK_MOMENTUM,
                 z_mode: str = "ema", z_momentum: float = 0.99, shared_negatives: bool = False, lam: float = 0.0,
                 generator: torch.Generator | None = None, full_scores: bool | None = None, z_estimator: str = "noise"):
        super().__init__(n, dim, tau, bank_momentum, lam, generator)
        check_nce_m(m, n)
        check_z(z_mode, z_momentum, Z_MODES)
        check_choice("z_estimator", z_estimator, Z_ESTIMATORS)
        self.m = int(m)
        self.z_mode, self.z_momentum, self.shared_negatives = z_mode, float(z_momentum), bool(shared_negatives)
        self.z_estimator, self.full_scores = z_estimator, full_scores
        self.register_buffer("log_Z", torch.tensor(float("nan")))
        self._z_set = False  # whether log_Z holds an estimate: a Python flag, so a step never reads log_Z back
        self._pending = None  # this step's scores, kept by forward for the EMA update in after_step

    def scores(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        """``v^T f / tau`` for the positive (column 0) and m noise rows: (B, 1 + m)."""
        bank, B = self.memory.bank, features.shape[0]
        if self.shared_negatives:
            noise = torch.randint(0, self.memory.n, (self.m,), generator=gen, device=bank.device)  # (m,)
            positive = (features * bank.index_select(0, idx)).sum(dim=1, keepdim=True)  # (B, 1)
            negative = features @ bank.index_select(0, noise).t()  # (B, m): one matmul for the whole batch
            return torch.cat([positive, negative], dim=1) / self.tau
        noise = torch.randint(0, self.memory.n, (B, self.m), generator=gen, device=bank.device)  # (B, m)
        rows = torch.cat([idx.view(-1, 1), noise], dim=1)  # (B, 1 + m): the positive, then the noise
        full = use_full_scores(self.memory.n, self.m, B) if self.full_scores is None else self.full_scores
        if full:
            # Same numbers, less memory traffic: score the batch against every row with one matmul,
            # then pick the B x (1 + m) scores we need.
            return (features @ bank.t()).gather(1, rows) / self.tau  # (B, n) -> (B, 1 + m)
        v = bank.index_select(0, rows.flatten()).view(B, self.m + 1, -1)  # (B, 1 + m, d): the paper's gather
        return torch.bmm(v, features.unsqueeze(2)).squeeze(2) / self.tau  # (B, 1 + m): v^T f / tau

    @torch.no_grad()
    def update_Z(self, scores: torch.Tensor) -> None:
        """Eq. 7 on this batch, ``log Z_batch = log n + log mean exp(s)`` over the noise columns (or over all
        1 + m with ``z_estimator="all"``), then: the first batch sets Z; later ones move it by the EMA
        (``z_mode="ema"``) or not at all (``"once"``). Under torchrun the mean runs over every rank's scores."""
        used = scores[:, 1:] if self.z_estimator == "noise" else scores  # column 0 is the positive
        lse, count = all_logsumexp(used)  # this batch's scores; under torchrun, every rank's
        log_count = math.log(count) if isinstance(count, int) else torch.log(count.float())
        log_Z_batch = math.log(self.memory.n) + lse - log_count
        if not self.z_is_set():  # first batch: one check, once per run
            if not torch.isfinite(log_Z_batch):
                raise FloatingPointError(
                    f"the first batch gave log Z = {float(log_Z_batch)}: the features are not finite. "
                    "Check the model's output for NaN/inf (a too-large learning rate, or bad input images)."
                )
            self.log_Z.copy_(log_Z_batch)
            self._z_set = True
        elif self.z_mode == "ema":  # Z <- mu Z + (1 - mu) Z_batch, in log space
            mu = self.z_momentum
            self.log_Z.copy_(log_Z_batch if mu == 0 else
                             torch.logaddexp(self.log_Z + math.log(mu), log_Z_batch + math.log1p(-mu)))

    def z_is_set(self) -> bool:
        """Whether Z has been estimated (after a checkpoint was loaded: read once from ``log_Z``)."""
        if self._z_set is None:
            self._z_set = not bool(torch.isnan(self.log_Z))
        return self._z_set

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._z_set = None  # log_Z came from the checkpoint: look at it once, when next needed

    settings = {**BankObjective.settings, "nce_m": NCE_M, "z_mode": "once", "z_momentum": 0.99,
                "z_estimator": "noise", "shared_negatives": False}
    options = BankObjective.options + (
        Option("nce_m", "NCE: noise samples per image. {cases}", {"type": int, "metavar": "M"}),
        Option("z_mode", "NCE: the normaliser Z as a running average of the batches' estimates (ema) or fixed from "
               "the first batch (once, the paper). {cases} (--preset course: ema)", {"choices": Z_MODES}),
        Option("z_estimator", "NCE: Z from the m noise scores (eq. 7) or from all 1 + m, the positive included (the "
               "paper's code). Default: noise", {"choices": Z_ESTIMATORS}))

    @classmethod
    def from_config(cls, cfg, n: int) -> "NCE":
        return cls(n, cfg.dim, cfg.nce_m, cfg.tau, cfg.bank_momentum, cfg.z_mode, cfg.z_momentum,
                   cfg.shared_negatives, cfg.lam, z_estimator=cfg.z_estimator)

    def loss(self, features: torch.Tensor, idx: torch.Tensor, gen=None) -> torch.Tensor:
        scores = self.scores(features, idx, gen)  # (B, 1 + m)
        if not self.z_is_set():
            self.update_Z(scores.detach())  # the first batch sets Z: the loss needs one
        elif self.z_mode == "ema":
            self._pending = scores.detach()  # the EMA moves in after_step, never as a side effect of forward
        return nce_loss(scores, self.log_Z, self.memory.n)

    def after_step(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        super().after_step(features, idx)  # the bank
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.update_Z(pending)

    def extras(self) -> dict:
        """log Z after the epoch: notebook 03 plots how it follows the features."""
        return {"log_Z": float(self.log_Z)}
