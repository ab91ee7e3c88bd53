"""Checks on the code the trainer runs: each objective against its equation, written out by hand in float64.

Taught in notebooks 01 (eqs. 1-2), 02 (the bank's update), 03 (NCE, eqs. 5-7, both Z modes) and 07 (PIC).
Every check takes an objective as ``registry.build_objective(cfg, n)`` builds it for a run (the module
the trainer calls ``loss = objective(features, idx, gen)`` and ``objective.after_step(...)`` on), works
on a copy of it, feeds it one or two fixed batches and compares:

* the loss of a batch with the paper's equation computed by hand from the same features, bank or weights
  and tau (plus lam * ||f_i - v_i||^2, eq. 8, when the objective has a proximal weight);
* the state after ``after_step`` (or the optimizer's step, for PIC's rows) with the update written by hand.

A check prints what it compared and raises ``AssertionError`` naming the first difference. The objective
given is never changed. ``tests/test_objective_checks.py`` feeds each check objectives with a plausible
one-line bug and asserts that it fails.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import torch

B = 8  # the batch of every check


def _batch(n: int, dim: int, seed: int, unit: bool = True, scale: float = 1.0):
    """Fixed features (B, dim) (unit rows, or raw with the given scale) and B distinct indices."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, dim, generator=g) * scale
    if unit:
        f = f / f.norm(dim=1, keepdim=True)
    return f, torch.randperm(n, generator=g)[:B]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _same(got, ref, what: str, tol: float = 1e-5) -> None:
    got, ref = float(torch.as_tensor(got).detach()), float(ref)
    assert math.isclose(got, ref, rel_tol=tol, abs_tol=tol), f"{what}: the objective gives {got:.6f}, by hand {ref:.6f}"


def _proximal(f: torch.Tensor, v: torch.Tensor, lam: float) -> float:
    """Eq. 8's lam * ||f_i - v_i||^2, averaged over the batch, in float64."""
    return lam * float(((f.double() - v.double()) ** 2).sum(1).mean())


def _bank_rows(before: torch.Tensor, idx, f, mu: float) -> torch.Tensor:
    """The bank after ``v_i <- normalize(mu v_i + (1 - mu) f_i)`` for the rows of idx, in float64."""
    after = before.clone()
    after[idx] = _unit(mu * before[idx] + (1 - mu) * f.double())
    return after


def _check_bank_update(objective, f, idx, name: str) -> str:
    """The bank after ``after_step``, at the objective's own mu and at mu = 0.9 (0.5 alone cannot tell mu from 1 - mu)."""
    mus = tuple(dict.fromkeys((objective.memory.momentum, 0.9)))
    for mu in mus:
        obj = copy.deepcopy(objective)
        obj.memory.momentum = mu
        before = obj.memory.bank.double().clone()
        obj(f, idx, torch.Generator().manual_seed(0))
        obj.after_step(f, idx)
        ref, after = _bank_rows(before, idx, f, mu), obj.memory.bank.double()
        assert torch.allclose(after[idx], ref[idx], atol=1e-6), (
            f"{name}: bank rows after after_step differ from normalize(mu v_i + (1 - mu) f_i) at mu = {mu} "
            "(mu weighs the OLD row)")
        outside = ~torch.isin(torch.arange(len(ref)), idx)
        assert torch.equal(after[outside], before[outside]), f"{name}: after_step changed bank rows outside the batch"
    return f"bank rows = normalize(mu v + (1 - mu) f) at mu = {', '.join(str(m) for m in mus)}"


def check_softmax_objective(objective) -> None:
    """The non-parametric softmax (``NonParametricSoftmax``): eq. 2's -log P(i | f_i) and the bank's update.

    By hand: ``-log P(i | f) = -(v_i^T f / tau - log sum_j exp(v_j^T f / tau))`` over all n bank rows.
    Catches: a temperature dropped or applied twice, the positive taken from the wrong row, the bank's
    momentum weights swapped (mu on the new feature), a row left unnormalised, rows outside the batch touched.
    """
    obj = copy.deepcopy(objective)
    n, d, tau = obj.memory.n, obj.memory.dim, obj.tau
    f, idx = _batch(n, d, seed=1)
    V, fd = obj.memory.bank.double().clone(), f.double()
    s = fd @ V.t() / tau  # (B, n): v_j^T f / tau
    ref = -(s[torch.arange(B), idx] - torch.logsumexp(s, dim=1)).mean().item() + _proximal(f, V[idx], obj.lam)
    _same(obj(f, idx), ref, "eq. 2's loss")
    update = _check_bank_update(objective, f, idx, "softmax")
    print(f"✓ eq. 2 through {type(objective).__name__}: loss {ref:.5f} on n = {n}, tau = {tau} "
          f"(by hand, float64); {update}")


