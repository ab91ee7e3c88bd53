"""Evaluation of frozen features: weighted kNN, 1-NN, a linear probe, retrieval, raw-pixel baseline.

Taught in notebook 05. The paper's kNN (Wu et al. 2018, sec. 3.4): take the k training features most
similar to the query, ``s_i = v_i^T f`` (cosine, all unit vectors), let each vote for its class with
weight ``alpha_i = exp(s_i / sigma)``, and rank classes by their summed votes. Defaults: k = 200,
sigma = 0.07 (= tau) in the paper; 0.1 in its CIFAR code.

The training features are *recomputed* with the test transform (no augmentation) rather than read
from the memory bank: bank rows were written at different times by an older network, so bank-kNN is
a noisier signal (notebook 02 compares the two).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import to_float
from .validate import (check_features, check_k, check_labels, check_no_nan, check_num_classes, check_queries,
                       check_sigma)


@torch.no_grad()
def embed(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512, device=None) -> torch.Tensor:
    """Features of uint8 images (n, 3, 32, 32) with the test transform, in eval mode: (n, dim) float32."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start:start + batch_size].to(device, non_blocking=True))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = model(batch)
        out.append(F.normalize(f.float(), dim=1))
    model.train(was_training)
    return torch.cat(out)


def pixel_mean(images: torch.Tensor) -> torch.Tensor:
    """The mean image of a uint8 set, flattened and in [0, 1]: what raw-pixel features are centred by."""
    return to_float(images).flatten(1).mean(dim=0)


def raw_pixel_features(images: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """The raw-pixel baseline: flattened pixels, centred by ``mean`` (the training set's mean image), unit length."""
    x = to_float(images).flatten(1)  # (n, 3072)
    if mean is None:
        mean = x.mean(dim=0)  # the set's own mean image
    return F.normalize(x - mean, dim=1)


@torch.no_grad()
def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, query_features: torch.Tensor,
               k: int = 200, sigma: float = 0.1, num_classes: int | None = None, chunk: int = 1024,
               exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Summed votes per class, ``sum_{i in top-k, y_i = c} exp(s_i / sigma)``: (Q, C).

    Queries run ``chunk`` at a time, so memory stays at chunk x n_train however many queries there are.
    The votes are computed as ``exp((s_i - s_max) / sigma)``: the same ranking, and no overflow for small sigma.
    ``exclude`` (Q,) names, for each query, one training row that may not vote: the query itself when the
    queries are training images (leave-one-out).
    """
    check_features("train_features", train_features)
    check_features("query_features", query_features)
    check_labels(train_labels, len(train_features), "train_labels")
    check_queries(query_features)
    check_no_nan("train_features", train_features)
    check_no_nan("query_features", query_features)
    check_num_classes(num_classes, train_labels)
    check_k(k, len(train_features))
    check_sigma(sigma)
    if train_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]} but queries {query_features.shape[1]}")
    if exclude is not None:
        check_k(k, len(train_features) - 1)  # one row per query sits out
        exclude = exclude.to(train_features.device)
    if train_features.dtype in (torch.float16, torch.bfloat16):  # half precision: vote in float32
        train_features = train_features.float()
    C = num_classes if num_classes is not None else int(train_labels.max()) + 1
    train_labels = train_labels.to(train_features.device)
    out = []
    for start in range(0, len(query_features), chunk):
        q = query_features[start:start + chunk].to(train_features.device, train_features.dtype)  # (q, d)
        sims = q @ train_features.t()  # (q, n_train)
        if exclude is not None:  # the query's own row may not vote for it
            sims[torch.arange(len(q), device=sims.device), exclude[start:start + chunk]] = -float("inf")
        top_sims, top_idx = sims.topk(k, dim=1)  # (q, k)
        votes = torch.exp((top_sims - top_sims[:, :1]) / sigma)  # (q, k), alpha up to a per-query constant
        scores = torch.zeros(len(q), C, device=q.device, dtype=votes.dtype)
        scores.scatter_add_(1, train_labels[top_idx], votes)  # (q, C): add each vote to its class
        out.append(scores)
    return torch.cat(out)


def rank_classes(scores: torch.Tensor) -> torch.Tensor:
    """Classes from best to worst per row; equal scores are ranked by the smaller class index."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def knn_accuracy(train_features, train_labels, query_features, query_labels, k: int = 200, sigma: float = 0.1,
                 num_classes: int | None = None, chunk: int = 1024) -> tuple[float, float]:
    """Weighted-kNN (top-1, top-5) accuracy in [0, 1]. k = 1 is plain 1-NN."""
    check_labels(query_labels, len(query_features), "query_labels")
    check_num_classes(num_classes, query_labels)
    scores = knn_scores(train_features, train_labels, query_features, k, sigma, num_classes, chunk)
    ranked = rank_classes(scores).cpu()  # (Q, C)
    truth = query_labels.cpu().view(-1, 1)
    top1 = (ranked[:, :1] == truth).any(dim=1).float().mean().item()
    top5 = (ranked[:, :5] == truth).any(dim=1).float().mean().item()
    return top1, top5


