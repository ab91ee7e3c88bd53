"""Objectives checked against brute-force float64 references: eq. 1, eq. 2, eqs. 3-8 (NCE, Z), eq. 9."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from instdisc_lesson.nce import NCE, exact_log_Z, mc_log_Z, nce_loss
from instdisc_lesson.nonparametric import NonParametricSoftmax
from instdisc_lesson.registry import build_objective
from instdisc_lesson.parametric import ParametricSoftmax
from instdisc_lesson.proximal import proximal_term
from instdisc_lesson.recipe import quick_config


def unit(*shape, seed=0, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1).to(dtype)


# -- eq. 1 -----------------------------------------------------------------------------------------
def test_parametric_equals_hand_softmax():
    obj = ParametricSoftmax(n=5, dim=3)
    f, idx = unit(4, 3), torch.tensor([0, 4, 2, 2])
    W = obj.classifier.weight.detach().double()
    assert obj.classifier.bias is None  # eq. 1 has no bias term
    expected = 0.0
    for row, i in zip(f.double(), idx.tolist()):  # -log exp(w_i.v) / sum_j exp(w_j.v)
        logits = [float(W[j] @ row) for j in range(5)]
        expected += -(logits[i] - math.log(sum(math.exp(z) for z in logits)))
    assert obj(f, idx).item() == pytest.approx(expected / 4, rel=1e-5)


# -- eq. 2 -----------------------------------------------------------------------------------------
def test_nonparametric_softmax_equals_brute_force_loop():
    obj = NonParametricSoftmax(n=7, dim=4, tau=0.1, generator=torch.Generator().manual_seed(1))
    f, idx = unit(3, 4, seed=2), torch.tensor([6, 0, 3])
    V = obj.memory.bank.double()
    expected = 0.0
    for row, i in zip(f.double(), idx.tolist()):
        numerator = math.exp(float(V[i] @ row) / 0.1)
        denominator = sum(math.exp(float(V[j] @ row) / 0.1) for j in range(7))
        expected += -math.log(numerator / denominator)
    assert obj(f, idx).item() == pytest.approx(expected / 3, rel=1e-5)


def test_nonparametric_after_step_updates_bank():
    obj = NonParametricSoftmax(n=7, dim=4, bank_momentum=0.0)
    f = unit(2, 4)
    obj.after_step(f, torch.tensor([1, 5]))
    assert torch.allclose(obj.memory.bank[[1, 5]], f)


# -- eqs. 4-6: NCE ---------------------------------------------------------------------------------
def test_nce_loss_equals_formula_by_hand():
    """J_NCE = -[log h(pos) + sum_k log(1 - h(neg_k))], h = P / (P + m/n), P = exp(s/tau) / Z; float64, no logs tricks."""
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.3, 1.2, 0.0]], dtype=torch.float64)  # s / tau, column 0 = positive
    n, Z = 10, 25.0
    m = 2
    total = 0.0
    for row in scores.tolist():
        P = [math.exp(s) / Z for s in row]
        h = [p / (p + m / n) for p in P]
        total += -(math.log(h[0]) + sum(math.log(1 - hk) for hk in h[1:]))
    assert nce_loss(scores, math.log(Z), n).item() == pytest.approx(total / 2, rel=1e-12)


def test_nce_forward_matches_float64_reimplementation_and_its_gradient():
    n, d, m, tau = 50, 8, 6, 0.07
    obj = NCE(n, d, m=m, tau=tau, z_mode="once", generator=torch.Generator().manual_seed(0))
    f = unit(4, d, seed=3).requires_grad_(True)
    idx = torch.tensor([1, 7, 7, 49])
    loss = obj(f, idx, torch.Generator().manual_seed(11))
    loss.backward()
    # Reference: redraw the same noise, compute everything in float64 with plain exp, autograd for the gradient.
    noise = torch.randint(0, n, (4, m), generator=torch.Generator().manual_seed(11))
    V = obj.memory.bank.double()
    f64 = f.detach().double().requires_grad_(True)
    pos = (f64 * V[idx]).sum(1, keepdim=True)
    neg = torch.einsum("bd,bmd->bm", f64, V[noise])
    s = torch.cat([pos, neg], 1) / tau
    Z = n * torch.exp(s.detach()[:, 1:]).mean()  # eq. 7, one-shot: the first batch's m noise scores
    P = torch.exp(s) / Z
    h = P / (P + m / n)
    ref = -(torch.log(h[:, 0]) + torch.log(1 - h[:, 1:]).sum(1)).mean()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(f.grad.double(), f64.grad, rtol=1e-4, atol=1e-6)
    assert obj.log_Z.item() == pytest.approx(math.log(Z.item()), rel=1e-6)


@pytest.mark.parametrize("n,m", [(40, 7), (600, 30)])
def test_full_scores_path_equals_the_gather(n, m):
    """One matmul + a gather of the needed columns gives the paper's gathered scores, loss and gradient."""
    results = []
    for full in (False, True):
        obj = NCE(n, 8, m=m, tau=0.07, generator=torch.Generator().manual_seed(0), full_scores=full).double()
        f = unit(5, 8, seed=3, dtype=torch.float64).requires_grad_(True)
        loss = obj(f, torch.tensor([0, 3, 3, n - 1, 7]), torch.Generator().manual_seed(4))
        loss.backward()
        results.append((loss.item(), f.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


def test_full_scores_are_chosen_by_size():
    from instdisc_lesson.nce import use_full_scores

    assert use_full_scores(50_000, 4096, 128)      # CIFAR-10 with the paper's m: one matmul
    assert not use_full_scores(50_000, 1, 128)     # m = 1: gathering 2 rows beats scoring 50,000
    assert not use_full_scores(1_281_167, 4096, 256)  # ImageNet: the (B, n) matrix would be too large


def test_shared_negatives_use_one_set_for_the_batch():
    obj = NCE(30, 4, m=5, tau=0.1, shared_negatives=True)
    f, idx = unit(3, 4), torch.tensor([0, 1, 2])
    s = obj.scores(f, idx, torch.Generator().manual_seed(0))
    noise = torch.randint(0, 30, (5,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s[:, 1:], f @ obj.memory.bank[noise].t() / 0.1, atol=1e-6)


# -- eq. 7: Monte-Carlo Z ---------------------------------------------------------------------------
def test_monte_carlo_Z_converges_to_exact_within_derived_tolerance():
    """With j_k ~ U{1..n} i.i.d., Zhat = (n/m) sum_k X_k and X = exp(v_j.f/tau), so
    E[Zhat] = Z and sd(Zhat)/Z = cv/sqrt(m), cv = sd(X)/mean(X) over the n rows (computed exactly here).
    The test allows 5 standard errors (for log Zhat, 5 cv/sqrt(m) to first order) per query."""
    n, d, tau = 4000, 16, 0.1
    bank, f = unit(n, d, seed=0), unit(8, d, seed=1)
    X = torch.exp(f.double() @ bank.double().t() / tau)  # (8, n)
    cv = X.std(dim=1, unbiased=False) / X.mean(dim=1)
    exact = exact_log_Z(bank.double(), f.double(), tau)
    errors = []
    for m in (16, 256, 4096, 65536):
        est = mc_log_Z(bank.double(), f.double(), tau, m, torch.Generator().manual_seed(m))
        err = (est - exact).abs()
        assert (err < 5 * cv / math.sqrt(m)).all(), (m, err, cv)
        errors.append(err.mean().item())
    assert errors[-1] < errors[0] / 10  # and it really shrinks, about as 1/sqrt(m)


def test_nce_gradient_direction_approaches_full_softmax_as_m_grows():
    """As m -> large, h(neg) ~ n P / m and 1 - h(pos) ~ 1, so grad J_NCE -> (sum_j P_j v_j - v_i)/tau: eq. 2's gradient."""
    n, d, tau = 500, 16, 0.2
    soft = NonParametricSoftmax(n, d, tau=tau, generator=torch.Generator().manual_seed(0))
    f = unit(32, d, seed=5)
    idx = torch.arange(32)

    def grad(obj, gen=None):
        x = f.clone().requires_grad_(True)
        obj(x, idx, gen).backward()
        return x.grad.flatten()

    g_soft = grad(soft)
    cosines = []
    for m in (1, 10, 100, 499):
        cos = []
        for seed in range(5):
            nce = NCE(n, d, m=m, tau=tau)
            nce.memory.bank.copy_(soft.memory.bank)
            cos.append(F.cosine_similarity(grad(nce, torch.Generator().manual_seed(seed)), g_soft, dim=0).item())
        cosines.append(sum(cos) / len(cos))
    assert cosines == sorted(cosines), cosines
    assert cosines[-1] > 0.9 and cosines[0] < 0.8, cosines


# -- Z estimation modes and numerical safety ---------------------------------------------------------
def test_z_once_keeps_first_batch_and_ema_follows():
    once, ema = NCE(100, 4, m=10, tau=0.1, z_mode="once"), NCE(100, 4, m=10, tau=0.1, z_mode="ema", z_momentum=0.9)
    first, second = torch.zeros(2, 11), torch.full((2, 11), 2.0)  # log Z_batch = log 100 + 0 and log 100 + 2
    for obj in (once, ema):
        obj.update_Z(first)
        obj.update_Z(second)
    assert once.log_Z.item() == pytest.approx(math.log(100))
    assert ema.log_Z.item() == pytest.approx(math.log(0.9 * 100 + 0.1 * 100 * math.exp(2)))


def test_eq7_takes_Z_from_the_noise_scores_and_lemniscate_also_from_the_positive():
    """Eq. 7: Z = (n / m) sum_k exp(s_k) over the m noise columns only; a huge positive score leaves it alone.
    lemniscate's estimator (z_estimator="all") averages all 1 + m columns: worked by hand below."""
    n, m = 100, 3
    scores = torch.tensor([[30.0, 0.0, 1.0, 2.0]])  # (1, 1 + m): the positive is exp(30) = 1.1e13, far above the noise
    noise = NCE(n, 4, m=m, tau=0.1)
    noise.update_Z(scores)
    assert noise.log_Z.item() == pytest.approx(math.log(n / m * (1 + math.e + math.e ** 2)), rel=1e-6)
    lemniscate = NCE(n, 4, m=m, tau=0.1, z_estimator="all")
    lemniscate.update_Z(scores)
    assert lemniscate.log_Z.item() == pytest.approx(math.log(n / (m + 1) * (math.exp(30) + 1 + math.e + math.e ** 2)), rel=1e-6)


def test_lemniscate_estimator_caps_h_of_the_positive_at_two_thirds_when_m_is_1():
    """With Z from all 1 + m scores and m = 1: Z = n (e^{s+} + e^{s-}) / 2 >= n e^{s+} / 2, so P = e^{s+} / Z <= 2 / n
    and h = P / (P + 1/n) <= 2/3 however well the positive is matched; the loss's positive part stays above log 1.5.
    Eq. 7's estimator has no such cap (h -> 1)."""
    n = 1000
    for estimator, expected_h in (("all", 2 / 3), ("noise", 1.0)):
        obj = NCE(n, 4, m=1, tau=0.1, z_estimator=estimator)
        scores = torch.tensor([[20.0, 0.0]], dtype=torch.float64)  # a positive far above its one noise sample
        obj.update_Z(scores.float())
        log_P = scores[0, 0] - obj.log_Z.double()
        h = torch.exp(log_P) / (torch.exp(log_P) + 1 / n)
        assert h.item() == pytest.approx(expected_h, abs=1e-6), estimator
    with pytest.raises(ValueError, match="z_estimator"):
        NCE(n, 4, m=1, z_estimator="positive")


def test_z_moves_after_the_step_not_in_forward():
    """The first batch sets Z inside forward (the loss needs one); after that, forward leaves Z alone and the
    EMA moves in after_step, so an extra forward (a timed step, an evaluation) never changes Z."""
    obj = NCE(50, 8, m=6, tau=0.1, z_mode="ema", z_momentum=0.5, generator=torch.Generator().manual_seed(0))
    f, idx = unit(4, 8, seed=1), torch.tensor([0, 1, 2, 3])
    obj(f, idx, torch.Generator().manual_seed(0))
    first = obj.log_Z.clone()
    obj(f, idx, torch.Generator().manual_seed(1))
    obj(f, idx, torch.Generator().manual_seed(2))
    assert torch.equal(obj.log_Z, first)  # two more forwards: Z unchanged
    obj.after_step(f, idx)
    assert not torch.equal(obj.log_Z, first)  # the last forward's scores move it, now


def test_first_batch_Z_must_be_finite():
    obj = NCE(100, 4, m=10, tau=0.1)
    with pytest.raises(FloatingPointError, match="first batch gave log Z"):
        obj.update_Z(torch.full((2, 11), float("nan")))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_at_tau_007_stays_finite(dtype):
    """exp(1/0.07) = 1.6e6 overflows fp16 (max 65504): the naive formula gives inf; the log-space one does not."""
    n, d = 1000, 32
    obj = NCE(n, d, m=64, tau=0.07).to(dtype)
    obj.memory.bank[:10] = unit(10, d, seed=7).to(dtype)
    f = obj.memory.bank[:10].clone().requires_grad_(True)  # features equal to their positives: s/tau = 14.3
    loss = obj(f, torch.arange(10), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()
    if dtype == torch.float16:
        assert torch.isinf(torch.exp(torch.tensor(1 / 0.07, dtype=dtype)))  # what the naive code would hit


# -- eqs. 8-9 ---------------------------------------------------------------------------------------
def test_proximal_term_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert proximal_term(f, v, 10.0).item() == pytest.approx(10.0 * (2.0 + 0.0) / 2)
    assert proximal_term(f, v, 0.0).item() == 0.0


def test_proximal_is_added_to_bank_objectives():
    obj = NonParametricSoftmax(10, 4, tau=0.1, lam=30.0, generator=torch.Generator().manual_seed(0))
    plain = NonParametricSoftmax(10, 4, tau=0.1, generator=torch.Generator().manual_seed(0))
    f, idx = unit(3, 4), torch.tensor([0, 1, 2])
    expected = plain(f, idx).item() + 30.0 * (f - plain.memory.bank[idx]).pow(2).sum(1).mean().item()
    assert obj(f, idx).item() == pytest.approx(expected, rel=1e-5)


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(tau=0.0), "tau=0.0 must be > 0"), (dict(tau=-1.0), "tau=-1.0 must be > 0"),
    (dict(m=0), r"m=0 noise samples must lie in \[1, 99\]"), (dict(m=100), r"m=100 noise samples must lie in \[1, 99\]"),
    (dict(z_mode="sometimes"), "z_mode='sometimes' is unknown"), (dict(lam=-1.0), "lam=-1.0 must be >= 0"),
    (dict(bank_momentum=1.0), r"momentum=1.0 must lie in \[0, 1\)"),
])
def test_nce_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NCE(100, 8, **{"m": 10, **kwargs})


def test_build_objective_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown objective 'triplet'"):
        build_objective(SimpleNamespace(objective="triplet"), 10)


def test_objectives_reject_wrong_feature_size():
    for name in ("parametric", "softmax", "nce"):
        obj = build_objective(quick_config(objective=name, dim=4, **({"nce_m": 3} if name == "nce" else {})), 10)
        with pytest.raises(ValueError, match="do not fit"):
            obj(torch.ones(2, 5), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match=r"indices must lie in \[0, 9\]"):
            obj(unit(2, 4), torch.tensor([0, 10]))


def test_probabilities_match_eq2_by_hand():
    from instdisc_lesson.nonparametric import probabilities

    bank, f = unit(6, 3, seed=1), unit(2, 3, seed=2)
    P = probabilities(f, bank, 0.2)
    for b in range(2):
        weights = [math.exp(float(bank[j] @ f[b]) / 0.2) for j in range(6)]
        assert P[b].tolist() == pytest.approx([w / sum(weights) for w in weights], rel=1e-5)
    with pytest.raises(ValueError, match="tau=0 must be > 0"):
        probabilities(f, bank, 0)


@pytest.mark.parametrize("name", ["parametric", "softmax", "nce", "pic"])
def test_objectives_take_any_float_dtype(name):
    """fp16/bf16/fp64 features give the float32 loss (to the features' rounding), never a dtype error."""
    obj = build_objective(quick_config(objective=name, dim=4, **({"nce_m": 3} if name == "nce" else {})), 10)
    f, idx = unit(3, 4, seed=5), torch.tensor([1, 4, 7])
    reference = obj(f, idx, torch.Generator().manual_seed(0)).item()
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        got = obj(f.to(dtype), idx, torch.Generator().manual_seed(0))
        assert got.dtype == torch.float32 and got.item() == pytest.approx(reference, rel=0.05)
