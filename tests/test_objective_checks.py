"""The notebooks' checks on the trainer's objectives (``objective_checks.py``) pass on the package's objectives and
fail on each plausible one-line bug below, in a loss and in an update: a subclass with the bug stands in for the
objective the trainer would build.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from instdisc_lesson import objective_checks as oc
from instdisc_lesson.memory_bank import MemoryBank
from instdisc_lesson.nce import NCE
from instdisc_lesson.nonparametric import NonParametricSoftmax
from instdisc_lesson.parametric import ParametricSoftmax
from instdisc_lesson.pic import PIC, RowSparseSGD
from instdisc_lesson.proximal import proximal_term
from instdisc_lesson.recipe import quick_config
from instdisc_lesson.registry import build_objective

N = 300


def built(objective, **settings):
    return build_objective(quick_config(objective=objective, **settings), N)


class SwappedBank(MemoryBank):
    """The bank's update with mu on the NEW feature: v <- normalize((1 - mu) v + mu f)."""

    @torch.no_grad()
    def update(self, idx, features):
        self.bank[idx] = F.normalize((1 - self.momentum) * self.bank[idx] + self.momentum * features, dim=1)


def swapped_momentum(objective):
    objective.memory.__class__ = SwappedBank
    return objective


# -- the non-parametric softmax (eq. 2) -----------------------------------------------------------------------
class SoftmaxNoTau(NonParametricSoftmax):
    def logits(self, features):
        return features @ self.memory.bank.t()  # the temperature dropped


class SoftmaxUnnormalisedRows(NonParametricSoftmax):
    def after_step(self, features, idx):
        mu = self.memory.momentum
        self.memory.bank[idx] = mu * self.memory.bank[idx] + (1 - mu) * features  # no renormalisation


# -- the parametric softmax (eq. 1) ---------------------------------------------------------------------------
class ParametricOnUnitFeatures(ParametricSoftmax):
    def forward(self, features, idx, gen=None):
        return super().forward(F.normalize(features, dim=1), idx)  # eq. 2's normalisation moved into eq. 1


class ParametricWithoutWeightDecay(ParametricSoftmax):
    def make_optimizer(self, params, cfg):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)  # weight decay forgotten


# -- NCE (eqs. 5-7) -------------------------------------------------------------------------------------------
class NCENoTau(NCE):
    def scores(self, features, idx, gen=None):
        return super().scores(features, idx, gen) * self.tau  # v^T f instead of v^T f / tau


class NCESwappedEMA(NCE):
    @torch.no_grad()
    def update_Z(self, scores):
        mu, self.z_momentum = self.z_momentum, 1 - self.z_momentum  # Z <- (1 - mu) Z + mu Z_batch
        try:
            super().update_Z(scores)
        finally:
            self.z_momentum = mu


class NCEOnceThatMoves(NCE):
    """``z_mode="once"`` ignored: Z follows the EMA anyway."""

    def _as_ema(self, method, *args):
        mode, self.z_mode = self.z_mode, "ema"
        try:
            return method(*args)
        finally:
            self.z_mode = mode

    def loss(self, features, idx, gen=None):
        return self._as_ema(super().loss, features, idx, gen)

    def update_Z(self, scores):
        return self._as_ema(super().update_Z, scores)


class NCEPositiveInZ(NCE):
    @torch.no_grad()
    def update_Z(self, scores):
        estimator, self.z_estimator = self.z_estimator, "all"  # lemniscate's estimator where eq. 7 was asked for
        try:
            super().update_Z(scores)
        finally:
            self.z_estimator = estimator


class NCEProximalSignFlipped(NCE):
    def forward(self, features, idx, gen=None):
        return self.loss(features, idx, gen) - proximal_term(features, self.memory.read(idx), self.lam)


class NCEProximalUnweighted(NCE):
    def forward(self, features, idx, gen=None):
        return self.loss(features, idx, gen) + proximal_term(features, self.memory.read(idx), 1.0)


# -- PIC ------------------------------------------------------------------------------------------------------
class PICUnnormalisedRows(PIC):
    def forward(self, features, idx, gen=None):
        cand = self.candidates(idx)
        W = F.embedding(cand, self.weight, sparse=True)  # the weight rows not normalised
        return F.cross_entropy(features @ W.t() / self.tau, torch.searchsorted(cand, idx))


class PICNoCorrection(PIC):
    def make_optimizer(self, params, cfg):  # the correction asked for, the plain update given
        return RowSparseSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, correction=False)


