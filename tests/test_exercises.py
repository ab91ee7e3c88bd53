"""Every exercise check accepts a correct answer and rejects plausible wrong ones (so it can fail).

Reference for each wrong answer: the mistake named beside it, which a learner could make; the check must raise
``AssertionError`` for it. Every ``check_*`` in ``instdisc_lesson/exercises.py`` has a case here (a test checks that).
"""
import functools
import math

import pytest
import torch

from instdisc_lesson import exercises, records
from instdisc_lesson.knn import rank_classes
from instdisc_lesson.proximal import proximal_term

TABLE1 = records.load_experiment("table1")
SEMI = list(records.load_experiment("semi_supervised").values())
PAPER200 = records.load_experiment("paper200")


# -- right answers -------------------------------------------------------------------------------------------
def flip_right(batch, p, gen):
    coins = torch.rand(batch.shape[0], generator=gen) < p
    return torch.where(coins.view(-1, 1, 1, 1), batch.flip(-1), batch)


def age_right(S):
    return [max(0, S - abs(a - S)) / S**2 for a in range(2 * S + 1)]


def mc_right(bank, f, tau, m, gen):
    j = torch.randint(0, len(bank), (m,), generator=gen)
    return len(bank) * torch.exp(f @ bank[j].t() / tau).mean()


def gaps_right(table1):
    softmax = next(r for r in table1.values() if r["config"]["objective"] == "softmax")["knn_top1"]
    return {r["config"]["nce_m"]: 100 * (softmax - r["knn_top1"]) for r in table1.values() if r["config"]["objective"] == "nce"}


def gaps_first_is_softmax(table1):  # takes the first record whose objective is not NCE as the softmax: the parametric
    rows = list(table1.values())
    softmax = next(r for r in rows if r["config"]["objective"] != "nce")["knn_top1"]
    return {r["config"]["nce_m"]: 100 * (softmax - r["knn_top1"]) for r in rows if r["config"]["objective"] == "nce"}


def grad_right(f, v, lam):
    return 2 * lam * (f - v) / f.shape[0]


def stops_right(records_, key, margin):
    ordered = sorted(records_, key=lambda r: r["fraction"])
    answer = None
    for r in reversed(ordered):          # walk down from the largest fraction while it does not pay
        if 100 * (r["finetune_top1"] - r[key]) > margin:
            break
        answer = r["fraction"]
    return answer


# -- plausible wrong answers ---------------------------------------------------------------------------------
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


def peak_right(n, c, tau):
    return math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1) * math.exp(c / tau)) if tau > 0.2 else \
        1 / (1 + (n - 1) * math.exp((c - 1) / tau))


def limits_right(tf, ty, qf, k, C):
    near = (qf @ tf.t()).topk(k, dim=1).indices
    counts = torch.zeros(len(qf), C).scatter_add_(1, ty[near], torch.ones(len(qf), k))
    return rank_classes(counts)[:, 0], ty[(qf @ tf.t()).argmax(1)]


def limits_bincount_argmax(tf, ty, qf, k, C):  # ties to the LARGER class: torch.argmax is not rank_classes' rule
    wide, narrow = limits_right(tf, ty, qf, k, C)
    near = (qf @ tf.t()).topk(k, dim=1).indices
    counts = torch.stack([torch.bincount(ty[i], minlength=C) for i in near]).float()
    return counts.flip(1).argmax(1).neg().add(C - 1), narrow


def drops_fixed(recs):  # the 200-epoch run's drops for every run
    out = {}
    for name, r in recs.items():
        knn = {h["epoch"]: h["knn_top1"] for h in r["history"] if "knn_top1" in h}
        out[name] = tuple(100 * (knn[d + 10] - knn[d]) for d in (120, 160))
    return out


def drops_to_end(recs):  # the gain from each drop to the last evaluation
    out = {}
    for name, r in recs.items():
        knn = {h["epoch"]: h["knn_top1"] for h in r["history"] if "knn_top1" in h}
        drops = [round(f * r["config"]["epochs"]) for f in r["config"]["lr_milestones"]]
        out[name] = tuple(100 * (knn[max(knn)] - knn[max(e for e in knn if e <= d)]) for d in drops)
    return out


def grad_by_autograd(f, v, lam):  # right numbers, but differentiated, not derived: the check runs without autograd
    leaf = f.clone().requires_grad_(True)
    return torch.autograd.grad(proximal_term(leaf, v, lam), leaf)[0]


