"""Weighted kNN against a brute-force Python loop; ties, chunking, baselines, retrieval, probe."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_dataset
from instdisc_lesson.knn import (knn_accuracy, knn_scores, leave_one_out_knn, linear_probe, rank_classes,
                                 raw_pixel_features, raw_pixel_knn, retrieve)


def brute_force_knn(train_f, train_y, query_f, k, sigma, C):
    """The paper's rule, one query at a time in float64: top-k by cosine, vote exp(s/sigma) per class."""
    predictions = []
    for q in query_f.double():
        sims = [(float(q @ t), j) for j, t in enumerate(train_f.double())]
        sims.sort(key=lambda p: -p[0])
        votes = [0.0] * C
        for s, j in sims[:k]:
            votes[int(train_y[j])] += math.exp(s / sigma)
        predictions.append(sorted(range(C), key=lambda c: (-votes[c], c)))  # ties: smaller class first
    return predictions


def test_leave_one_out_knn_matches_brute_force():
    """Each training image classified by the k nearest of the *others* (its own row never votes)."""
    g = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(120, 6, generator=g), dim=1)
    y = torch.randint(0, 4, (120,), generator=g)
    queries = torch.tensor([0, 7, 42, 119, 60])
    for k, sigma in ((1, 0.1), (9, 0.07)):
        correct = []
        for i in queries.tolist():
            others = [j for j in range(120) if j != i]
            ranked = brute_force_knn(f[others], y[others], f[i:i + 1], k, sigma, 4)[0]
            correct.append(ranked[0] == int(y[i]))
        assert leave_one_out_knn(f, y, k, sigma, 4, queries) == pytest.approx(sum(correct) / len(correct))
    # all images as queries; k larger than the others is cut to n - 1
    assert 0.0 <= leave_one_out_knn(f, y, 500, 0.1, 4) <= 1.0


def test_leave_one_out_by_hand():
    """Two tight pairs of opposite classes: with k = 1 each point's nearest other is its partner."""
    f = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, 0.1]]), dim=1)
    assert leave_one_out_knn(f, torch.tensor([0, 0, 1, 1]), k=1) == 1.0  # partners agree
    assert leave_one_out_knn(f, torch.tensor([0, 1, 0, 1]), k=1) == 0.0  # partners disagree: self would have said 1.0


@pytest.mark.parametrize("k,sigma", [(1, 0.1), (5, 0.1), (20, 0.07), (200, 0.5)])
def test_knn_matches_brute_force(k, sigma):
    g = torch.Generator().manual_seed(k)
    train_f = F.normalize(torch.randn(300, 8, generator=g), dim=1)
    train_y = torch.randint(0, 6, (300,), generator=g)
    query_f = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    query_y = torch.randint(0, 6, (40,), generator=g)
    ranked = rank_classes(knn_scores(train_f, train_y, query_f, k, sigma, 6, chunk=7))
    reference = brute_force_knn(train_f, train_y, query_f, k, sigma, 6)
    assert ranked.tolist() == reference
    top1 = sum(r[0] == y for r, y in zip(reference, query_y.tolist())) / 40
    top5 = sum(y in r[:5] for r, y in zip(reference, query_y.tolist())) / 40
    assert knn_accuracy(train_f, train_y, query_f, query_y, k, sigma, 6, chunk=7) == pytest.approx((top1, top5))


def test_tied_votes_go_to_the_smaller_class_index():
    train_f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    train_y = torch.tensor([3, 1, 2])
    query = torch.tensor([[1.0, 0.0]])
    # neighbours 0 and 1 have the same similarity and hence the same vote for classes 3 and 1
    assert rank_classes(knn_scores(train_f, train_y, query, k=2, sigma=0.1, num_classes=4))[0, :2].tolist() == [1, 3]


def test_chunking_does_not_change_scores():
    g = torch.Generator().manual_seed(0)
    train_f, query_f = F.normalize(torch.randn(100, 4, generator=g), dim=1), F.normalize(torch.randn(33, 4, generator=g), dim=1)
    y = torch.randint(0, 3, (100,), generator=g)
    assert torch.allclose(knn_scores(train_f, y, query_f, 10, 0.1, 3, chunk=4), knn_scores(train_f, y, query_f, 10, 0.1, 3, chunk=1000))


def test_small_sigma_does_not_overflow():
    g = torch.Generator().manual_seed(0)
    train_f, query_f = F.normalize(torch.randn(50, 4, generator=g), dim=1), F.normalize(torch.randn(5, 4, generator=g), dim=1)
    scores = knn_scores(train_f, torch.randint(0, 3, (50,), generator=g), query_f, 10, sigma=0.001, num_classes=3)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("k", [0, -3, 301])
