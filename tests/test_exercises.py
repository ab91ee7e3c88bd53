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
from instdisc_lesson.augment import AugmentConfig, augment
from instdisc_lesson.knn import pixel_mean, rank_classes
from instdisc_lesson.proximal import proximal_term

SEMI = list(records.load_experiment("semi_supervised").values())
PAPER200 = records.load_experiment("paper200")


# -- right answers -------------------------------------------------------------------------------------------
def _features(x, mean):
    return F.normalize(x.float().flatten(1) - mean, dim=1)


def _share(views_f, originals_f, dim=1):
    return ((views_f @ originals_f.t()).argmax(dim) == torch.arange(len(originals_f))).float().mean().item()


def self_match_right(images, gen):  # floats throughout, no round trip through uint8: the same share
    views = augment(images, AugmentConfig(), gen)
    mean = pixel_mean(images)
    return _share(_features(views, mean), _features(images / 255, mean))


def self_match_views_vs_views(images, gen):  # each view's nearest view is itself: 1.0
    views_f = _features(augment(images, AugmentConfig(), gen), pixel_mean(images))
    return _share(views_f, views_f)


def self_match_not_centred(images, gen):
    zero = torch.zeros(images[0].numel())
    return _share(_features(augment(images, AugmentConfig(), gen), zero), _features(images / 255, zero))


def self_match_own_means(images, gen):  # each set centred by its own mean image
    views = augment(images, AugmentConfig(), gen)
    return _share(_features(views, views.flatten(1).mean(0)), _features(images / 255, pixel_mean(images)))


def self_match_wrong_axis(images, gen):  # the nearest view of each original
    views = augment(images, AugmentConfig(), gen)
    mean = pixel_mean(images)
    return _share(_features(views, mean), _features(images / 255, mean), dim=0)


def self_match_originals_unscaled(images, gen):  # by hand, the uint8 originals left in 0-255 beside views in [0, 1]
    views = augment(images, AugmentConfig(), gen)
    mean = pixel_mean(images)
    return _share(_features(views, mean), _features(images, mean))


def age_right(S):
    return [max(0, S - abs(a - S)) / S**2 for a in range(2 * S + 1)]


def cap_right(m):
    return (m + 1) / (2 * m + 1)


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
    (exercises.check_self_match, self_match_right, {
        "views compared with views": self_match_views_vs_views,
        "pixels not centred": self_match_not_centred,
        "each set centred by its own mean": self_match_own_means,
        "argmax over the wrong axis (nearest view of each original)": self_match_wrong_axis,
        "the originals left in 0-255, the views in [0, 1]": self_match_originals_unscaled}),
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
    (exercises.check_z_cap, cap_right, {
        "the m = 1 answer for every m": lambda m: 2 / 3,
        "the prior m / (m + 1)": lambda m: m / (m + 1),
        "no cap (eq. 7's noise-only Z)": lambda m: 1.0,
        "P bounded by 1/n, the positive's term alone": lambda m: 1 / (1 + m),
        "a half, whatever m": lambda m: 0.5}),
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
    extra = {"check_stops_paying": (SEMI,), "check_drop_gains": (PAPER200,)}.get(check, ())
    for answer in (_stub, None):
        fn(answer, *extra)
        out = capsys.readouterr().out
        assert "not attempted yet" in out and "correct" not in out, out


def test_a_wrong_answer_that_returns_nothing_still_fails():
    """Only an unwritten stub is forgiven: a function that forgot its return statement is a mistake."""
    with pytest.raises(AssertionError):
        exercises.check_peak_probability(lambda n, c, tau: None)