def check_parametric_objective(objective, lr: float = 0.5, weight_decay: float = 5e-4) -> None:
    """The parametric softmax (``ParametricSoftmax``): eq. 1 on the network's raw output, no bias, no tau, and
    one step of the optimizer it asks for.

    By hand: ``-log P(i | v) = -(w_i^T v - log sum_j exp(w_j^T v))`` with v as the network gives it; the
    gradient ``dL/dW = (P - Y)^T v / B`` (Y the one-hot targets); SGD ``W <- W - lr (dL/dW + wd W)``.
    Catches: v (or w) normalised, a temperature, a bias, the wrong target, an optimizer without weight decay,
    state changed by ``after_step``.
    """
    obj = copy.deepcopy(objective)
    W = obj.classifier.weight.detach().double().clone()
    n, d = W.shape
    v, idx = _batch(n, d, seed=2, unit=False, scale=3.0)  # raw output, norm ~ 3 sqrt(d): normalising it shows
    s = v.double() @ W.t()  # (B, n): w_j^T v
    ref = -(s[torch.arange(B), idx] - torch.logsumexp(s, dim=1)).mean().item()
    optimizer = obj.make_optimizer(obj.parameters(), SimpleNamespace(lr=lr, momentum=0.9, weight_decay=weight_decay))
    loss = obj(v, idx)
    _same(loss, ref, "eq. 1's loss")
    loss.backward()
    optimizer.step()
    P = torch.softmax(s, dim=1)
    P[torch.arange(B), idx] -= 1
    W_ref = W - lr * (P.t() @ v.double() / B + weight_decay * W)
    assert torch.allclose(obj.classifier.weight.double(), W_ref, atol=1e-6), (
        f"the weights after one optimizer step differ from W - lr (dL/dW + wd W), lr {lr}, wd {weight_decay}")
    after = obj.classifier.weight.detach().clone()
    obj.after_step(v, idx)
    assert torch.equal(obj.classifier.weight, after), "eq. 1 keeps no bank: after_step must change nothing"
    print(f"✓ eq. 1 through {type(objective).__name__}: loss {ref:.5f} on n = {n} raw outputs of norm "
          f"~{float(v.norm(dim=1).mean()):.0f}, and the weights after one SGD step (by hand, float64)")


def _nce_scores(V, f, idx, noise, tau):
    """The positive's and the noise rows' ``v^T f / tau`` in float64: (B,) and (B, m)."""
    fd = f.double()
    return (V[idx] * fd).sum(1) / tau, torch.einsum("bd,bmd->bm", fd, V[noise]) / tau


def _nce_by_hand(s_pos, s_noise, n, log_Z) -> float:
    """Eqs. 5-6 in float64: P = exp(s)/Z, h = P / (P + m/n), J = -mean[log h(pos) + sum log(1 - h(noise))]."""
    m = s_noise.shape[1]
    P_pos, P_noise = torch.exp(s_pos - log_Z), torch.exp(s_noise - log_Z)
    h_pos, h_noise = P_pos / (P_pos + m / n), P_noise / (P_noise + m / n)
    return -(torch.log(h_pos) + torch.log(1 - h_noise).sum(1)).mean().item()


def _log_Z_by_hand(s_pos, s_noise, n, estimator):
    """Eq. 7: Z = n * mean exp(s) over the m noise scores (lemniscate's code: over all 1 + m), as log Z."""
    s = s_noise if estimator == "noise" else torch.cat([s_pos[:, None], s_noise], dim=1)
    return math.log(n) + math.log(float(torch.exp(s).mean()))


def check_nce_objective(objective) -> None:
    """NCE (``NCE``): eqs. 5-6 with the Z the objective holds, Z's estimate (eq. 7) and its update, and the bank.

    Two steps with different batches. By hand: the m noise rows of each batch (drawn as the objective draws
    them, from a generator seeded alike), ``h = P / (P + m/n)`` and J_NCE in float64; the first batch sets
    ``Z = n * mean exp(s_noise)``; after the second step Z is ``mu Z + (1 - mu) Z_batch2`` (``z_mode="ema"``,
    mu = z_momentum weighs the OLD value) or unchanged (``"once"``).
    Catches: a dropped temperature, the EMA's two weights swapped, a one-shot Z that moves, the positive
    counted in eq. 7's noise mean (or left out of lemniscate's), the bank's update.
    """
    obj = copy.deepcopy(objective)
    n, d, m, tau = obj.memory.n, obj.memory.dim, obj.m, obj.tau
    assert not obj.z_is_set(), "give the check a fresh objective: its Z is already set"
    V = obj.memory.bank.double().clone()
    log_Z, mu = None, obj.memory.momentum
    for step, seed in ((1, 3), (2, 4)):
        f, idx = _batch(n, d, seed=seed)
        g = torch.Generator().manual_seed(seed)
        drawn = torch.randint(0, n, (m,) if obj.shared_negatives else (B, m), generator=torch.Generator().manual_seed(seed))
        noise = drawn.expand(B, m) if obj.shared_negatives else drawn
        s_pos, s_noise = _nce_scores(V, f, idx, noise, tau)
        log_Z_batch = _log_Z_by_hand(s_pos, s_noise, n, obj.z_estimator)
        log_Z = log_Z_batch if log_Z is None else log_Z  # the first batch sets Z; the loss of step 2 reads the old Z
        ref = _nce_by_hand(s_pos, s_noise, n, log_Z) + _proximal(f, V[idx], obj.lam)
        _same(obj(f, idx, g), ref, f"step {step}: eq. 6's loss with log Z = {log_Z:.4f}")
        if step == 1:
            _same(obj.log_Z, log_Z, "the first batch's log Z (eq. 7 over the noise scores)")
        obj.after_step(f, idx)
        if step == 2 and obj.z_mode == "ema":
            zm = obj.z_momentum
            log_Z = math.log(zm * math.exp(log_Z) + (1 - zm) * math.exp(log_Z_batch))
        _same(obj.log_Z, log_Z, f"log Z after step {step} (z_mode={obj.z_mode!r}, z_momentum {obj.z_momentum})")
        V = _bank_rows(V, idx, f, mu)
        assert torch.allclose(obj.memory.bank.double(), V, atol=1e-6), (
            f"step {step}: the bank after after_step differs from normalize(mu v_i + (1 - mu) f_i), mu = {mu}")
    update = _check_bank_update(objective, *_batch(n, d, seed=5), "NCE")
    print(f"✓ eqs. 5-7 through {type(objective).__name__} (m = {m}, n = {n}, tau = {tau}, z_mode = {obj.z_mode!r}): "
          f"two steps' losses, log Z {float(obj.log_Z):.4f} after step 2 (by hand, float64); {update}")