@torch.no_grad()
def leave_one_out_knn(features: torch.Tensor, labels: torch.Tensor, k: int = 200, sigma: float = 0.1,
                      num_classes: int | None = None, queries: torch.Tensor | None = None) -> float:
    """Top-1 accuracy of classifying training images by the weighted kNN of the *other* training images.

    A score of the features that needs no test image: every training image in turn is a query, and its
    own row sits out of the vote. ``queries`` (indices) classifies only those images, each still against
    all the others. ``k`` is at most n - 1 (the others). A run uses it to decide whether it ends with its
    last epoch's network or the untrained one (``monitor.Monitor.kept``, README "No harm done").
    """
    k = min(k, len(features) - 1)
    queries = torch.arange(len(features), device=features.device) if queries is None else queries.to(features.device)
    scores = knn_scores(features, labels, features[queries], k, sigma, num_classes, exclude=queries)
    predicted = rank_classes(scores)[:, 0].cpu()
    return (predicted == labels.cpu()[queries.cpu()]).float().mean().item()


def evaluate_knn(model, train, test, k: int = 200, sigma: float = 0.1, bank: torch.Tensor | None = None,
                 loo_queries: torch.Tensor | None = None) -> dict:
    """kNN top-1/top-5 of ``model`` on ``test``, with the training features recomputed under the test
    transform (``knn_top1``, ``knn_top5``) and, given a memory bank, read from it instead (``bank_knn_top1``).
    Given ``loo_queries`` (indices of training images), also the leave-one-out kNN of those training
    images among the rest (``train_loo_top1``), from the same training features."""
    test_f, train_f = embed(model, test.images), embed(model, train.images)  # computed once, used by all
    top1, top5 = knn_accuracy(train_f, train.labels, test_f, test.labels, k, sigma, train.num_classes)
    result = {"knn_top1": top1, "knn_top5": top5, "bank_knn_top1": None}
    if bank is not None:
        result["bank_knn_top1"] = knn_accuracy(bank, train.labels, test_f, test.labels, k, sigma, train.num_classes)[0]
    if loo_queries is not None:
        result["train_loo_top1"] = leave_one_out_knn(train_f, train.labels, k, sigma, train.num_classes, loo_queries)
    return result


def raw_pixel_knn(train, test, k: int = 200, sigma: float = 0.1) -> tuple[float, float]:
    """kNN on centred raw pixels: the baseline any learned feature must beat."""
    mean = pixel_mean(train.images)
    return knn_accuracy(raw_pixel_features(train.images, mean), train.labels,
                        raw_pixel_features(test.images, mean), test.labels, k, sigma, train.num_classes)


@torch.no_grad()
def retrieve(train_features: torch.Tensor, query_features: torch.Tensor, topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``topk`` most similar training items per query: (similarities, indices), each (Q, topk)."""
    check_k(topk, len(train_features))
    return (query_features.to(train_features.device) @ train_features.t()).topk(topk, dim=1)


ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def linear_probe(train_features, train_labels, test_features, test_labels, alphas=ALPHAS) -> dict:
    """A linear probe on frozen features, set up the same way for every feature type: (top-1, alpha).

    The probe is a ridge-regression classifier (one-vs-all least squares on the labels, scikit-learn's
    ``RidgeClassifierCV``). Each dimension is standardised with the training set's mean and standard
    deviation, so raw pixels and unit-length features sit on the same scale, and the regularisation
    strength alpha is chosen from ``alphas`` by leave-one-out cross-validation on the training set
    alone (exact and cheap for ridge: one decomposition serves every alpha). The test set is used once.
    Returns ``{"top1": test accuracy, "alpha": the chosen alpha}``.
    """
    from sklearn.linear_model import RidgeClassifierCV  # lazy: sklearn is slow to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=list(alphas)))
    probe.fit(train_features.cpu().double().numpy(), train_labels.cpu().numpy())
    top1 = probe.score(test_features.cpu().double().numpy(), test_labels.cpu().numpy())
    return {"top1": float(top1), "alpha": float(probe[-1].alpha_)}
