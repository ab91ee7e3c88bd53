"""The command line: ``python -m instdisc_lesson train ...``. Taught in notebook 06.

    python -m instdisc_lesson train --data {quick|cifar10|PATH} --objective {parametric|softmax|nce|pic}
        --model {convnet|resnet18} --epochs N [--nce-m M] [--tau T] [--lr LR] [--batch-size B]
        [--seed S] [--resume] --out RUN_DIR

Unset options take the paper's defaults (full mode) or the calibrated quick-mode defaults (quick
mode, or ``--data quick``). The run writes ``RUN_DIR/checkpoint.pt`` after every epoch and finally
``RUN_DIR/metrics.json`` with ``knn_top1``, ``knn_top5``, ``random_init_knn_top1`` (the same model
untrained, on the same data), ``raw_pixel_knn_top1``, ``history`` and ``config``. No harm done: the run
ends with its last epoch's network unless the untrained one scores higher by leave-one-out kNN on the
training images (``kept_epoch`` 0, ``kept_knn_top1``); ``semisup --checkpoint`` uses the kept network.

The same command runs on N processes (CPU with gloo, or one GPU each with NCCL) under torchrun;
``--batch-size`` is then the global batch, and rank 0 alone writes (notebook 08):

    torchrun --standalone --nproc_per_node 2 -m instdisc_lesson train --data quick --objective nce --epochs 3 --out runs/ddp
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from pathlib import Path

from . import distributed as dist
from .checkpoint import CheckpointError, atomic_write, run_lock
from .config import dataset_name, describe_setup, is_quick
from .data import DatasetUnavailableError, load_dataset
from . import recipe
from .arguments import UNREAD, build_config, build_parser  # noqa: F401 - the options live there; tests import them from here
from .recipe import TrainConfig, epochs_within

AT_RISK = 0.9  # a baseline kNN this high leaves instance discrimination little to add (measured on digits)


def format_seconds(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``: a wall time as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_folder(text: str) -> Path:
    """The ``--out`` folder: ``~`` expanded; refused when empty or when it names a file."""
    if not text.strip():
        raise ValueError("--out is empty: name the run folder, e.g. --out runs/mine")
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose a folder for the run")
    return out


def train_command(args) -> dict:
    from .knn import raw_pixel_knn
    from .trainer import Trainer

    device = dist.setup(args.device)  # joins torchrun's job, if there is one
    out = run_folder(args.out)
    rank0 = dist.rank() == 0
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not args.resume:
        raise CheckpointError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    train, test = load_dataset(args.data or dataset_name(), args.data_root)
    cfg = build_config(args, train)
    say = (lambda text: print(text, file=sys.stderr)) if rank0 else (lambda text: None)
    say(describe_setup() + (f" | {cfg.world_size} processes (torchrun)" if cfg.world_size > 1 else ""))
    # Defaults fitted to the data (a CPU, no --epochs): a resumed run keeps the epochs it was started with,
    # a new one is shortened when this machine would need more than recipe.CPU_SECONDS for it.
    fitted = cfg.data != "quick" and is_quick() and args.epochs is None and args.preset is None
    resuming = args.resume and ckpt.exists()
    if fitted and resuming:
        cfg = _with_epochs(cfg, _saved_epochs(ckpt, cfg.epochs), args)
    # One run per folder: a second process on the same --out is refused. Under torchrun rank 0 holds the lock.
    with run_lock(out) if rank0 else contextlib.nullcontext():
        trainer = Trainer(cfg, train, test, device=device, out_dir=out)
        if resuming:
            trainer.load(ckpt)
            say(f"resuming {out} from epoch {trainer.epoch}")
        elif args.resume:
            say(f"--resume: {out} holds no checkpoint yet, so this starts a new run there")
        cost = trainer.expected_seconds()  # a few steps timed, then undone: the run is not changed
        affordable = epochs_within(cfg, cost["seconds"] / cfg.epochs, recipe.CPU_SECONDS)
        if fitted and not resuming and affordable < cfg.epochs:
            wanted, cfg = cfg.epochs, _with_epochs(cfg, affordable, args)
            say(f"the defaults' {wanted} epochs would take about {format_seconds(cost['seconds'])} here: training "
                f"{cfg.epochs}, to stay within the {format_seconds(recipe.CPU_SECONDS)} a default run may take on a CPU")
            trainer = Trainer(cfg, train, test, device=device, out_dir=out)
            cost = trainer.expected_seconds()
        cfg = trainer.cfg  # "auto" precision and layout resolved
        timed = trainer.timings.get("precision_seconds")
        say(f"precision: {cfg.precision}, {cfg.memory_format.replace('_', '-')}" + (
            " (the fastest here; ms per forward+backward: " + ", ".join(
                f"{mode.replace('_', '-')} {1000 * t:.0f}" for mode, t in timed.items()) + ")" if timed else " (as asked)"))
        tau = "" if "tau" in UNREAD.get(cfg.objective, ()) else f", tau {cfg.tau}"
        say(f"recipe: {cfg.objective}, {cfg.model}{tau}, batch {cfg.batch_size}, lr {cfg.lr}, kNN k {cfg.knn_k}"
            + (f" (defaults fitted to {len(train):,} images; see README, 'Defaults on your own images')" if fitted else ""))
        say(f"budget: {cfg.epochs} epochs of {len(trainer.train_set):,} images ({trainer.epoch} done), {cost['steps']:,} steps of "
            f"{cfg.batch_size} and {cost['evaluations']} kNN evaluations to go; expected about "
            f"{format_seconds(cost['seconds'])} here ({1000 * cost['step_seconds']:.0f} ms per step, "
            f"{cost['eval_seconds']:.1f} s per evaluation). --epochs changes it.")
        raw1, raw5 = raw_pixel_knn(train, test, cfg.knn_k, cfg.knn_sigma)
        trainer.baseline()  # the untrained network's kNN (kept in the checkpoint; once per run)
        untrained = trainer.baselines["random_init_knn_top1"]
        if max(untrained, raw1) >= AT_RISK:
            say(f"at risk: on these images raw pixels already reach {raw1:.1%} and the untrained network {untrained:.1%} "
                "(kNN). Instance discrimination has little to add to such easy data and can make the features worse "
                "(it did on scikit-learn's digits: README, 'Defaults on your own images'). The run goes on, and ends "
                "with the untrained network if its last epoch does not beat it on the training images.")
        _signal_for_tests(trainer)
        start = time.perf_counter()
        trainer.fit()
        top1, top5 = trainer.history[-1]["knn_top1"], trainer.history[-1]["knn_top5"]
        kept = trainer.kept()  # the last epoch's network, or the untrained one if that scored higher
        kept_top1 = untrained if kept["epoch"] == 0 else top1
        linear = linear_columns(trainer, train, test, say)
        metrics = {
            "knn_top1": top1, "knn_top5": top5,
            "kept_epoch": kept["epoch"], "kept_knn_top1": kept_top1, "kept_train_loo_top1": kept["train_loo_top1"],
            "random_init_train_loo_top1": trainer.baselines.get("random_init_train_loo_top1"),
            "random_init_knn_top1": trainer.baselines["random_init_knn_top1"],
            "random_init_knn_top5": trainer.baselines["random_init_knn_top5"],
            "raw_pixel_knn_top1": raw1, "raw_pixel_knn_top5": raw5, **linear,
            "train_images": len(trainer.train_set), "knn_reference_images": len(train), "test_images": len(test), "seconds_this_session": time.perf_counter() - start,
            "precision": trainer.cfg.precision, "memory_format": trainer.cfg.memory_format,
            "deviations": {k: v for k, (v, _) in recipe.deviations(trainer.cfg).items()},
            "history": trainer.history, "config": trainer.cfg.to_dict(),
        }
        text = json.dumps(metrics, indent=2)
        if rank0:
            atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(text))
    if rank0:
        print(f"kNN top-1 {top1:.1%} (random init {metrics['random_init_knn_top1']:.1%}, raw pixels {raw1:.1%})"
              + (f"; linear {linear['linear_top1']:.1%} (random init {linear.get('random_init_linear_top1', float('nan')):.1%}, "
                 f"raw pixels {linear['raw_pixel_linear_top1']:.1%})" if "linear_top1" in linear else "")
              + f" -> {out / 'metrics.json'}")
        if kept["epoch"] == 0:
            say(f"kept: the untrained network (kNN {untrained:.1%}). The last epoch scored below it by leave-one-out kNN on "
                f"the training images ({trainer.history[-1]['train_loo_top1']:.1%} against {kept['train_loo_top1']:.1%}): "
                "training made the features worse here, so the run keeps the untrained weights. Raw pixels or other "
                "settings (--tau, --epochs) may serve this data better.")
        if kept_top1 < untrained:
            say(f"warning: the kept network ({kept_top1:.1%}) is below the untrained one ({untrained:.1%}) on the test "
                "images, though it scored at least as well on the training images: use the untrained network's features or raw "
                "pixels for this data, or try other settings (--tau, --epochs).")
    return metrics


TEST_SIGNAL = "INSTDISC_TEST_SIGNAL"  # tests only: "SIGKILL@3" = the process signals itself at epoch 3's first step


def _signal_for_tests(trainer) -> None:
    """Let a test stop the run at a named point instead of racing it with a timer.

    ``INSTDISC_TEST_SIGNAL=SIGNAME@E`` makes the process send itself ``SIGNAME`` during the first training
    step of epoch ``E`` (1-based): epochs 1..E-1 are then checkpointed and epoch E is under way, however fast
    or busy the machine is. Read here, at the edge, once; unset (always, outside the tests) it does nothing.
    """
    import os

    spec = os.environ.get(TEST_SIGNAL, "").strip()
    if not spec:
        return
    name, _, epoch = spec.partition("@")
    signum, when = signal.Signals[name], int(epoch) - 1  # the trainer counts finished epochs from 0

    def hook(t, idx, features):
        if t.epoch == when:
            os.kill(os.getpid(), signum)

    trainer.step_hooks.append(hook)


def linear_columns(trainer, train, test, say) -> dict:
    """Table 1's other column: a linear classifier's test top-1 on frozen features (the course's probe,
    ``knn.linear_probe``: ridge regression on standardised features, alpha chosen on the training images; the
    paper used a linear SVM), for the last epoch's network (like ``knn_top1``), the untrained one and raw
    pixels. Empty without scikit-learn."""
    import copy

    from .knn import embed, linear_probe, pixel_mean, raw_pixel_features

    try:
        import sklearn  # noqa: F401
    except ImportError:
        say("no linear column: scikit-learn is not installed (pip install scikit-learn)")
        return {}
    model = copy.deepcopy(trainer.model)
    columns = {}
    for key, weights in (("linear_top1", trainer.model.state_dict()),
                         ("random_init_linear_top1", (trainer.untrained or {}).get("model"))):
        if weights is not None:
            model.load_state_dict(weights)
            columns[key] = linear_probe(embed(model, train.images), train.labels, embed(model, test.images), test.labels)["top1"]
    mean = pixel_mean(train.images)
    columns["raw_pixel_linear_top1"] = linear_probe(raw_pixel_features(train.images, mean), train.labels,
                                                    raw_pixel_features(test.images, mean), test.labels)["top1"]
    return columns


def _with_epochs(cfg: TrainConfig, epochs: int, args) -> TrainConfig:
    """``cfg`` with ``epochs`` (and, unless --eval-every was given, kNN every tenth of the run)."""
    every = cfg.eval_every if args.eval_every is not None else max(1, epochs // 10)
    return dataclasses.replace(cfg, epochs=epochs, eval_every=every)


def _saved_epochs(ckpt: Path, default: int) -> int:
    """The epochs a checkpoint's run was started with (``default`` when unreadable: loading explains why)."""
    import torch

    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["config"]["epochs"])
    except Exception:  # noqa: BLE001 - Trainer.load reports a damaged checkpoint with its own message
        return default


