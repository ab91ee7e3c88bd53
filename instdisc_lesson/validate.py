"""Every argument check of the package, in one place: clear errors instead of deep torch tracebacks.

Each message names the parameter as the user gave it (the Python name, and the CLI option where
there is one), the value, and what is allowed. The public entry points (objectives, the memory bank,
kNN, the sampler, ``TrainConfig``) call these; internals trust their inputs.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch

_TRUSTED = [False]  # inside trusted(): the value checks that read a tensor back to the host are skipped


@contextmanager
def trusted():
    """Inputs already checked once (the trainer checks an epoch's indices before its steps): inside this
    block the checks that must read a tensor's *values* (index range, NaN) are skipped, because each such
    read is a host sync that stalls a GPU's queue. Shape and dtype checks still run; they cost nothing."""
    before, _TRUSTED[0] = _TRUSTED[0], True
    try:
        yield
    finally:
        _TRUSTED[0] = before


def check_size(n: int, dim: int) -> None:
    """n instances (at least 2: one positive and one other) of feature size dim (at least 1)."""
    if n < 2:
        raise ValueError(f"n={n}: instance discrimination needs at least 2 instances")
    if dim < 1:
        raise ValueError(f"dim={dim} must be a positive feature size (the paper uses 128)")


def check_batch(features: torch.Tensor | None, idx: torch.Tensor, n: int, dim: int) -> None:
    """features (B, dim), any float dtype, and instance indices (B,), an integer tensor in [0, n - 1]."""
    if features is not None:
        check_features("features", features, dim)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"indices must be an integer tensor (torch.long), got {idx.dtype}: pass idx.long()")
    if features is not None and features.shape[0] != idx.shape[0]:
        raise ValueError(f"{features.shape[0]} features for {idx.shape[0]} indices: they must match")
    if not _TRUSTED[0] and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"indices must lie in [0, {n - 1}], got min {int(idx.min())}, max {int(idx.max())}")