def as_class(objective, cls):
    """The same objective (settings, bank or weights) as an instance of the buggy subclass."""
    objective.__class__ = cls
    return objective


CASES = [  # (check, the objective as built, {bug: the objective with it})
    (oc.check_softmax_objective, lambda: built("softmax"), {
        "loss: tau dropped": lambda: as_class(built("softmax"), SoftmaxNoTau),
        "update: mu on the new feature": lambda: swapped_momentum(built("softmax")),
        "update: rows not renormalised": lambda: as_class(built("softmax"), SoftmaxUnnormalisedRows),
    }),
    (oc.check_parametric_objective, lambda: built("parametric"), {
        "loss: features L2-normalised": lambda: as_class(built("parametric"), ParametricOnUnitFeatures),
        "update: no weight decay": lambda: as_class(built("parametric"), ParametricWithoutWeightDecay),
    }),
    (oc.check_nce_objective, lambda: built("nce", z_mode="ema"), {
        "loss: tau dropped": lambda: as_class(built("nce"), NCENoTau),
        "update: EMA weights swapped": lambda: as_class(built("nce", z_mode="ema"), NCESwappedEMA),
        "update: positive counted in eq. 7": lambda: as_class(built("nce"), NCEPositiveInZ),
        "update: bank's mu on the new feature": lambda: swapped_momentum(built("nce")),
    }),
    (oc.check_nce_objective, lambda: built("nce", z_mode="once"), {
        "loss: tau dropped (once)": lambda: as_class(built("nce", z_mode="once"), NCENoTau),
        "update: a one-shot Z that moves": lambda: as_class(built("nce", z_mode="once"), NCEOnceThatMoves),
    }),
    (oc.check_nce_objective, lambda: built("nce", lam=50.0), {
        "loss: proximal term's sign flipped": lambda: as_class(built("nce", lam=50.0), NCEProximalSignFlipped),
        "loss: proximal term without its lambda": lambda: as_class(built("nce", lam=50.0), NCEProximalUnweighted),
    }),
    (oc.check_pic_objective, lambda: built("pic", recent_k=12), {
        "loss: rows not normalised": lambda: as_class(built("pic", recent_k=12), PICUnnormalisedRows),
        "update: no weight-update correction": lambda: as_class(built("pic", recent_k=12), PICNoCorrection),
    }),
]
RIGHT = [(check, make) for check, make, _ in CASES]
WRONG = [(check, make) for check, _, bugs in CASES for make in bugs.values()]
WRONG_IDS = [bug for _, _, bugs in CASES for bug in bugs]


@pytest.mark.parametrize("check,make", RIGHT, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(RIGHT)])
def test_check_passes_the_package_objective(check, make, capsys):
    objective = make()
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    check(objective)
    assert capsys.readouterr().out.startswith("✓")
    after = objective.state_dict()
    assert all(torch.allclose(before[k], after[k], equal_nan=True, rtol=0, atol=0) for k in before), "the check changed the objective it was given"


@pytest.mark.parametrize("check,make", WRONG, ids=WRONG_IDS)
def test_check_fails_on_a_plausible_bug(check, make):
    with pytest.raises(AssertionError):
        check(make())


@pytest.mark.parametrize("settings", [dict(z_estimator="all"), dict(shared_negatives=True), dict(lam=30.0)])
def test_nce_check_follows_the_objective_settings(settings, capsys):
    oc.check_nce_objective(built("nce", **settings))
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("settings", [dict(), dict(recent_k=12, correction=False)])
def test_pic_check_follows_the_objective_settings(settings, capsys):
    oc.check_pic_objective(built("pic", **settings))
    assert "✓" in capsys.readouterr().out


def test_every_objective_the_trainer_builds_has_a_check():
    from instdisc_lesson.registry import OBJECTIVES

    checked = {make().__class__ for _, make, _ in CASES}
    assert {build_objective(quick_config(objective=name), N).__class__ for name in OBJECTIVES} <= checked


def test_the_hand_computation_is_eq_2_on_a_case_checkable_on_paper():
    """Two bank rows at cosines 1 and 0 with the feature, tau = 0.5: -log P = -log(e^2 / (e^2 + 1))."""
    objective = NonParametricSoftmax(2, 2, tau=0.5)
    objective.memory.bank.copy_(torch.eye(2))
    loss = objective(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert math.isclose(float(loss), -math.log(math.e**2 / (math.e**2 + 1)), rel_tol=1e-6)
