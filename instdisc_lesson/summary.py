"""A finished (or cached) run in one dict, for notebooks and the CLI alike (``metrics.json``). Taught in notebook 06."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass

from .recipe import deviations


def summary(trainer) -> dict:
    """The last kNN, the untrained baselines, the kept network (``monitor.Monitor.kept``), what the run saw, its
    precision and its departures from the paper (``recipe.deviations``), the history and the config."""
    last, baselines = (trainer.history[-1] if trainer.history else {}), trainer.monitor.baselines
    kept = trainer.monitor.kept(trainer.model, trainer.epoch, trainer.history)
    top1, cfg = last.get("knn_top1"), trainer.cfg
    return {"knn_top1": top1, "knn_top5": last.get("knn_top5"), "kept_epoch": kept["epoch"],
            "kept_knn_top1": baselines.get("random_init_knn_top1") if kept["epoch"] == 0 else top1,
            "kept_train_loo_top1": kept["train_loo_top1"], **baselines,
            "train_images": len(trainer.train_set), "knn_reference_images": len(trainer.monitor.reference),
            "test_images": len(trainer.test_set) if trainer.test_set is not None else 0,
            "precision": cfg.precision, "memory_format": cfg.memory_format,
            "deviations": {k: asdict(v) if is_dataclass(v) else v for k, (v, _) in deviations(cfg).items()},
            "history": trainer.history, "config": cfg.to_dict()}
