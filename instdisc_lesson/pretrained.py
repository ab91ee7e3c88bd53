"""The checkpoints the course ships: the small ConvNet trained by InstDisc on all of CIFAR-10.

Taught in notebooks 05 and 06. They give good CIFAR-10 embeddings to explore without training.
Each was made by one command, the same a learner runs to train it again (``train_command(name=...)``):

- ``"paper200"`` (the default, ``DEFAULT``): the paper's recipe and schedule (``--preset paper``: 200
  epochs, lr 0.03 x0.1 at epochs 120 and 160, tau 0.07, a random initial bank; bank momentum 0.5 from its
  code) with the small ConvNet, the record ``paper-softmax`` (notebook 06's Table 1). Notebooks 00, 01, 03 and 05 use it:

      python -m instdisc_lesson train --preset paper --data cifar10 --model convnet --eval-every 10 --seed 0 \
          --objective softmax --out runs/records/paper-softmax

- ``"60-epoch"``: the course's first checkpoint, 60 epochs with the bank started from features (a course
  choice, not the paper's). The few-labels records and notebook 09 (``--checkpoint shipped:60-epoch``) and
  notebook 02's bank-start comparison were measured with it:

      python -m instdisc_lesson train --data cifar10 --model convnet --objective softmax --epochs 60 \
          --batch-size 128 --tau 0.07 --knn-k 200 --bank-init features --eval-every 5 \
          --out runs/pretrained-convnet-cifar10

Both use the full non-parametric softmax of the paper's eq. 2, P(i | v) = exp(v_i·v / tau) / sum_j exp(v_j·v / tau),
with a 50,000-row memory bank. ``benchmarks/export_pretrained.py`` wrote the files from those runs, and
``benchmarks/RESULTS.md`` records the time and the kNN numbers. The training images were a JPEG
export of CIFAR-10, so pixels differ slightly from the original files.

Files in ``instdisc_lesson/assets/``:
- ``convnet_cifar10_<name>.pt`` (the 60-epoch one: ``convnet_cifar10_instdisc.pt``):
  ``{"state_dict", "config", "made_by", "metrics"}``, float32, loadable with ``torch.load(..., weights_only=True)``;
- ``cifar10_test_sample.npz``: 1,000 CIFAR-10 test images (100 per class) with their labels, and
  the 60-epoch model's features of the first 16 of them when it was exported. The first 500 (50 per
  class) are the kNN reference set and the last 500 are the queries.
- ``cifar10_test_sample_<name>.npz`` for the other checkpoints: the same record (features of the first 16,
  kNN on the sample's split) for that model, without the images.
- ``cifar10_test_umap_paper200.npz``: the 2-D UMAP of all 10,000 CIFAR-10 test images under the default
  checkpoint, the same network untrained and raw pixels, with per-class kNN top-1 (k = 200, all 50,000 training
  images as the reference) and the labels (``benchmarks/export_umap.py``; notebook 05 draws it).

The loaders check every file's SHA-256 against the values below. A damaged or replaced file
raises :class:`PretrainedError`, and the message says how to restore it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Shipped:
    """One shipped checkpoint (its name is its key in ``SHIPPED``): its file, the command that trained it,
    and its record on the shipped sample."""
    file: str            # the weights, in ASSETS
    sample: str          # the npz with its features of the sample's first 16 images and its kNN on the sample
    command: str         # the exact command that trained it
    precision: tuple     # (--precision, --memory-format) it trained in, to rebuild the same config anywhere


SHIPPED = {
    "paper200": Shipped("convnet_cifar10_paper200.pt", "cifar10_test_sample_paper200.npz",
                        "python -m instdisc_lesson train --preset paper --data cifar10 --model convnet --eval-every 10 "
                        "--seed 0 --objective softmax --out runs/records/paper-softmax", ("bf16", "channels_last")),
    "60-epoch": Shipped("convnet_cifar10_instdisc.pt", "cifar10_test_sample.npz",
                        "python -m instdisc_lesson train --data cifar10 --model convnet --objective softmax --epochs 60 "
                        "--batch-size 128 --tau 0.07 --knn-k 200 --bank-init features --eval-every 5 "
                        "--out runs/pretrained-convnet-cifar10", ("fp32", "contiguous")),
}
DEFAULT = "paper200"  # what notebooks 00, 01, 03 and 05 load (notebook 09 and the few-labels records: "60-epoch")
SHA256 = {
    "convnet_cifar10_paper200.pt": "fe86ea80964d1f25d71769fc18484b4b0364e00899f56c74dcbb0f5b80d3a3cc",
    "cifar10_test_sample_paper200.npz": "7a998785c85b14f5e0cd32f1e4bd56f50a874658b0ce6a519bf84a64a9c71ab0",
    "convnet_cifar10_instdisc.pt": "bf3f53e1449dde15e771277448d4c6c759aacb581e61a4a951d66d5c7ba5218e",
    "cifar10_test_sample.npz": "060c07046a68323514497affb25c632bde0940775f263194c8580999886595ee",
    "cifar10_test_umap_paper200.npz": "930be23fa23fc5ec5401b6f3f1de24aa1c123c432a882a939539a13ac690a332",
}
CHECKPOINT = ASSETS / SHIPPED[DEFAULT].file        # the default checkpoint's file
SAMPLE = ASSETS / "cifar10_test_sample.npz"         # the 1,000 images (and the 60-epoch model's record)
COMMAND = SHIPPED[DEFAULT].command


def shipped(name: str) -> Shipped:
    """The shipped checkpoint ``name``; the message lists the names there are."""
    if name not in SHIPPED:
        raise PretrainedError(f"no shipped checkpoint named {name!r}; the course ships {', '.join(SHIPPED)} "
                              f"(the default: {DEFAULT})")
    return SHIPPED[name]


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
    made_by = next((c.command for c in SHIPPED.values() if path.name in (c.file, c.sample)), COMMAND)
    restore = (f"Restore it with `git checkout -- instdisc_lesson/assets/{path.name}` (or reinstall the package), "
               f"or train your own with:\n  {made_by}")
    if not path.exists():
        raise PretrainedError(f"the shipped file {path} is missing.\n{restore}")
    actual = sha256(path)
    if actual != expected:
        raise PretrainedError(f"{path} is damaged or was replaced: its SHA-256 is {actual[:16]}..., "
                              f"the course shipped {expected[:16]}....\n{restore}")
    return path


def load_pretrained(device=None, name: str = DEFAULT):
    """The shipped ConvNet ``name`` (``SHIPPED``), checksum-verified, in eval mode, and its record ``info``.

    ``info`` holds ``config`` (a TrainConfig dict), ``made_by`` (command, epochs, seconds, device, data) and
    ``metrics`` (kNN top-1/top-5 on the 10,000 test images next to random init and raw pixels, and the
    per-epoch history).
    """
    from .config import get_device
    from .models import build_model

    path = CHECKPOINT if name == DEFAULT else ASSETS / shipped(name).file
    state = torch.load(verify(path), map_location="cpu", weights_only=True)
    cfg = state["config"]
    model = build_model(cfg["model"], cfg["dim"], cfg.get("head") or "linear")
    model.load_state_dict(state["state_dict"])
    info = {k: state[k] for k in ("config", "made_by", "metrics")}
    return model.to(get_device(device)).eval(), info


def load_test_umap(name: str = DEFAULT) -> dict:
    """The shipped UMAP of the 10,000 CIFAR-10 test images (``benchmarks/export_umap.py``), checksum-verified:
    ``labels`` (10,000,), ``classes``, and for each of ``"shipped"``, ``"untrained"``, ``"pixels"`` the 2-D points
    ``xy_<set>`` (10,000, 2) and ``knn_per_class_<set>`` (10,), each class's kNN top-1 in [0, 1]."""
    import numpy as np

    with np.load(verify(ASSETS / f"cifar10_test_umap_{name}.npz")) as z:
        return {k: z[k].astype(np.float32) if k.startswith("xy_") else z[k] for k in z.files}