def test_bad_k_is_rejected(k):
    f = F.normalize(torch.randn(300, 4), dim=1)
    with pytest.raises(ValueError, match=rf"k={k} neighbours must lie in \[1, 300\]"):
        knn_scores(f, torch.zeros(300, dtype=torch.long), f[:2], k=k)


def test_mismatched_dims_are_rejected():
    with pytest.raises(ValueError, match="train features have dim 4 but queries 5"):
        knn_scores(torch.ones(10, 4), torch.zeros(10, dtype=torch.long), torch.ones(2, 5), k=3)


def test_raw_pixel_features_are_centred_unit_vectors():
    ds = make_dataset(16)
    feats = raw_pixel_features(ds.images)
    assert torch.allclose(feats.norm(dim=1), torch.ones(16), atol=1e-5)
    x = ds.images.float().flatten(1) / 255
    expected = F.normalize(x - x.mean(0), dim=1)
    assert torch.allclose(feats, expected, atol=1e-6)


def test_raw_pixel_knn_finds_colour_classes():
    """The tiny sets' classes differ by mean colour: pixels must find them (and 1-NN equals k=1)."""
    train, test = make_dataset(64), make_dataset(32, seed=0)
    top1, top5 = raw_pixel_knn(train, test, k=5)
    assert top1 == 1.0 and top5 == 1.0


def test_retrieve_returns_most_similar_first():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    sims, idx = retrieve(bank, torch.tensor([[0.0, 1.0]]), topk=3)
    assert idx.tolist() == [[2, 1, 0]] and sims[0, 0].item() == pytest.approx(1.0)


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    f = torch.randn(200, 5, generator=g) * 0.1
    f[:, 0] += y.float() * 2 - 1
    assert linear_probe(f[:150], y[:150], f[150:], y[150:])["top1"] == 1.0


def test_linear_probe_is_fair_to_features_of_any_scale():
    """Standardised inputs and alpha chosen by cross-validation: scaling a feature set changes nothing."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(300) % 3
    f = torch.randn(300, 20, generator=g) + torch.nn.functional.one_hot(y, 20).float() * 1.5
    small, large = linear_probe(f[:200] * 1e-3, y[:200], f[200:] * 1e-3, y[200:]), linear_probe(f[:200], y[:200], f[200:], y[200:])
    assert small["top1"] == pytest.approx(large["top1"], abs=0.011) and small["alpha"] == large["alpha"]
    assert small["alpha"] in linear_probe.__defaults__[0]


def test_knn_takes_any_float_dtype_and_refuses_bad_inputs_by_name():
    g = torch.Generator().manual_seed(2)
    tf = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1)
    y, qy = torch.arange(60) % 4, torch.arange(12) % 4
    reference = knn_accuracy(tf, y, q, qy, k=7)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        # half precision rounds the cosines, so only the float64 result must match to the query
        got = knn_accuracy(tf.to(dtype), y, q.to(dtype), qy, k=7)
        assert got == reference or dtype != torch.float64
        assert 0.0 <= got[0] <= got[1] <= 1.0
    for args, message in (((tf, y[:50], q, qy), "50 labels"), ((tf, y, q[:0], qy[:0]), "query_features is empty"),
                          ((tf, y, q, qy[:5]), "query_labels: 5 labels"), ((tf.long(), y, q, qy), "must be a float tensor")):
        with pytest.raises(ValueError, match=message):
            knn_accuracy(*args, k=7)


def test_knn_refuses_nan_features_and_too_few_classes_by_name():
    """A NaN row (a broken model, bf16 overflow) used to vote silently: 17.6 % where the clean features gave 46 %.
    Labels beyond num_classes used to end in an index error deep inside scatter_add."""
    g = torch.Generator().manual_seed(2)
    tf = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1)
    y, qy = torch.arange(60) % 5, torch.arange(12) % 5
    for name, (train, query) in (("train_features has 1 row", (tf.index_fill(0, torch.tensor([3]), float("nan")), q)),
                                 ("query_features has 2 row", (tf, q.index_fill(0, torch.tensor([0, 5]), float("inf"))))):
        with pytest.raises(ValueError, match=name):
            knn_accuracy(train, y, query, qy, k=7)
    with pytest.raises(ValueError, match=r"num_classes=2 does not cover the labels, which run from 0 to 4: pass num_classes=5"):
        knn_accuracy(tf, y, q, qy, k=7, num_classes=2)
    assert knn_accuracy(tf, y, q, qy, k=7, num_classes=5) == knn_accuracy(tf, y, q, qy, k=7)  # enough classes: as before
