"""Every exercise check accepts a correct answer and rejects plausible wrong ones (so it can fail).

Reference for each wrong answer: the mistake named beside it, which a learner could make; the check must raise
``AssertionError`` for it. Every ``check_*`` in ``instdisc_lesson/exercises.py`` has a case here (a test checks that).
"""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from instdisc_lesson import exercises, records
from instdisc_lesson.knn import knn_scores, rank_classes
from instdisc_lesson.nce import nce_loss
from instdisc_lesson.nonparametric import probabilities
from instdisc_lesson.proximal import proximal_term

TABLE1 = records.load_experiment("table1")
SEMI = list(records.load_experiment("semi_supervised").values())


# -- right answers -------------------------------------------------------------------------------------------
def flip_right(batch, p, gen):
    coins = torch.rand(batch.shape[0], generator=gen) < p
    return torch.where(coins.view(-1, 1, 1, 1), batch.flip(-1), batch)


def update_right(bank, idx, f, mu):
    bank[idx] = F.normalize(mu * bank[idx] + (1 - mu) * f, dim=1)
    return bank


def age_right(S):
    return [max(0, S - abs(a - S)) / S**2 for a in range(2 * S + 1)]


def mc_right(bank, f, tau, m, gen):
    j = torch.randint(0, len(bank), (m,), generator=gen)
    return len(bank) * torch.exp(f @ bank[j].t() / tau).mean()


def nce_by_hand(scores, log_Z, n, ratio=None):
    """eq. 6 in log space; ``ratio`` replaces the noise ratio m/n (for the wrong answers)."""
    m = scores.shape[1] - 1
    log_k = math.log(m / n if ratio is None else ratio(m, n))
    log_P = scores - log_Z
    log_h = log_P[:, 0] - torch.logaddexp(log_P[:, 0], torch.tensor(log_k, dtype=scores.dtype))
    log_1mh = log_k - torch.logaddexp(log_P[:, 1:], torch.tensor(log_k, dtype=scores.dtype))
    return -(log_h + log_1mh.sum(1)).mean()


def gaps_right(table1):
    softmax = next(r for r in table1.values() if r["config"]["objective"] == "softmax")["knn_top1"]
    return {r["config"]["nce_m"]: 100 * (softmax - r["knn_top1"]) for r in table1.values() if r["config"]["objective"] == "nce"}


def gaps_first_is_softmax(table1):  # takes the first record whose objective is not NCE as the softmax: the parametric
    rows = list(table1.values())
    softmax = next(r for r in rows if r["config"]["objective"] != "nce")["knn_top1"]
    return {r["config"]["nce_m"]: 100 * (softmax - r["knn_top1"]) for r in rows if r["config"]["objective"] == "nce"}


def grad_right(f, v, lam):
    return 2 * lam * (f - v) / f.shape[0]


def megabytes_right(n, d, bytes_per_value, gpus, sharded):
    return (math.ceil(n / gpus) if sharded else n) * d * bytes_per_value / 1e6


def balanced_right(labels, per_class, gen):
    return torch.cat([(labels == c).nonzero().flatten()[torch.randperm(int((labels == c).sum()), generator=gen)[:per_class]]
                      for c in labels.unique()])


def stops_right(records_, key, margin):
    ordered = sorted(records_, key=lambda r: r["fraction"])
    answer = None
    for r in reversed(ordered):          # walk down from the largest fraction while it does not pay
        if 100 * (r["finetune_top1"] - r[key]) > margin:
            break
        answer = r["fraction"]
    return answer


# -- plausible wrong answers ---------------------------------------------------------------------------------
def balanced_first(labels, per_class, gen):  # balanced, but always the first images of each class
    return torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in labels.unique()])


def balanced_with_replacement(labels, per_class, gen):  # random, balanced, but the same image can come twice
    return torch.cat([(labels == c).nonzero().flatten()[torch.randint(int((labels == c).sum()), (per_class,), generator=gen)]
                      for c in labels.unique()])


def stops_first_miss(records_, key, margin):  # the first fraction that does not pay, even if a larger one pays again
    ordered = sorted(records_, key=lambda r: r["fraction"])
    return next((r["fraction"] for r in ordered if 100 * (r["finetune_top1"] - r[key]) <= margin), None)


def stops_last_paying(records_, key, margin):  # off by one: the last fraction that still pays
    ordered = sorted(records_, key=lambda r: r["fraction"])
    paying = [r["fraction"] for r in ordered if 100 * (r["finetune_top1"] - r[key]) > margin]
    return None if paying and paying[-1] == ordered[-1]["fraction"] else (paying[-1] if paying else ordered[0]["fraction"])


def stops_unsorted(records_, key, margin):  # the right rule, on the records in the order they came
    answer = None
    for r in reversed(list(records_)):
        if 100 * (r["finetune_top1"] - r[key]) > margin:
            break
        answer = r["fraction"]
    return answer