def check_pic_objective(objective, lr: float = 0.5, momentum: float = 0.9, weight_decay: float = 5e-4) -> None:
    """PIC (``PIC``): the cosine softmax over its candidates, and its rows after two optimizer steps.

    By hand: ``u_j = w_j / ||w_j||``, ``-log P(i | f) = -(u_i^T f / tau - log sum_{j in C} exp(u_j^T f / tau))``
    with C all n rows (``recent_k=0``) or this batch plus the K most recent instances (the queue that
    ``after_step`` fills); the gradient of a row through its normalisation,
    ``dL/dw_j = (I - u_j u_j^T) dL/du_j / ||w_j||`` with ``dL/du_j = sum_b (P_bj - [j = i_b]) f_b / (tau B)``;
    and SGD with momentum and weight decay on the candidates' rows only (the weight-update correction) or on
    every row (``correction=False``).
    Catches: rows not normalised, a dropped temperature, the wrong candidates, weight decay or momentum moving
    rows that were not sampled.
    """
    obj = copy.deepcopy(objective)
    n, d, tau = obj.n, obj.dim, obj.tau
    optimizer = obj.make_optimizer([obj.weight], SimpleNamespace(lr=lr, momentum=momentum, weight_decay=weight_decay))
    W, buf, recent = obj.weight.detach().double().clone(), torch.zeros(n, d, dtype=torch.float64), []
    for step, seed in ((1, 6), (2, 7)):
        f, idx = _batch(n, d, seed=seed)
        # the candidates: all n, or this batch and the K most recent instances (before any: the batch alone)
        C = torch.arange(n) if not obj.recent_k else torch.tensor(
            sorted(set(idx.tolist()) | set(recent[-obj.recent_k:] or idx[:1].tolist())))
        U = _unit(W[C])
        s = f.double() @ U.t() / tau  # (B, |C|)
        target = torch.searchsorted(C, idx)
        ref = -(s[torch.arange(B), target] - torch.logsumexp(s, dim=1)).mean().item()
        optimizer.zero_grad()
        loss = obj(f, idx)
        _same(loss, ref, f"step {step}: the cosine softmax over {len(C)} candidates")
        loss.backward()
        optimizer.step()
        obj.after_step(f, idx)
        recent += idx.tolist()
        # by hand: the gradient of each candidate row, then SGD with momentum and weight decay
        P = torch.softmax(s, dim=1)
        P[torch.arange(B), target] -= 1
        dU = P.t() @ f.double() / (tau * B)  # (|C|, d)
        norms = W[C].norm(dim=1, keepdim=True)
        grad = torch.zeros_like(W)
        grad[C] = (dU - (dU * U).sum(1, keepdim=True) * U) / norms
        rows = C if obj.correction else torch.arange(n)
        g = grad[rows] + weight_decay * W[rows]
        buf[rows] = momentum * buf[rows] + g  # the buffer starts at zero: step 1 gives buf = g, as torch's SGD
        W[rows] = W[rows] - lr * buf[rows]
        got = obj.weight.detach().double()
        assert torch.allclose(got[C], W[C], atol=1e-6), (
            f"step {step}: the candidates' rows differ from SGD (lr {lr}, momentum {momentum}, wd {weight_decay}) "
            "on the cosine softmax's gradient")
        others = torch.ones(n, dtype=torch.bool)
        others[C] = False
        assert torch.allclose(got[others], W[others], atol=1e-7), (
            f"step {step}: rows outside the candidates moved differently from "
            + ("'not at all' (the weight-update correction)" if obj.correction else "plain SGD's weight decay and momentum"))
    print(f"✓ PIC's cosine softmax (n = {n}, tau = {tau}, recent_k = {obj.recent_k}, correction = {obj.correction}): "
          f"two steps' losses and every weight row after each optimizer step match the hand computation (float64)")