CASES = [  # (check, right answer, {mistake: wrong answer})
    (exercises.check_flip, flip_right, {
        "one coin per batch": lambda b, p, g: b.flip(-1) if torch.rand(1, generator=g) < p else b,
        "flips with probability 1 - p": lambda b, p, g: flip_right(b, 1 - p, g),
        "flips upside down": lambda b, p, g: torch.where((torch.rand(b.shape[0], generator=g) < p).view(-1, 1, 1, 1), b.flip(-2), b)}),
    (exercises.check_peak_probability, peak_right, {
        "n - 1 forgotten (n others)": lambda n, c, t: 1 / (1 + n * math.exp((c - 1) / t)),
        "tau forgotten": lambda n, c, t: 1 / (1 + (n - 1) * math.exp(c - 1)),
        "the own row left out of the denominator": lambda n, c, t: math.exp((1 - c) / t) / (n - 1),
        "uniform, 1/n": lambda n, c, t: 1 / n}),
    (exercises.check_age_distribution, age_right, {
        "every age is S (no shuffle)": lambda S: [float(a == S) for a in range(2 * S + 1)],
        "geometric (drawn with replacement)": lambda S: [0.0] + [(1 - 1 / S) ** (a - 1) / S for a in range(1, 2 * S + 1)],
        "uniform on 1..2S-1": lambda S: [0.0] + [1 / (2 * S - 1)] * (2 * S - 1) + [0.0],
        "off by one (peak at S + 1)": lambda S: [0.0] + age_right(S)[:-1]}),
    (exercises.check_mc_Z, mc_right, {
        "n forgotten": lambda b, f, t, m, g: torch.exp(f @ b[torch.randint(0, len(b), (m,), generator=g)].t() / t).mean(),
        "the first m rows, not a sample": lambda b, f, t, m, g: len(b) * torch.exp(f @ b[:m].t() / t).mean(),
        "tau forgotten": lambda b, f, t, m, g: mc_right(b, f, 1.0, m, g)}),
    (functools.partial(exercises.check_table1_gaps, table1=TABLE1), gaps_right, {
        "fraction, not points": lambda t: {m: g / 100 for m, g in gaps_right(t).items()},
        "sign reversed": lambda t: {m: -g for m, g in gaps_right(t).items()},
        "parametric taken for the softmax": gaps_first_is_softmax,
        "numbers copied from the table": lambda t: gaps_right(TABLE1)}),
    (exercises.check_knn_limits, limits_right, {
        "swapped: 1-NN for sigma -> infinity": lambda tf, ty, qf, k, C: limits_right(tf, ty, qf, k, C)[::-1],
        "sigma -> 0 still a vote of k": lambda tf, ty, qf, k, C: (limits_right(tf, ty, qf, k, C)[0],) * 2,
        "ties to the larger class": limits_bincount_argmax}),
    (exercises.check_proximal_grad, grad_right, {
        "sign flipped": lambda f, v, lam: 2 * lam * (v - f) / f.shape[0],
        "the 2 forgotten": lambda f, v, lam: lam * (f - v) / f.shape[0],
        "batch mean forgotten": lambda f, v, lam: 2 * lam * (f - v),
        "autograd instead of a derivation": grad_by_autograd}),
    (functools.partial(exercises.check_drop_gains, records=PAPER200), exercises._drop_gains, {
        "the paper's 120 and 160 for every run": drops_fixed,
        "fractions, not points": lambda r: {k: tuple(x / 100 for x in v) for k, v in exercises._drop_gains(r).items()},
        "before minus after": lambda r: {k: tuple(-x for x in v) for k, v in exercises._drop_gains(r).items()},
        "from the drop to the run's end": drops_to_end}),
    (exercises.check_negative_ages, lambda n, B, K: ((n // B + 1) / 2, (K // B + 1) / 2), {
        "ages from 0 (n/B - 1)": lambda n, B, K: ((n // B - 1) / 2, (K // B - 1) / 2),
        "every row one epoch old": lambda n, B, K: (n // B, (K // B + 1) / 2),
        "the queue's age in features, not steps": lambda n, B, K: ((n // B + 1) / 2, (K + 1) / 2),
        "swapped": lambda n, B, K: ((K // B + 1) / 2, (n // B + 1) / 2)}),
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
    extra = {"check_table1_gaps": (TABLE1,), "check_stops_paying": (SEMI,), "check_drop_gains": (PAPER200,)}.get(check, ())
    for answer in (_stub, None):
        fn(answer, *extra)
        out = capsys.readouterr().out
        assert "not attempted yet" in out and "correct" not in out, out


def test_a_wrong_answer_that_returns_nothing_still_fails():
    """Only an unwritten stub is forgiven: a function that forgot its return statement is a mistake."""
    with pytest.raises(AssertionError):
        exercises.check_peak_probability(lambda n, c, tau: None)