def stops_margin_as_fraction(records_, key, margin):  # the gain in accuracy units (0.05) against a margin in points (1)
    answer = None
    for r in sorted(records_, key=lambda r: r["fraction"], reverse=True):
        if r["finetune_top1"] - r[key] > margin:
            break
        answer = r["fraction"]
    return answer


def knn_unweighted(tf, ty, qf, k, sigma, C):  # the k neighbours vote one each, not exp(s / sigma)
    idx = (qf @ tf.t()).topk(k, dim=1).indices
    return torch.stack([torch.bincount(ty[i], minlength=C).argmax() for i in idx])


def grad_by_autograd(f, v, lam):  # right numbers, but differentiated, not derived: the check runs without autograd
    leaf = f.clone().requires_grad_(True)
    return torch.autograd.grad(proximal_term(leaf, v, lam), leaf)[0]


CASES = [  # (check, right answer, {mistake: wrong answer})
    (exercises.check_flip, flip_right, {
        "one coin per batch": lambda b, p, g: b.flip(-1) if torch.rand(1, generator=g) < p else b,
        "flips with probability 1 - p": lambda b, p, g: flip_right(b, 1 - p, g),
        "flips upside down": lambda b, p, g: torch.where((torch.rand(b.shape[0], generator=g) < p).view(-1, 1, 1, 1), b.flip(-2), b)}),
    (exercises.check_softmax_probabilities, probabilities, {
        "tau forgotten": lambda f, b, t: torch.softmax(f @ b.t(), 1),
        "times tau": lambda f, b, t: torch.softmax(f @ b.t() * t, 1),
        "not normalised": lambda f, b, t: torch.exp(f @ b.t() / t),
        "normalised over the batch": lambda f, b, t: torch.softmax(f @ b.t() / t, 0)}),
    (exercises.check_bank_update, update_right, {
        "no renormalisation": lambda b, i, f, mu: b.index_copy_(0, i, mu * b[i] + (1 - mu) * f),
        "mu weighs the new feature": lambda b, i, f, mu: update_right(b, i, f, 1 - mu),
        "every row updated": lambda b, i, f, mu: F.normalize(mu * b + (1 - mu) * f.mean(0), dim=1),
        "off by one row": lambda b, i, f, mu: update_right(b, i + 1, f, mu)}),
    (exercises.check_age_distribution, age_right, {
        "every age is S (no shuffle)": lambda S: [float(a == S) for a in range(2 * S + 1)],
        "geometric (drawn with replacement)": lambda S: [0.0] + [(1 - 1 / S) ** (a - 1) / S for a in range(1, 2 * S + 1)],
        "uniform on 1..2S-1": lambda S: [0.0] + [1 / (2 * S - 1)] * (2 * S - 1) + [0.0],
        "off by one (peak at S + 1)": lambda S: [0.0] + age_right(S)[:-1]}),
    (exercises.check_mc_Z, mc_right, {
        "n forgotten": lambda b, f, t, m, g: torch.exp(f @ b[torch.randint(0, len(b), (m,), generator=g)].t() / t).mean(),
        "the first m rows, not a sample": lambda b, f, t, m, g: len(b) * torch.exp(f @ b[:m].t() / t).mean(),
        "tau forgotten": lambda b, f, t, m, g: mc_right(b, f, 1.0, m, g)}),
    (exercises.check_nce_loss, nce_by_hand, {
        "noise ratio 1/n (m forgotten)": lambda s, z, n: nce_by_hand(s, z, n, ratio=lambda m, n: 1 / n),
        "noise ratio m (n forgotten)": lambda s, z, n: nce_by_hand(s, z, n, ratio=lambda m, n: m),
        "summed over the batch": lambda s, z, n: nce_by_hand(s, z, n) * s.shape[0],
        "Z forgotten": lambda s, z, n: nce_by_hand(s, 0.0, n)}),
    (functools.partial(exercises.check_table1_gaps, table1=TABLE1), gaps_right, {
        "fraction, not points": lambda t: {m: g / 100 for m, g in gaps_right(t).items()},
        "sign reversed": lambda t: {m: -g for m, g in gaps_right(t).items()},
        "parametric taken for the softmax": gaps_first_is_softmax,
        "numbers copied from the table": lambda t: gaps_right(TABLE1)}),
    (exercises.check_knn_predict, lambda *a: rank_classes(knn_scores(*a))[:, 0], {
        "1-NN whatever k": lambda tf, ty, qf, k, s, C: ty[(qf @ tf.t()).argmax(1)],
        "unweighted majority vote": knn_unweighted,
        "sigma forgotten (weights exp(s))": lambda tf, ty, qf, k, s, C: rank_classes(knn_scores(tf, ty, qf, k, 1.0, C))[:, 0]}),
    (exercises.check_proximal, proximal_term, {
        "norm, not squared": lambda f, v, lam: lam * (f - v).norm(dim=1).mean(),
        "sign flipped": lambda f, v, lam: -proximal_term(f, v, lam),
        "summed over the batch": lambda f, v, lam: lam * (f - v).pow(2).sum()}),
    (exercises.check_proximal_grad, grad_right, {
        "sign flipped": lambda f, v, lam: 2 * lam * (v - f) / f.shape[0],
        "the 2 forgotten": lambda f, v, lam: lam * (f - v) / f.shape[0],
        "batch mean forgotten": lambda f, v, lam: 2 * lam * (f - v),
        "autograd instead of a derivation": grad_by_autograd}),
    (exercises.check_milestones, lambda e: [round(0.6 * e), round(0.8 * e)], {
        "the paper's epochs whatever the run": lambda e: [120, 160],
        "rounded down": lambda e: [int(0.6 * e), int(0.8 * e)]}),
    (exercises.check_bank_megabytes, megabytes_right, {
        "MiB (2^20), not MB": lambda n, d, b, g, s: megabytes_right(n, d, b, g, s) * 1e6 / 2**20,
        "shards rounded down": lambda n, d, b, g, s: (n // g if s else n) * d * b / 1e6,
        "replicated bank divided too": lambda n, d, b, g, s: math.ceil(n / g) * d * b / 1e6}),
    (exercises.check_balanced_subset, balanced_right, {
        "the first images of each class": balanced_first,
        "drawn with replacement": balanced_with_replacement,
        "random but not balanced": lambda y, k, g: torch.randperm(len(y), generator=g)[:k * len(y.unique())]}),
    (functools.partial(exercises.check_stops_paying, semi=SEMI), stops_right, {
        "the first fraction that does not pay": stops_first_miss,
        "off by one: the last that pays": stops_last_paying,
        "assumes the records sorted": stops_unsorted,
        "margin in accuracy units": stops_margin_as_fraction,
        "the answer of the shipped records, hard-coded": lambda r, k, m: {"scratch_top1": None}.get(k, 0.05)}),
]


def _name(check):
    return getattr(check, "func", check).__name__


RIGHT = [(check, right) for check, right, _ in CASES]
WRONG = [(check, wrong) for check, _, wrongs in CASES for wrong in wrongs.values()]
WRONG_IDS = [f"{_name(check)}:{mistake}" for check, _, wrongs in CASES for mistake in wrongs]


@pytest.mark.parametrize("check,right", RIGHT, ids=[_name(c) for c, _ in RIGHT])
def test_check_accepts_the_right_answer(check, right, capsys):
    check(right)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("check,wrong", WRONG, ids=WRONG_IDS)
def test_check_rejects_a_plausible_mistake(check, wrong):
    with pytest.raises(AssertionError):
        check(wrong)


def test_every_check_has_a_case():
    """No check_* in exercises.py without a wrong answer that it rejects."""
    checks = {name for name in dir(exercises) if name.startswith("check_")}
    covered = {_name(check) for check, _, wrongs in CASES if wrongs} | {"check_visit_gaps"}
    assert checks <= covered, f"checks without a wrong-answer test: {sorted(checks - covered)}"


# check_visit_gaps takes an answer, not a function: the right one by hand (see tests/test_samplers.py), and a wrong one
GAPS_RIGHT, GAPS_WRONG = sorted([1, 7, 1] * 6 + [7, 1, 7] * 2), sorted([1, 7, 1] * 8)


def test_visit_gap_check(capsys):
    exercises.check_visit_gaps(GAPS_RIGHT)
    assert "correct" in capsys.readouterr().out
    for wrong in (GAPS_WRONG, GAPS_RIGHT[:-1]):  # every window alike; one gap short (off by one)
        with pytest.raises(AssertionError):
            exercises.check_visit_gaps(wrong)
    exercises.check_visit_gaps(None)  # the stored notebook's placeholder: reported, not raised
    assert "not attempted yet" in capsys.readouterr().out


def _stub(*args, **kwargs):
    raise NotImplementedError("write my_answer, then run this cell")


@pytest.mark.parametrize("check", sorted({_name(c) for c, _, _ in CASES}))
def test_an_unwritten_exercise_is_reported_not_raised(check, capsys):
    """Run All must reach the last cell: a stub (or a None answer) prints 'not attempted yet' instead of raising."""
    fn = getattr(exercises, check)
    extra = {"check_table1_gaps": (TABLE1,), "check_stops_paying": (SEMI,)}.get(check, ())
    for answer in (_stub, None):
        fn(answer, *extra)
        out = capsys.readouterr().out
        assert "not attempted yet" in out and "correct" not in out, out


def test_a_wrong_answer_that_returns_nothing_still_fails():
    """Only an unwritten stub is forgiven: a function that forgot its return statement is a mistake."""
    with pytest.raises(AssertionError):
        exercises.check_bank_update(lambda bank, idx, f, mu: None)
