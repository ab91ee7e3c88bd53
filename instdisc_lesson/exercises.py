"""Automatic checks for the notebooks' exercises: each compares your function with a reference.

A check prints a short "correct" message or raises ``AssertionError`` saying what differs. The
references are the package's own functions or small brute-force computations, never stored outputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ok(name):
    print(f"✓ {name}: correct")


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


def check_softmax_probabilities(fn) -> None:
    """Notebook 01. ``fn(features, bank, tau)`` returns P(i | f) of eq. 2 for every bank row: (B, n)."""
    g = torch.Generator().manual_seed(0)
    bank, f = F.normalize(torch.randn(50, 8, generator=g), dim=1), F.normalize(torch.randn(4, 8, generator=g), dim=1)
    for tau in (0.07, 0.5):
        P = fn(f, bank, tau)
        assert P.shape == (4, 50), f"expected shape (4, 50), got {tuple(P.shape)}"
        ref = torch.tensor([[math.exp(float(v @ q) / tau) for v in bank] for q in f])
        ref = ref / ref.sum(1, keepdim=True)
        assert torch.allclose(P.double(), ref.double(), atol=1e-5), f"P differs from exp(v.f/tau) / sum_j exp(v_j.f/tau) at tau={tau}"
    _ok("non-parametric softmax")


def check_bank_update(fn) -> None:
    """Notebook 02. ``fn(bank, idx, features, mu)`` returns the bank after v_i <- normalize(mu v_i + (1-mu) f_i)."""
    g = torch.Generator().manual_seed(0)
    bank, f = F.normalize(torch.randn(20, 4, generator=g), dim=1), F.normalize(torch.randn(3, 4, generator=g), dim=1)
    idx = torch.tensor([2, 9, 17])
    out = fn(bank.clone(), idx, f, 0.5)
    mixed = 0.5 * bank[idx].double() + 0.5 * f.double()
    ref = bank.double().clone()
    ref[idx] = mixed / mixed.norm(dim=1, keepdim=True)
    assert torch.allclose(out.double(), ref, atol=1e-6), "rows idx must be m*v + (1-m)*f, renormalised; the others unchanged"
    _ok("memory-bank update")


def check_mc_Z(fn) -> None:
    """Notebook 03. ``fn(bank, f, tau, m, gen)`` estimates Z = sum_j exp(v_j.f/tau) from m uniform samples (eq. 7)."""
    g = torch.Generator().manual_seed(0)
    bank, f = F.normalize(torch.randn(2000, 8, generator=g), dim=1), F.normalize(torch.randn(1, 8, generator=g), dim=1)
    X = torch.exp(f @ bank.t() / 0.1)[0].double()
    Z, cv = X.sum().item(), (X.std(unbiased=False) / X.mean()).item()
    est = float(fn(bank, f, 0.1, 20000, torch.Generator().manual_seed(1)))
    assert abs(est / Z - 1) < 5 * cv / math.sqrt(20000), f"estimate {est:.4g} vs exact Z {Z:.4g}: scale the sample mean by n"
    _ok("Monte-Carlo Z")


def check_nce_loss(fn) -> None:
    """Notebook 03. ``fn(scores, log_Z, n)`` returns J_NCE (eq. 6) from scores (B, 1 + m), column 0 the positive."""
    from .nce import nce_loss

    g = torch.Generator().manual_seed(0)
    for m, n, log_Z in ((1, 100, 5.0), (16, 1000, 9.0), (256, 50_000, 12.0)):
        scores = torch.randn(6, 1 + m, generator=g, dtype=torch.float64) * 3 + 8
        ref = sum(-math.log(math.exp(s[0] - log_Z) / (math.exp(s[0] - log_Z) + m / n))
                  - sum(math.log((m / n) / (math.exp(v - log_Z) + m / n)) for v in s[1:])
                  for s in scores.tolist()) / 6  # eq. 6 term by term, float64
        got = float(fn(scores, log_Z, n))
        assert math.isclose(got, ref, rel_tol=1e-6), f"m={m}, n={n}: got {got:.6g}, eq. 6 gives {ref:.6g}"
        assert math.isclose(float(nce_loss(scores, log_Z, n)), ref, rel_tol=1e-6)  # the package agrees too
    _ok("NCE loss")


def check_table1_gaps(fn, table1: dict) -> None:
    """Notebook 06. ``fn(table1)`` returns ``{m: points by which NCE with m noise samples trails the full softmax}``."""
    softmax = next(r for r in table1.values() if r["config"]["objective"] == "softmax")["knn_top1"]
    ref = {r["config"]["nce_m"]: 100 * (softmax - r["knn_top1"]) for r in table1.values() if r["config"]["objective"] == "nce"}
    got = fn(table1)
    assert got is not None and sorted(got) == sorted(ref), f"expected one entry per NCE record, m in {sorted(ref)}"
    for m in ref:
        assert math.isclose(got[m], ref[m], abs_tol=0.05), \
            f"m={m}: got {got[m]:.2f}, expected {ref[m]:.2f} (softmax's knn_top1 minus NCE's, in points)"
    _ok("Table 1 gaps")


def check_knn_predict(fn) -> None:
    """Notebook 05. ``fn(train_f, train_y, query_f, k, sigma, C)`` returns the predicted class per query."""
    from .knn import knn_scores, rank_classes

    g = torch.Generator().manual_seed(0)
    tf, qf = F.normalize(torch.randn(200, 6, generator=g), dim=1), F.normalize(torch.randn(30, 6, generator=g), dim=1)
    ty = torch.randint(0, 5, (200,), generator=g)
    for k in (1, 10, 50):
        ref = rank_classes(knn_scores(tf, ty, qf, k, 0.1, 5))[:, 0]
        got = torch.as_tensor(fn(tf, ty, qf, k, 0.1, 5))
        assert torch.equal(got.long(), ref), f"k={k}: {int((got != ref).sum())} of 30 predictions differ from the weighted vote"
    _ok("weighted kNN")


def check_proximal(fn) -> None:
    """Notebook 04. ``fn(features, previous, lam)`` returns lam * ||f_i - v_i||^2 averaged over the batch (eq. 8)."""
    g = torch.Generator().manual_seed(0)
    f, v = F.normalize(torch.randn(5, 4, generator=g), dim=1), F.normalize(torch.randn(5, 4, generator=g), dim=1)
    for lam in (0.0, 10.0, 50.0):
        ref = lam * sum(float(((a - b) ** 2).sum()) for a, b in zip(f, v)) / 5
        got = float(fn(f, v, lam))
        assert math.isclose(got, ref, rel_tol=1e-5, abs_tol=1e-7), f"lam={lam}: got {got:.5g}, expected {ref:.5g}"
    _ok("proximal term")


def check_milestones(fn) -> None:
    """Notebook 06. ``fn(epochs)`` returns the epochs after which the learning rate drops x0.1 (paper: 120, 160 of 200)."""
    for epochs, ref in ((200, [120, 160]), (50, [30, 40]), (12, [7, 10])):
        got = list(fn(epochs))
        assert got == ref, f"epochs={epochs}: got {got}, expected {ref} (60 % and 80 % of the run, rounded)"
    _ok("learning-rate milestones")


def check_visit_gaps(gaps) -> None:
    """Notebook 07. ``gaps``: the sorted visit gaps for n=8, D=4, S=2, B=2, no shuffle, over two cycles (8 windows)."""
    from .samplers import SlidingWindowSampler, visit_gaps

    sampler = SlidingWindowSampler(n=8, window=4, stride=2, shuffle=False)
    reference = sorted(visit_gaps([b for e in range(8) for b in sampler.window(e).split(2)]).tolist())
    assert gaps is not None and sorted(gaps) == reference, "not yet: write out at which steps each instance is seen"
    _ok("visit gaps")


def check_bank_megabytes(fn) -> None:
    """Notebook 08. ``fn(n, d, bytes_per_value, gpus, sharded)`` returns the bank's megabytes (10^6 bytes) on
    each GPU: all n rows on every GPU (replicated), or n / gpus rows each (sharded, rounded up)."""
    cases = [  # worked by hand: n x d x bytes, / 1e6
        ((50_000, 128, 4, 1, False), 25.6),          # CIFAR-10, float32
        ((1_281_167, 128, 4, 8, False), 655.957504),  # ImageNet, float32, on each of 8 GPUs
        ((1_281_167, 128, 2, 8, False), 327.978752),  # ... in float16
        ((1_281_167, 128, 2, 8, True), 40.997376),    # float16, sharded over 8: 160,146 rows each
    ]
    for args, ref in cases:
        got = fn(*args)
        assert got is not None and abs(got - ref) < 1e-3, (
            f"n={args[0]}, d={args[1]}, {args[2]} bytes per value, {args[3]} GPUs, sharded={args[4]}: "
            f"got {got}, expected {ref:.6g} MB")
    _ok("bank memory per GPU")


def check_balanced_subset(fn) -> None:
    """Notebook 09. ``fn(labels, per_class, gen)`` returns the indices of ``per_class`` images drawn at random
    from every class (no image twice): the labelled images of a few-labels experiment."""
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    idx = fn(labels, 2, torch.Generator().manual_seed(0))
    assert idx is not None, "return a tensor of indices"
    idx = torch.as_tensor(idx).flatten().long()
    assert len(idx) == 6 and len(set(idx.tolist())) == 6, f"3 classes x 2 = 6 distinct indices, got {idx.tolist()}"
    assert bool(((idx >= 0) & (idx < len(labels))).all()), f"indices must lie in 0..{len(labels) - 1}, got {idx.tolist()}"
    assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 2, 2], (
        f"two images of each class, got labels {labels[idx].tolist()}")
    # Random within each class: over 400 draws each of class 1's four images is picked about 1/4 of the time.
    g = torch.Generator().manual_seed(1)
    picks = torch.stack([torch.as_tensor(fn(labels, 1, g)).flatten().long() for _ in range(400)])
    counts = torch.tensor([(picks == i).sum().item() for i in range(3, 7)], dtype=torch.float)
    assert bool(((counts - 100).abs() < 4 * math.sqrt(400 * 0.25 * 0.75)).all()), (
        f"class 1's images 3-6 were picked {counts.int().tolist()} times in 400 draws of one per class: "
        "draw at random within each class (torch.randperm with gen), not the first ones")
    _ok("balanced subset")
