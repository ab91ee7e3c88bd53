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


@exercise
def check_flip(fn) -> None:
    """Notebook 00. ``fn(batch, p, gen)`` flips each image horizontally with probability p, independently."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    assert torch.equal(fn(x, 1.0, g), x.flip(-1)), "with p = 1 every image must be mirrored (x.flip(-1))"
    assert torch.equal(fn(x, 0.0, g), x), "with p = 0 the batch must come back unchanged"
    same = x[:1].expand(400, -1, -1, -1)
    out = fn(same, 0.5, g)
    flipped = (out - same.flip(-1)).flatten(1).abs().amax(1) < 1e-7
    kept = (out - same).flatten(1).abs().amax(1) < 1e-7
    assert bool((flipped | kept).all()), "each output must be either the image or its mirror"
    rate = flipped.float().mean().item()
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / 400), f"p = 0.5 flipped {rate:.0%} of 400 copies: draw one coin per image"
    _ok("per-sample flip")


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
def check_mc_Z(fn) -> None:
    """Notebook 03. ``fn(bank, f, tau, m, gen)`` estimates Z = sum_j exp(v_j.f/tau) from m uniform samples (eq. 7)."""
    g = torch.Generator().manual_seed(0)
    bank, f = F.normalize(torch.randn(2000, 8, generator=g), dim=1), F.normalize(torch.randn(1, 8, generator=g), dim=1)
    bank = bank[(f @ bank.t())[0].argsort(descending=True)]  # rows sorted by score: the first m are not a sample
    X = torch.exp(f @ bank.t() / 0.1)[0].double()
    Z, cv = X.sum().item(), (X.std(unbiased=False) / X.mean()).item()
    for m in (20000, 500):
        est = float(fn(bank, f, 0.1, m, torch.Generator().manual_seed(1)))
        assert abs(est / Z - 1) < 5 * cv / math.sqrt(m), (
            f"m={m}: estimate {est:.4g} vs exact Z {Z:.4g}: draw the m rows uniformly at random and scale the mean by n")
    _ok("Monte-Carlo Z")


@exercise
def check_table1_gaps(fn, table1: dict) -> None:
    """Notebook 06. ``fn(table1)`` returns ``{m: points by which NCE with m noise samples trails the full softmax}``."""
    shifted = {name: {**r, "knn_top1": r["knn_top1"] - 0.01 * k} for k, (name, r) in enumerate(reversed(table1.items()))}
    for records in (table1, shifted):  # the records in the notebook's order, then reversed with other numbers
        softmax = next(r for r in records.values() if r["config"]["objective"] == "softmax")["knn_top1"]
        ref = {r["config"]["nce_m"]: 100 * (softmax - r["knn_top1"])
               for r in records.values() if r["config"]["objective"] == "nce"}
        got = fn(records)
        assert got is not None and sorted(got) == sorted(ref), f"expected one entry per NCE record, m in {sorted(ref)}"
        for m in ref:
            assert math.isclose(got[m], ref[m], abs_tol=0.05), (
                f"m={m}: got {got[m]:.2f}, expected {ref[m]:.2f} (softmax's knn_top1 minus NCE's, in points; "
                "find the records by their config, not by position)")
    _ok("Table 1 gaps")


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
