"""Automatic checks for the notebooks' exercises: each compares your function with a reference.

A check prints a short "correct" message or raises ``AssertionError`` saying what differs. The
references are the package's own functions or small brute-force computations, never stored outputs.

An exercise the learner has not written yet (its stub raises ``NotImplementedError``, or the answer is
still ``None``) is not an error: the check prints "not attempted yet" and returns, so Run All reaches the
last cell in JupyterLab, Colab and VS Code alike (none of them needs a cell tag to go on).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .nce import NCE
from .recipe import lr_drops


def _ok(name):
    print(f"✓ {name}: correct")


def exercise(check):
    """Wrap a ``check_*``: an answer that is ``None``, or a stub that raises ``NotImplementedError``, is reported
    as "not attempted yet" instead of failing; any other mismatch still raises ``AssertionError``."""

    @functools.wraps(check)
    def run(answer, *args, **kwargs):
        if answer is None:
            return _not_attempted(check, "no answer yet (it is None)")
        try:
            return check(answer, *args, **kwargs)
        except NotImplementedError as stub:
            return _not_attempted(check, str(stub) or f"{getattr(answer, '__name__', 'the function')} is still a stub")

    return run


def _not_attempted(check, why: str) -> None:
    print(f"… {check.__name__}: not attempted yet: {why}. The notebook goes on without it; "
          "come back, write your answer, and run this cell again.")


def _self_match(images: torch.Tensor, gen: torch.Generator) -> float:
    """The reference for :func:`check_self_match`."""
    from .augment import AugmentConfig, augment
    from .knn import pixel_mean, raw_pixel_features

    views = augment(images, AugmentConfig(), gen)  # float in [0, 1]
    mean = pixel_mean(images)
    originals, seen = raw_pixel_features(images, mean), raw_pixel_features(views, mean)
    return ((seen @ originals.t()).argmax(dim=1) == torch.arange(len(images))).float().mean().item()


@exercise
def check_self_match(fn) -> None:
    """Notebook 00. ``fn(images, gen)`` augments the uint8 ``images`` once (one ``augment`` call with ``gen``), centres
    the raw pixels of the originals and of the views by the originals' mean image, and returns the share of views
    whose nearest original (cosine) is their own image.

    Checked on shipped CIFAR-10 photos with three generator seeds: the reference draws the same views.
    """
    from .pretrained import load_sample

    reference, _, _ = load_sample()
    for seed in (0, 1, 2):
        images = reference.images[:200]
        expected = _self_match(images, torch.Generator().manual_seed(seed))
        got = fn(images.clone(), torch.Generator().manual_seed(seed))
        assert got is not None, "return the share as a number"
        got = float(got)
        where = f"200 photos, seed {seed}: got {got:.3f}, expected {expected:.3f}."
        assert abs(got - 1.0) > 1e-6 or abs(expected - 1.0) < 1e-6, (
            f"{where} Every view found itself: compare each view with the ORIGINALS, not with the views")
        assert got > 2 / len(images) or expected <= 2 / len(images), (
            f"{where} About chance: are the views compared with the originals of the same images, in the same order?")
        assert abs(got - expected) < 0.5 / len(images), (
            f"{where} Call augment once on the whole batch with gen (the check draws the same views); centre both "
            "sets by pixel_mean(images), the originals' mean; for each VIEW (row) take the most similar original")
    _ok("instance discrimination with raw pixels")


@exercise
def check_age_distribution(fn) -> None:
    """Notebook 02. ``fn(S)`` predicts the age of a bank row when the loss reads it, after the first epoch.

    An epoch is S steps of B images in a fresh random order; a row read at step t that was written at
    step u has age t - u (``MemoryBank.age``). Return P(age = a) for a = 0, 1, ..., 2S (length 2S + 1).
    """
    for S in (1, 2, 3, 7, 25):
        # Reference by enumeration: read at position p of this epoch, written at position q of the last one,
        # p and q independent and uniform on 0..S-1 (each epoch is a fresh permutation).
        ref = torch.zeros(2 * S + 1, dtype=torch.float64)
        for p in range(S):
            for q in range(S):
                ref[S + p - q] += 1.0 / S**2
        got = fn(S)
        assert got is not None, "return the probabilities as a sequence"
        got = torch.as_tensor(got, dtype=torch.float64).flatten()
        assert len(got) == 2 * S + 1, f"S={S}: expected {2 * S + 1} probabilities (ages 0..{2 * S}), got {len(got)}"
        assert abs(float(got.sum()) - 1) < 1e-6, f"S={S}: the probabilities sum to {float(got.sum()):.4f}, not 1"
        mean = float((torch.arange(2 * S + 1) * got).sum())
        assert abs(mean - S) < 1e-6, f"S={S}: your distribution has mean age {mean:.3f}; every image is seen once per epoch"
        assert torch.allclose(got, ref, atol=1e-6), (
            f"S={S}: the mean is right but the shape is not. Age = S + p - q with p the read position in this "
            f"epoch and q the write position in the last; expected {[round(x, 4) for x in ref.tolist()]}")
    _ok("age distribution")


@exercise
def check_z_cap(fn) -> None:
    """Notebook 03. ``fn(m)`` is the largest h (eq. 5) the positive can reach when Z is re-estimated over all 1 + m
    columns, the positive included (lemniscate's estimator, ``z_estimator="all"``).

    The reference is measured with the package's ``NCE``: a positive that scores far above its m noise rows.
    """
    n = 100_000
    for m in (1, 2, 10, 4096):
        nce = NCE(n=n, dim=4, m=m, tau=1.0, z_estimator="all")
        nce.update_Z(torch.tensor([[60.0] + [0.0] * m]))  # s / tau: the positive at 60, every noise row at 0
        P = math.exp(60.0 - float(nce.log_Z))  # eq. 4
        measured = P / (P + m / n)  # eq. 5
        got = fn(m)
        assert got is not None, "return the cap as a number"
        assert abs(float(got) - measured) < 1e-4, (
            f"m={m}: you give {float(got):.5f}, the package's NCE measures {measured:.5f}. Z over the 1 + m columns is "
            "at least the positive's own term, n exp(s+) / (m + 1): bound P = exp(s+) / Z, then put it into eq. 5")
    _ok("the cap on h")


@exercise
def check_proximal_grad(fn) -> None:
    """Notebook 04. ``fn(features, previous, lam)`` returns, by hand, the gradient of :func:`~.proximal.proximal_term`
    (``lam * ||f_i - v_i||^2`` averaged over the batch, eq. 8) with respect to ``features``: (B, d).

    The reference is autograd on the package's term. Your function runs under ``torch.inference_mode()``,
    where autograd is off: derive it, do not differentiate it.
    """
    from .proximal import proximal_term

    g = torch.Generator().manual_seed(0)
    for B, lam in ((5, 10.0), (5, 50.0), (1, 30.0), (8, 0.0)):
        f, v = F.normalize(torch.randn(B, 4, generator=g), dim=1), F.normalize(torch.randn(B, 4, generator=g), dim=1)
        leaf = f.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(proximal_term(leaf, v, lam), leaf) if lam else (torch.zeros_like(f),)
        try:
            with torch.inference_mode():
                got = fn(f.clone(), v.clone(), lam)
        except NotImplementedError:  # a stub (a RuntimeError too): the wrapper reports it as not attempted
            raise
        except RuntimeError as error:
            raise AssertionError(f"your function raised {error!r}. It runs with autograd off "
                                 "(torch.inference_mode): write the derivative as a formula") from error
        assert got is not None and tuple(got.shape) == (B, 4), f"B={B}: expected a ({B}, 4) gradient, one row per feature"
        if not torch.allclose(got.double(), ref.double(), atol=1e-5):
            hint = ("the sign is flipped: the gradient points from v to f, so a descent step pulls f back towards v"
                    if torch.allclose(got.double(), -ref.double(), atol=1e-5) else
                    "compare with 2 * lam * (f - v) / B: the 2 from the square, the 1/B from the batch mean")
            raise AssertionError(f"B={B}, lam={lam}: your gradient differs from autograd's; {hint}")
    _ok("gradient of the proximal term")


def _drop_gains(records: dict) -> dict:
    """The reference for :func:`check_drop_gains`."""
    out = {}
    for name, r in records.items():
        drops = lr_drops(r["config"]["epochs"], tuple(r["config"]["lr_milestones"]))
        knn = {h["epoch"]: h["knn_top1"] for h in r["history"] if "knn_top1" in h}
        out[name] = tuple(100 * (knn[min(e for e in knn if e > d)] - knn[max(e for e in knn if e <= d)]) for d in drops)
    return out


@exercise
def check_drop_gains(fn, records: dict) -> None:
    """Notebook 06. ``fn(records)`` returns ``{name: (first, second)}``: for each record, the kNN change in points
    across each learning-rate drop, from the last evaluation at or before the drop's epoch to the first one after
    it. The drops are at the record's own ``lr_milestones`` fractions of its ``epochs``, rounded."""
    from . import records as shipped

    short = shipped.load_experiment("table1")  # 10 epochs, kNN every 2: drops after epochs 6 and 8
    for name, chosen in (("the 200-epoch records", records), ("the 10-epoch records", short)):
        ref = _drop_gains(chosen)
        try:
            got = fn(chosen)
        except (KeyError, ValueError, IndexError) as error:
            raise AssertionError(f"{name}: your function raised {error!r}. Take each run's drops from its own config "
                                 "(lr_milestones x epochs, rounded), not the 200-epoch run's 120 and 160") from error
        assert got is not None and sorted(got) == sorted(ref), f"{name}: expected one entry per record, {sorted(ref)}"
        for key, (first, second) in ref.items():
            g = tuple(got[key])
            assert len(g) == 2 and all(math.isclose(x, y, abs_tol=0.05) for x, y in zip(g, (first, second))), (
                f"{name}, {key}: got {g}, expected ({first:.2f}, {second:.2f}) points: after minus before, x100")
    _ok("what the learning-rate drops bought")


@exercise
def check_visit_gaps(gaps) -> None:
    """Notebook 07. ``gaps``: the sorted visit gaps for n=8, D=4, S=2, B=2, no shuffle, over two cycles (8 windows)."""
    from .samplers import SlidingWindowSampler, visit_gaps

    sampler = SlidingWindowSampler(n=8, window=4, stride=2, shuffle=False)
    reference = sorted(visit_gaps([b for e in range(8) for b in sampler.window(e).split(2)]).tolist())
    assert gaps is not None and sorted(gaps) == reference, "not yet: write out at which steps each instance is seen"
    _ok("visit gaps")


@exercise
def check_peak_probability(fn) -> None:
    """Notebook 01. ``fn(n, cosine, tau)`` returns the P(i | v) of eq. 2 for the image's own row when that row is
    v itself (cosine 1) and each of the other n - 1 rows has cosine ``cosine`` with v: the most eq. 2 can give it."""
    for n, c, tau in ((2, 0.0, 1.0), (10, 0.5, 0.1), (50_000, 0.9, 0.07), (50_000, 0.9, 1.0), (1_281_167, 0.3, 0.07)):
        ref = 1.0 / (1.0 + (n - 1) * math.exp((c - 1.0) / tau))  # e^{1/tau} / (e^{1/tau} + (n - 1) e^{c/tau})
        got = fn(n, c, tau)
        assert got is not None and math.isclose(float(got), ref, rel_tol=1e-6), (
            f"n={n}, cosine={c}, tau={tau}: got {got}, expected {ref:.6g}. The own row gives exp(1/tau), each of the "
            "n - 1 others exp(cosine/tau); the denominator holds all n")
    _ok("the largest P(i | v)")


@exercise
def check_knn_limits(fn) -> None:
    """Notebook 05. ``fn(train_f, train_y, query_f, k, C)`` returns two predictions per query: the weighted vote's
    limit as sigma -> infinity and as sigma -> 0, each a (Q,) tensor of classes."""
    from .knn import knn_scores, rank_classes

    g = torch.Generator().manual_seed(0)
    tf, qf = F.normalize(torch.randn(300, 6, generator=g), dim=1), F.normalize(torch.randn(40, 6, generator=g), dim=1)
    ty = torch.randint(0, 4, (300,), generator=g)
    for k in (5, 20, 60):
        # every vote equal: count the k neighbours' classes, ties to the smaller class (rank_classes' rule)
        _, near = (qf @ tf.t()).topk(k, dim=1)
        counts = torch.zeros(40, 4).scatter_add_(1, ty[near], torch.ones(40, k))
        flat = rank_classes(counts)[:, 0]
        sharp = rank_classes(knn_scores(tf, ty, qf, 1, 0.1, 4))[:, 0]  # only the nearest neighbour counts: 1-NN
        got = fn(tf, ty, qf, k, 4)
        assert got is not None and len(got) == 2, "return a pair: (sigma -> infinity, sigma -> 0)"
        wide, narrow = (torch.as_tensor(x).long() for x in got)
        assert torch.equal(wide, flat), (f"k={k}, sigma -> infinity: {int((wide != flat).sum())} of 40 differ. With every "
                                         "weight exp(s/sigma) -> 1, each of the k neighbours casts one equal vote")
        assert torch.equal(narrow, sharp), (f"k={k}, sigma -> 0: {int((narrow != sharp).sum())} of 40 differ. The largest "
                                            "similarity's weight outgrows all the others together: whatever k is")
    _ok("kNN's two limits")


@exercise
def check_negative_ages(fn) -> None:
    """Notebook 08. ``fn(n, B, K)`` returns ``(bank, queue)``: the mean age, in steps since its last write, of a
    negative drawn uniformly from a memory bank at the end of an epoch (every image visited once, in batches of
    B; n a multiple of B), and of one drawn from a queue of the K most recent features (K a multiple of B)."""
    cases = [  # worked by hand: bank ages 1..n/B, one batch each; queue ages 1..K/B, one batch each
        ((1_600, 64, 256), (13.0, 2.5)),            # the quick set of section 6: S = 25
        ((50_000, 125, 4_000), (200.5, 16.5)),      # CIFAR-10 in batches of 125
        ((1_281_024, 256, 65_536), (2502.5, 128.5)),  # ImageNet-sized, MoCo's K
    ]
    for (n, B, K), ref in cases:
        got = fn(n, B, K)
        assert got is not None and len(got) == 2, "return a pair: (bank, queue)"
        assert all(math.isclose(float(g), r, rel_tol=1e-9) for g, r in zip(got, ref)), (
            f"n={n}, B={B}, K={K}: got {tuple(got)}, expected {ref}. After an epoch the bank's rows were written 1, 2, ..., "
            "n/B steps ago, one batch each; the queue holds the last K/B batches")
    _ok("the age of a negative")


def _stops_paying(records, key, margin):
    """The reference for :func:`check_stops_paying`."""
    ordered = sorted(records, key=lambda r: r["fraction"])
    pays = [100 * (r["finetune_top1"] - r[key]) > margin for r in ordered]
    if pays[-1]:
        return None
    last_paying = max((i for i, p in enumerate(pays) if p), default=-1)
    return ordered[last_paying + 1]["fraction"]


@exercise
def check_stops_paying(fn, semi) -> None:
    """Notebook 09. ``fn(records, key, margin)``: the smallest labelled fraction from which fine-tuning the pretrained
    network no longer beats ``record[key]`` by more than ``margin`` points, at that fraction or any larger one;
    ``None`` if it still does at the largest fraction.

    ``records`` is a list of few-labels records (``fraction``, ``finetune_top1``, ``scratch_top1``,
    ``pretrained_knn_top1``, ...), in any order. Checked on the shipped records and on made-up ones.
    """
    made_up = [  # pays, stops, pays again, then stops for good: the answer is 0.1, not 0.02
        {"fraction": f, "finetune_top1": ft, "scratch_top1": sc, "pretrained_knn_top1": kn, "pretrained_probe_top1": pr}
        for f, ft, sc, kn, pr in ((0.2, 0.50, 0.52, 0.55, 0.495), (0.01, 0.40, 0.30, 0.35, 0.395),
                                  (0.05, 0.47, 0.40, 0.455, 0.45), (0.02, 0.42, 0.35, 0.43, 0.405),
                                  (0.1, 0.49, 0.489, 0.50, 0.485))]
    for records in (list(semi), list(reversed(list(semi))), made_up):
        for key in ("scratch_top1", "pretrained_knn_top1", "pretrained_probe_top1"):
            for margin in (0.0, 1.0):
                ref, got = _stops_paying(records, key, margin), fn(records, key, margin)
                shipped = "the shipped records" if records is not made_up else "made-up records"
                assert got == ref, (
                    f"{shipped}, key={key!r}, margin={margin}: got {got}, expected {ref}. Sort by fraction; 'pays' is "
                    "finetune_top1 - record[key] > margin / 100; the answer is the fraction after the LAST one that pays")
    _ok("where fine-tuning stops paying")