def load_sample(name: str = DEFAULT):
    """The 1,000 shipped CIFAR-10 test images: ``(reference, queries, recorded)``.

    ``reference`` and ``queries`` are InstanceDatasets of 500 images each (50 per class).
    ``recorded`` holds ``features_first16`` (checkpoint ``name``'s features of ``reference.images[:16]``
    at export) and the kNN numbers measured on this split (that model, the same network untrained, raw pixels).
    """
    import numpy as np

    from .data import CIFAR10_CLASSES, InstanceDataset

    with np.load(verify(SAMPLE)) as z:
        images, labels, index = torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]).long(), z["test_index"]
    with np.load(verify(ASSETS / shipped(name).sample)) as z:
        if not np.array_equal(z["test_index"], index):
            raise PretrainedError(f"{shipped(name).sample} was recorded on other images than {SAMPLE.name}: "
                                  "restore both with `git checkout -- instdisc_lesson/assets/`")
        recorded = {"features_first16": torch.from_numpy(z["features_first16"]),
                    **{k: float(z[k]) for k in z.files if k.startswith("knn_")}}
    half = len(images) // 2
    ref, qry = (InstanceDataset(images[part].contiguous(), labels[part], CIFAR10_CLASSES, f"cifar10-sample-{part_name}")
                for part, part_name in ((slice(0, half), "reference"), (slice(half, None), "queries")))
    return ref, qry, recorded


def record_table(metrics: dict) -> str:
    """The recorded kNN top-1 / top-5 on the full test set, the shipped model beside both baselines."""
    lines = [f"kNN (k = {metrics['knn_k']}) on the 10,000 CIFAR-10 test images, top-1 / top-5:"]
    for name, key in (("shipped ConvNet", "knn"), ("random init", "random_init_knn"), ("raw pixels", "raw_pixel_knn")):
        lines.append(f"  {name:>15}: {metrics[key + '_top1']:.1%} / {metrics[key + '_top5']:.1%}")
    return "\n".join(lines)


def run_dir(name: str = DEFAULT) -> Path:
    """Where checkpoint ``name``'s command writes its run (``--out runs/...``), under the notebooks' ``runs_root()``:
    a learner's own run of it, from the command line or a notebook, lands in one folder."""
    from .config import runs_root

    args = shipped(name).command.split()
    return runs_root() / Path(args[args.index("--out") + 1]).relative_to("runs")


def train_command(out: str | None = None, name: str = DEFAULT) -> list[str]:
    """The exact command that made the shipped checkpoint ``name``, as an argument list (for subprocess),
    writing to ``out`` (default: the folder the command names)."""
    args = shipped(name).command.split()[3:]  # drop "python -m instdisc_lesson"
    if out is not None:
        args[args.index("--out") + 1] = str(out)
    # The arithmetic it trained in, spelled out: the CLI's `auto` times the machine and may choose another.
    precision, memory_format = shipped(name).precision
    return args[:-2] + ["--precision", precision, "--memory-format", memory_format] + args[-2:]


def train_config(name: str = DEFAULT):
    """The TrainConfig that checkpoint ``name``'s command gives in this mode: what its run folder holds
    when a learner trains it (so notebooks and the command line share that folder's cache)."""
    from .arguments import build_config, build_parser

    return build_config(build_parser().parse_args(train_command(name=name)))
