"""What a run is watched by: kNN on the test images, and the rule that picks the network it ends with.

Taught in notebooks 05 and 06. ``Monitor.evaluate`` is the paper's weighted kNN (sec. 3.4) on the test
images, with the training features recomputed under the test transform (``knn.evaluate_knn``).

No harm done (the course's rule, not the paper's): every evaluation also scores the features without a
test image, by leave-one-out kNN of up to ``LOO_QUERIES`` training images among all the others (a seeded
draw, the same at every evaluation). The untrained network is scored the same way before training
(``baseline``). A run ends with its last epoch's network unless the untrained one scored higher
(``kept``): on easy data, where instance discrimination makes the features worse, it then ends with the
untrained network's weights.
"""
from __future__ import annotations

import time

import torch

from .knn import evaluate_knn

LOO_QUERIES = 2000  # training images classified by their neighbours among the others to score an epoch


class Monitor:
    """kNN of a run's network on ``test`` (searching the labelled ``reference`` images), its untrained baseline,
    and the kept-network rule. Its state (``baselines``, ``untrained``) travels in the run's checkpoint."""

    def __init__(self, reference, test, k: int, sigma: float, seed: int):
        self.reference, self.test, self.k, self.sigma = reference, test, k, sigma
        self.loo_queries = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))[:LOO_QUERIES]
        self.baselines = {}  # random_init_knn_top1/5, random_init_train_loo_top1
        self.untrained = None  # {"train_loo_top1", "model"}: the untrained network, if the run started here
        self.eval_seconds = None  # how long the first evaluation took (the run's cost estimate uses it)

    def evaluate(self, model, bank=None) -> dict:
        """``knn_top1/5`` on the test images, ``train_loo_top1``, and with a bank ``bank_knn_top1``."""
        return evaluate_knn(model, self.reference, self.test, self.k, self.sigma, bank, self.loo_queries)

    def baseline(self, model, epoch: int, evaluate=None) -> None:
        """kNN of the untrained network, once per run (timed: the first evaluation; ``evaluate()`` gives the scores,
        by default ``self.evaluate(model)``). At epoch 0 its weights are kept as the network the run falls back to
        if training makes the features worse."""
        if self.test is None or "random_init_knn_top1" in self.baselines:
            return
        start = time.perf_counter()
        scores = evaluate() if evaluate is not None else self.evaluate(model)
        self.eval_seconds = time.perf_counter() - start
        self.baselines.update(random_init_knn_top1=scores["knn_top1"], random_init_knn_top5=scores["knn_top5"],
                              random_init_train_loo_top1=scores["train_loo_top1"])
        if epoch == 0:
            weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
            self.untrained = {"train_loo_top1": scores["train_loo_top1"], "model": weights}

    def kept(self, model, epoch: int, history: list) -> dict:
        """The network the run ends with, ``{"epoch", "train_loo_top1", "model"}``: the last epoch's, unless the
        untrained network scored higher by leave-one-out kNN; then the untrained one (epoch 0). A tie keeps the
        last epoch."""
        score = history[-1].get("train_loo_top1") if history else None
        if self.untrained is not None and score is not None and score < self.untrained["train_loo_top1"]:
            return {"epoch": 0, **self.untrained}
        return {"epoch": epoch, "train_loo_top1": score, "model": model.state_dict()}

    def state_dict(self) -> dict:
        return {"baselines": self.baselines, "untrained": self.untrained, "eval_seconds": self.eval_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.baselines, self.untrained = state["baselines"], state.get("untrained")  # None: nothing to fall back to
        self.eval_seconds = state.get("eval_seconds", self.eval_seconds)


def last_knn(history: list[dict], baselines: dict) -> dict:
    """The progress bar's kNN: this epoch's, else the last one measured with its epoch, else the untrained network's;
    ``{}`` before any (a run without test images)."""
    for entry in reversed(history):
        if "knn_top1" in entry:
            latest = entry is history[-1]
            return {"knn": f"{entry['knn_top1']:.3f}" + ("" if latest else f" (epoch {entry['epoch']})")}
    if "random_init_knn_top1" in baselines:
        return {"knn": f"{baselines['random_init_knn_top1']:.3f} (untrained)"}
    return {}