def check_features(name: str, features: torch.Tensor, dim: int | None = None) -> None:
    """A float tensor (B, dim) (any float dtype: callers compute in their own)."""
    if not torch.is_tensor(features) or not features.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {getattr(features, 'dtype', type(features).__name__)}")
    if features.dim() != 2 or (dim is not None and features.shape[1] != dim):
        expected = f"(B, {dim})" if dim is not None else "(B, d)"
        raise ValueError(f"{name} of shape {tuple(features.shape)} do not fit dim {dim}: expected {expected}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """No NaN or inf, checked before ``x`` is written anywhere (the memory bank): a bad row would spread."""
    if not _TRUSTED[0] and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or inf and were refused before they reached the memory bank: the model's "
                         "output is broken (a too-large learning rate, or bad input images)")


def check_labels(labels: torch.Tensor, n: int, name: str = "labels") -> None:
    """One integer label per feature row."""
    if labels.is_floating_point() or len(labels) != n:
        raise ValueError(f"{name}: {len(labels)} labels of dtype {labels.dtype} for {n} features; "
                         "need one integer label per feature")


def check_tau(tau: float) -> None:
    if not tau > 0.0:  # also catches NaN
        raise ValueError(f"tau={tau} must be > 0 (--tau; the paper uses 0.07, its CIFAR code 0.1, PIC 0.2)")


def check_lam(lam: float) -> None:
    if not lam >= 0.0:  # also catches NaN
        raise ValueError(f"lam={lam} must be >= 0 (--lam; 0 switches the proximal term off, the paper uses 10-50)")


def check_bank_momentum(momentum: float) -> None:
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"bank_momentum={momentum} must lie in [0, 1) (--bank-momentum; the paper's code uses 0.5): "
                         "0 overwrites the row, values near 1 barely move it")


def check_nce_m(m: int, n: int) -> None:
    if not 1 <= m < n:
        raise ValueError(f"nce_m: m={m} noise samples must lie in [1, {n - 1}] for n={n} instances (--nce-m; they "
                         "are drawn from the other instances, the paper uses m = 4096)")


def check_z(z_mode: str, z_momentum: float, modes: tuple[str, ...]) -> None:
    if z_mode not in modes:
        raise ValueError(f"z_mode={z_mode!r} is unknown (--z-mode): choose one of {', '.join(modes)}")
    if not 0.0 <= z_momentum < 1.0:
        raise ValueError(f"z_momentum={z_momentum} must lie in [0, 1)")


def check_recent_k(recent_k: int) -> None:
    if recent_k < 0:
        raise ValueError(f"recent_k={recent_k} must be >= 0 (--recent-k; 0 uses all n instances)")


def check_world(world_size: int, batch_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be >= 1 (the number of processes torchrun starts)")
    if batch_size < 2 * world_size:
        raise ValueError(f"batch_size={batch_size} is too small for {world_size} processes: each needs at least 2 "
                         f"images (BatchNorm); use --batch-size {2 * world_size} or more, or fewer processes")


def check_window(n: int, window: int, stride: int) -> None:
    if not 1 <= stride <= window <= n:
        raise ValueError(f"need 1 <= stride <= window <= n, got stride={stride}, window={window}, n={n} "
                         "(--stride, --window; PIC slides a window of D instances by S)")


def check_queries(query_features: torch.Tensor) -> None:
    if len(query_features) == 0:
        raise ValueError("query_features is empty: there is nothing to classify")


def check_k(k: int, n_train: int) -> None:
    if not 1 <= k <= n_train:
        raise ValueError(f"k={k} neighbours must lie in [1, {n_train}] (the number of training features; --knn-k)")


def check_sigma(sigma: float) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma={sigma} must be > 0 (the paper uses sigma = tau = 0.07; its CIFAR code 0.1)")


def check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(map(str, choices))}")


def _option(option: str | None) -> str:
    return f" ({option})" if option else ""


def check_positive_int(name: str, value, option: str | None = None) -> None:
    if int(value) < 1:
        raise ValueError(f"{name}={value} must be a positive integer{_option(option)}")


def check_positive(name: str, value: float, option: str | None = None) -> None:
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name}={value} must be > 0{_option(option)}")


def check_sgd(momentum: float, weight_decay: float, lr_milestones: tuple) -> None:
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum} (SGD) must lie in [0, 1)")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    if not all(0.0 < f < 1.0 for f in lr_milestones):
        raise ValueError(f"lr_milestones={lr_milestones} are fractions of the run and must lie in (0, 1)")


def check_bank_init(bank_init: str) -> None:
    if bank_init not in ("random", "features"):
        raise ValueError(f"bank_init={bank_init!r} is unknown (--bank-init): choose 'random' (paper) or 'features'")


def check_precision_usable(device: torch.device, precision: str) -> None:
    """Refuse bf16 where this device cannot run it, with what to do instead."""
    if precision != "bf16":
        return
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, device=device), torch.ones(1, 1, 3, 3, device=device))
    except (RuntimeError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [""])[0][:100]
        raise ValueError(f"--precision bf16 cannot run on {device.type} here ({reason}): use --precision fp32, "
                         "or auto to pick the fastest that works") from None


def check_no_nan(name: str, x: torch.Tensor) -> None:
    """Features to compare (kNN, a probe) must be finite: a NaN row has no neighbours and silently skews the vote."""
    bad = int((~torch.isfinite(x)).any(dim=-1).sum()) if x.numel() else 0
    if bad:
        raise ValueError(f"{name} has {bad} row(s) with NaN or inf: features must be finite. They come from a broken "
                         "model or input (a too-large learning rate, a damaged checkpoint): recompute them, or drop those rows")


def check_num_classes(num_classes: int | None, labels: torch.Tensor) -> None:
    """``num_classes`` (when given) must cover every label: labels 0..C-1."""
    if num_classes is None or not labels.numel():
        return
    top = int(labels.max())
    if num_classes < 1 or top >= num_classes or int(labels.min()) < 0:
        raise ValueError(f"num_classes={num_classes} does not cover the labels, which run from {int(labels.min())} to "
                         f"{top}: pass num_classes={top + 1} or more, or leave it out to count them")


def check_data_source(name: str) -> None:
    """Refuse, before anything is read, a ``--data`` that cannot be loaded: neither 'quick' nor 'cifar10', and no
    folder with a ``train/`` folder inside. (CIFAR-10's files are looked for, or downloaded, when it is loaded.)"""
    if name in ("quick", "cifar10"):
        return
    path = Path(name).expanduser()
    layout = "a folder with train/<class>/<images> (and optionally test/<class>/<images>)"
    if path.is_file():
        raise ValueError(f"--data {name} is a file, not a folder: give {layout}")
    if not path.exists():
        raise ValueError(f"unknown data {name!r}: {path.absolute()} does not exist. Give 'quick', 'cifar10' or {layout}")
    if not (path / "train").is_dir():
        raise ValueError(f"image folder {path / 'train'} does not exist: expected {layout}")


def check_run(cfg, train_images: int, reference_images: int, with_test: bool, world: int, device: torch.device) -> None:
    """What a Trainer refuses before building anything: a batch larger than the images, kNN's k above the labelled
    images, an unresolved "auto", a world size other than torchrun's, SyncBatchNorm or bf16 where they cannot run."""
    if cfg.batch_size > train_images:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the dataset ({train_images} images): use at most {train_images}")
    if with_test:
        check_k(cfg.knn_k, reference_images)
    if "auto" in (cfg.precision, cfg.memory_format):
        raise ValueError("precision or memory_format 'auto' is decided before the Trainer is built: pass the config "
                         "through resolve.precision(cfg, train) first (the CLI and load_or_train do)")
    if cfg.world_size != world:
        raise ValueError(f"the config says world_size={cfg.world_size}, but this process is one of {world}: "
                         "start the run with torchrun --nproc_per_node set to the config's world_size")
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm runs on GPUs only): leave it out on a CPU")
    check_precision_usable(device, cfg.precision)
