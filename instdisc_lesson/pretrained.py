"""The checkpoint the course ships: the small ConvNet trained by InstDisc on all of CIFAR-10.

Taught in notebooks 05 and 06. It gives good CIFAR-10 embeddings to explore without training.
It was made by one command, the same a learner runs to train it again (``train_command()``):

    python -m instdisc_lesson train --data cifar10 --model convnet --objective softmax --epochs 60 \
        --batch-size 128 --tau 0.07 --knn-k 200 --bank-init features --eval-every 5 \
        --out runs/pretrained-convnet-cifar10

(batch size, tau and k are spelled out so the command gives the same run in quick and full mode;
lr 0.03, momentum 0.9, weight decay 5e-4 and the lr steps at 60 % and 80 % are the defaults of both).

It uses the full non-parametric softmax of the paper's eq. 2, P(i | v) = exp(v_i·v / tau) / sum_j exp(v_j·v / tau),
with a 50,000-row memory bank. ``benchmarks/export_pretrained.py`` wrote the files from that run, and
``benchmarks/RESULTS.md`` records the time and the kNN numbers. The training images were a JPEG
export of CIFAR-10, so pixels differ slightly from the original files.

Two files in ``instdisc_lesson/assets/``:
- ``convnet_cifar10_instdisc.pt``: ``{"state_dict", "config", "made_by", "metrics"}``, float32,
  loadable with ``torch.load(..., weights_only=True)``;
- ``cifar10_test_sample.npz``: 1,000 CIFAR-10 test images (100 per class) with their labels, and
  the features the model gave the first 16 of them when it was exported. The first 500 (50 per
  class) are the kNN reference set and the last 500 are the queries.

The loaders check every file's SHA-256 against the values below. A damaged or replaced file
raises :class:`PretrainedError`, and the message says how to restore it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .checkpoint import CheckpointError

ASSETS = Path(__file__).resolve().parent / "assets"
CHECKPOINT = ASSETS / "convnet_cifar10_instdisc.pt"
SAMPLE = ASSETS / "cifar10_test_sample.npz"
SHA256 = {
    CHECKPOINT.name: "bf3f53e1449dde15e771277448d4c6c759aacb581e61a4a951d66d5c7ba5218e",
    SAMPLE.name: "060c07046a68323514497affb25c632bde0940775f263194c8580999886595ee",
}
COMMAND = ("python -m instdisc_lesson train --data cifar10 --model convnet --objective softmax --epochs 60 "
           "--batch-size 128 --tau 0.07 --knn-k 200 --bank-init features --eval-every 5 "
           "--out runs/pretrained-convnet-cifar10")


class PretrainedError(CheckpointError):
    """A shipped file is missing or does not match its recorded checksum."""


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path, expected: str | None = None) -> Path:
    """Check ``path`` against its recorded SHA-256. Raises PretrainedError with what to do."""
    path = Path(path)
    expected = expected or SHA256[path.name]
    restore = (f"Restore it with `git checkout -- instdisc_lesson/assets/{path.name}` (or reinstall the package), "
               f"or train your own with:\n  {COMMAND}")
    if not path.exists():
        raise PretrainedError(f"the shipped file {path} is missing.\n{restore}")
    actual = sha256(path)
    if actual != expected:
        raise PretrainedError(f"{path} is damaged or was replaced: its SHA-256 is {actual[:16]}..., "
                              f"the course shipped {expected[:16]}....\n{restore}")
    return path


def load_pretrained(device=None):
    """The shipped ConvNet, checksum-verified, in eval mode, and its record ``info``.

    ``info`` holds ``config`` (a TrainConfig dict), ``made_by`` (command, epochs, seconds, data) and
    ``metrics`` (kNN top-1/top-5 on the 10,000 test images next to random init and raw pixels).
    """
    from .config import get_device
    from .models import build_model

    state = torch.load(verify(CHECKPOINT), map_location="cpu", weights_only=True)
    cfg = state["config"]
    model = build_model(cfg["model"], cfg["dim"], cfg.get("head") or "linear")
    model.load_state_dict(state["state_dict"])
    info = {k: state[k] for k in ("config", "made_by", "metrics")}
    return model.to(get_device(device)).eval(), info


def load_sample():
    """The 1,000 shipped CIFAR-10 test images: ``(reference, queries, recorded)``.

    ``reference`` and ``queries`` are InstanceDatasets of 500 images each (50 per class).
    ``recorded`` holds ``features_first16`` (the model's features of ``reference.images[:16]``
    at export) and the kNN numbers measured on this split.
    """
    import numpy as np

    from .data import CIFAR10_CLASSES, InstanceDataset

    with np.load(verify(SAMPLE)) as z:
        images, labels = torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]).long()
        recorded = {"features_first16": torch.from_numpy(z["features_first16"]),
                    **{k: float(z[k]) for k in z.files if k.startswith("knn_")}}
    half = len(images) // 2
    ref, qry = (InstanceDataset(images[part].contiguous(), labels[part], CIFAR10_CLASSES, f"cifar10-sample-{name}")
                for part, name in ((slice(0, half), "reference"), (slice(half, None), "queries")))
    return ref, qry, recorded


def record_table(metrics: dict) -> str:
    """The recorded kNN top-1 / top-5 on the full test set, the shipped model beside both baselines."""
    lines = [f"kNN (k = {metrics['knn_k']}) on the 10,000 CIFAR-10 test images, top-1 / top-5:"]
    for name, key in (("shipped ConvNet", "knn"), ("random init", "random_init_knn"), ("raw pixels", "raw_pixel_knn")):
        lines.append(f"  {name:>15}: {metrics[key + '_top1']:.1%} / {metrics[key + '_top5']:.1%}")
    return "\n".join(lines)


def train_command(out: str = "runs/pretrained-convnet-cifar10") -> list[str]:
    """The exact command that made the shipped checkpoint, as an argument list (for subprocess)."""
    args = COMMAND.split()[3:]  # drop "python -m instdisc_lesson"
    args[args.index("--out") + 1] = str(out)
    # It trained in float32, contiguous, before the CLI chose the precision by timing: say so, to rebuild it.
    return args[:-2] + ["--precision", "fp32", "--memory-format", "contiguous"] + args[-2:]


def train_config():
    """The TrainConfig that ``COMMAND`` gives in this mode: what ``runs/pretrained-convnet-cifar10`` holds
    when a learner trains it (so notebooks and the command line share that folder's cache)."""
    from .arguments import build_config, build_parser

    return build_config(build_parser().parse_args(train_command()))
