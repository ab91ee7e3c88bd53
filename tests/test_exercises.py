"""The exercise checks accept a correct answer and reject a wrong one (so they can fail)."""
import pytest
import torch
import torch.nn.functional as F

from instdisc_lesson import exercises
from instdisc_lesson.knn import knn_scores, rank_classes
from instdisc_lesson.nonparametric import probabilities
from instdisc_lesson.proximal import proximal_term


def flip_right(batch, p, gen):
    coins = torch.rand(batch.shape[0], generator=gen) < p
    return torch.where(coins.view(-1, 1, 1, 1), batch.flip(-1), batch)


def update_right(bank, idx, f, m):
    bank[idx] = F.normalize(m * bank[idx] + (1 - m) * f, dim=1)
    return bank


def mc_right(bank, f, tau, m, gen):
    j = torch.randint(0, len(bank), (m,), generator=gen)
    return len(bank) * torch.exp(f @ bank[j].t() / tau).mean()


def balanced_right(labels, per_class, gen):
    return torch.cat([(labels == c).nonzero().flatten()[torch.randperm(int((labels == c).sum()), generator=gen)[:per_class]]
                      for c in labels.unique()])


def balanced_first(labels, per_class, gen):  # balanced, but always the first images of each class
    return torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in labels.unique()])


CASES = [
    (exercises.check_balanced_subset, balanced_right, balanced_first),
    (exercises.check_flip, flip_right, lambda b, p, g: b.flip(-1) if torch.rand(1, generator=g) < p else b),  # one coin per batch
    (exercises.check_softmax_probabilities, probabilities, lambda f, b, t: torch.softmax(f @ b.t(), 1)),  # forgot tau
    (exercises.check_bank_update, update_right, lambda b, i, f, m: (b.index_copy_(0, i, m * b[i] + (1 - m) * f))),  # no renorm
    (exercises.check_mc_Z, mc_right, lambda b, f, t, m, g: torch.exp(f @ b[:m].t() / t).mean()),  # forgot n
    (exercises.check_knn_predict, lambda *a: rank_classes(knn_scores(*a))[:, 0],
     lambda tf, ty, qf, k, s, C: ty[(qf @ tf.t()).argmax(1)]),  # 1-NN whatever k
    (exercises.check_proximal, proximal_term, lambda f, v, lam: lam * (f - v).norm(dim=1).mean()),  # norm, not squared
    (exercises.check_milestones, lambda e: [round(0.6 * e), round(0.8 * e)], lambda e: [120, 160]),
]
# check_visit_gaps takes an answer, not a function: the right one by hand (see tests/test_samplers.py), and a wrong one
GAPS_RIGHT, GAPS_WRONG = sorted([1, 7, 1] * 6 + [7, 1, 7] * 2), sorted([1, 7, 1] * 8)


def test_visit_gap_check(capsys):
    exercises.check_visit_gaps(GAPS_RIGHT)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        exercises.check_visit_gaps(GAPS_WRONG)


@pytest.mark.parametrize("check,right,wrong", CASES, ids=[c[0].__name__ for c in CASES])
def test_check_accepts_right_and_rejects_wrong(check, right, wrong, capsys):
    check(right)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        check(wrong)