def pretrained_encoder(checkpoint: str, device):
    """The network a ``train`` run (or the shipped checkpoint, ``"shipped"``) ended with, and its TrainConfig."""
    import torch

    from . import pretrained
    from .config import get_device
    from .models import build_model
    from .registry import objective_class

    if checkpoint == "shipped":
        model, info = pretrained.load_pretrained(device)
        return model, TrainConfig.from_dict(info["config"])
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f"--checkpoint {checkpoint}: no such file; give a train run's checkpoint.pt, or 'shipped'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = TrainConfig.from_dict(state["config"])
        model = build_model(cfg.model, cfg.dim, cfg.head or objective_class(cfg.objective).head)
        kept_untrained = state.get("kept_epoch") == 0 and state.get("untrained")  # training made it worse
        model.load_state_dict(state["untrained"]["model"] if kept_untrained else state["model"])
    except (KeyError, RuntimeError, OSError, TypeError, ValueError) as err:
        raise CheckpointError(f"--checkpoint {path} is not a checkpoint.pt written by `train` ({type(err).__name__}); "
                              "give a train run's checkpoint.pt, or 'shipped'") from None
    return model.to(get_device(device)).eval(), cfg


def semisup_command(args) -> dict:
    from .models import build_encoder
    from .semisup import few_labels

    out = run_folder(args.out)
    train, test = load_dataset(args.data or dataset_name(), args.data_root)
    print(describe_setup(), file=sys.stderr)
    model, cfg = pretrained_encoder(args.checkpoint, args.device)
    device = next(model.parameters()).device
    untrained, _ = build_encoder(cfg, train.images, device)  # the same network, untrained, BatchNorm calibrated
    start = time.perf_counter()
    with run_lock(out):
        result = few_labels(model, untrained, train, test, args.fraction, args.steps, cfg.knn_k, args.seed, args.eval_every)
        scratch = dict(result.pop("scratch_history"))
        history = [{"step": step, "finetune_top1": top1, "scratch_top1": scratch[step]}
                   for step, top1 in result.pop("finetune_history")]
        metrics = {
            "knn_top1": result["pretrained_knn_top1"], "random_init_knn_top1": result["untrained_knn_top1"],
            "raw_pixel_knn_top1": result["raw_pixel_knn_top1"], **result, "history": history,
            "seconds": time.perf_counter() - start, "train_images": len(train), "test_images": len(test),
            "config": {"checkpoint": args.checkpoint, "fraction": args.fraction, "steps": args.steps, "seed": args.seed,
                       "eval_every": args.eval_every, "pretrained": cfg.to_dict()},
        }
        text = json.dumps(metrics, indent=2)
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(text))
    print(f"{result['labelled_images']} labels ({args.fraction:.0%}): fine-tuned {result['finetune_top1']:.1%}, from scratch "
          f"{result['scratch_top1']:.1%}; kNN pretrained {result['pretrained_knn_top1']:.1%}, untrained "
          f"{result['untrained_knn_top1']:.1%}, raw pixels {result['raw_pixel_knn_top1']:.1%} -> {out / 'metrics.json'}")
    return metrics


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that it unwinds like Ctrl-C: temporary files removed, the lock released.

    A subclass on purpose: when a plain KeyboardInterrupt passes through ``exec`` of a string (dataclasses
    and torch's lazy imports do that), CPython marks it unhandled, and a ``python -m`` process then ends by
    SIGINT however it exits, even after the exception was caught. That mark is set for KeyboardInterrupt
    itself only, so a subclass leaves the exit status ours (143).
    """


def _stop_on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if on_main_thread else None
    try:
        if args.command == "train":
            train_command(args)
        elif args.command == "semisup":
            semisup_command(args)
    except (ValueError, CheckpointError, DatasetUnavailableError) as err:
        lines = str(err).splitlines()
        parser.exit(2, f"error: {lines[0]}\n" + "".join(f"  {line}\n" for line in lines[1:]))
    except FloatingPointError as err:
        parser.exit(3, f"error: {err}\n")
    except KeyboardInterrupt as stop:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        ckpt = Path(args.out).expanduser() / "checkpoint.pt" if args.out.strip() else None
        if ckpt is not None and ckpt.exists():
            parser.exit(code, f"{how}: the last complete epoch is saved in {ckpt.parent}; continue with --resume\n")
        parser.exit(code, f"{how} before the first epoch finished: nothing was saved\n")
    finally:
        dist.cleanup()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
