"""The command line: ``python -m instdisc_lesson train ...``. Taught in notebook 06.

    python -m instdisc_lesson train --data {quick|cifar10|PATH} --objective {parametric|softmax|nce|pic}
        --model {convnet|resnet18} --epochs N [--nce-m M] [--tau T] [--lr LR] [--batch-size B]
        [--seed S] [--resume] --out RUN_DIR

Unset options take the defaults of the run's case (``options.py``): the quick set's calibrated settings,
settings fitted to the images on a CPU, or the paper's run on a GPU or with ``--preset``. Everything that can be
refused without the data is refused first, leaving nothing behind (``preflight.py``). The run writes
``RUN_DIR/checkpoint.pt`` and ``history.json`` after every epoch, and finally ``report.png`` and
``RUN_DIR/metrics.json`` with ``knn_top1``, ``knn_top5``, ``random_init_knn_top1`` (the same model
untrained, on the same data), ``raw_pixel_knn_top1``, ``history`` and ``config``. No harm done: the run
ends with its last epoch's network unless the untrained one scores higher by leave-one-out kNN on the
training images (``kept_epoch`` 0, ``kept_knn_top1``); ``semisup --checkpoint`` uses the kept network.

``python -m instdisc_lesson reproduce table1`` trains the paper's Table 1 rows through ``train_command``, one after
another (``reproduce.py``).

The same command runs on N processes (CPU with gloo, or one GPU each with NCCL) under torchrun;
``--batch-size`` is then the global batch, and rank 0 alone writes (notebook 08):

    torchrun --standalone --nproc_per_node 2 -m instdisc_lesson train --data quick --objective nce --epochs 3 --out runs/ddp
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from . import distributed as dist
from . import resume
from .preflight import check as preflight, run_folder
from .arguments import build_config, build_parser, choose_views, fits_time  # noqa: F401 - tests import build_* from here
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, run_lock
from .config import dataset_name, describe_setup, is_smoke
from .data import SMOKE_SIZES, DatasetUnavailableError, load_dataset
from .recipe import TrainConfig
from .summary import summary

AT_RISK = 0.9  # a baseline kNN this high is a bar training may not clear (it did not on 8x8 digits, README)


def format_seconds(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``: a wall time as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def train_command(args) -> dict:
    """parse -> one preset -> ``Trainer(...).fit()`` -> ``summary(trainer)`` with the CLI's baselines -> metrics.json."""
    from .knn import raw_pixel_knn

    preflight(args)  # everything that can be refused before the data is loaded and --out is created
    device = dist.setup(args.device)  # joins torchrun's job, if there is one
    out, rank0 = run_folder(args.out), dist.rank() == 0
    say = (lambda text: print(text, file=sys.stderr)) if rank0 else (lambda text: None)
    train, test = load_dataset(args.data or dataset_name(), args.data_root, SMOKE_SIZES if is_smoke() else None)
    cfg = build_config(args, train)
    say(describe_run(cfg, train, test))
    with run_lock(out) if rank0 else contextlib.nullcontext():  # one run per folder; under torchrun rank 0 holds it
        trainer = start(cfg, train, test, device, out, args, say)
        raw1, raw5 = raw_pixel_knn(train, test, cfg.knn_k, cfg.knn_sigma)
        warn_if_at_risk(trainer.monitor.baselines["random_init_knn_top1"], raw1, say)
        _signal_for_tests(trainer)
        began = time.perf_counter()
        trainer.fit()
        metrics = {**summary(trainer), "raw_pixel_knn_top1": raw1, "raw_pixel_knn_top5": raw5,
                   **linear_columns(trainer, train, test, say), "seconds_this_session": time.perf_counter() - began}
        if rank0:
            text = json.dumps(metrics, indent=2)
            atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(text))
            draw_report(trainer.model, train, test, metrics, out, say)
    if rank0:
        tell_result(metrics, out, say)
    return metrics


def draw_report(model, train, test, metrics: dict, out: Path, say) -> None:
    """``out/report.png`` (``report.py``); a run whose report cannot be drawn keeps its metrics and says why."""
    from .report import write_report

    try:
        atomic_write(out / "report.png", lambda tmp: write_report(model, train, test, metrics, tmp))
        say(f"report: {out / 'report.png'} (loss and kNN per epoch, nearest neighbours, UMAP); features of any folder: "
            f"python -m instdisc_lesson embed --checkpoint {out / 'checkpoint.pt'} --data FOLDER --out features.npz")
    except ImportError as err:
        say(f"no report.png: {err.name} is not installed (pip install matplotlib)")


def describe_run(cfg: TrainConfig, train, test) -> str:
    """The first line of a run: the device, the data actually used, torch's version."""
    data = {"quick": "the quick set (generated shapes)", "cifar10": "CIFAR-10"}.get(cfg.data, cfg.data)
    device = describe_setup().split(" | ")[0]
    smoke = " | SMOKE: sizes shrunk to seconds" if is_smoke() else ""
    return (f"{device} | data: {data}, {len(train):,} training and {len(test):,} test images in {train.num_classes} "
            f"classes{smoke} | torch {torch.__version__}" + (f" | {cfg.world_size} processes (torchrun)" if cfg.world_size > 1 else ""))


def start(cfg: TrainConfig, train, test, device, out: Path, args, say):
    """The run's config resolved once (``resolve.py``: the saved run's choices when resuming, "auto" precision, the
    epochs a time cap allows when the defaults chose them), its one Trainer, resumed from ``out`` if asked, and the
    run announced: precision, recipe, budget."""
    from . import cost, resolve
    from .trainer import Trainer

    ckpt, fitted = out / "checkpoint.pt", fits_time(args, cfg)
    resuming = args.resume and ckpt.exists()
    saved = resume.saved_config(ckpt) if resuming else None
    cfg = resolve.as_saved(cfg, saved, ("epochs", "eval_every") if fitted else ())  # a resumed run keeps its epochs
    cfg, timings = resolve.precision(cfg, train, device)
    measured, why = {}, None
    if fitted and not resuming:
        cfg, measured, why = resolve.time_cap(cfg, train, test, device, args.eval_every is not None)
    trainer = Trainer(cfg, train, test, device=device, out_dir=out, timings=timings)
    if resuming:
        resume.load(trainer, ckpt)
        say(f"resuming {out} from epoch {trainer.epoch}")
    elif args.resume:
        say(f"--resume: {out} holds no checkpoint yet, so this starts a new run there")
    if "monitor" in measured:  # the untrained network's kNN, already measured on the same network and images
        trainer.monitor.load_state_dict(measured["monitor"])
    trainer.monitor.baseline(trainer.model, trainer.epoch, trainer.evaluate)
    step_seconds = measured.get("step_seconds") or cost.time_steps(trainer)  # a few steps timed, then undone
    if why:
        say(f"epochs: {cfg.epochs}, {why}")
    if args.augment or args.flip is not None or cfg.data not in ("quick", "cifar10"):
        say("views: " + "; ".join(choose_views(args, cfg.data, train)[1]))
    announce(trainer, cost.expected_seconds(trainer, step_seconds, trainer.monitor.eval_seconds or 0.0), fitted, say)
    return trainer


def announce(trainer, cost: dict, fitted: bool, say) -> None:
    """What the run will do and cost: the precision chosen, the recipe, the budget."""
    cfg, timed = trainer.cfg, trainer.timings.get("precision_seconds")
    say(f"precision: {cfg.precision}, {cfg.memory_format.replace('_', '-')}" + (
        " (the fastest here; ms per forward+backward: " + ", ".join(
            f"{mode.replace('_', '-')} {1000 * t:.0f}" for mode, t in timed.items()) + ")" if timed else " (as asked)"))
    tau = "" if cfg.tau is None else f", tau {cfg.tau}"
    say(f"recipe: {cfg.objective}, {cfg.model}{tau}, batch {cfg.batch_size}, lr {cfg.lr}, kNN k {cfg.knn_k}"
        + (f" (defaults fitted to {len(trainer.train_set):,} images; see README, 'Defaults on your own images')" if fitted else ""))
    say(f"budget: {cfg.epochs} epochs of {trainer.objective.epoch_size(len(trainer.images)):,} images ({trainer.epoch} "
        f"done), {cost['steps']:,} steps of {cfg.batch_size} and {cost['evaluations']} kNN evaluations to go; expected "
        f"about {format_seconds(cost['seconds'])} here ({1000 * cost['step_seconds']:.0f} ms per step, "
        f"{cost['eval_seconds']:.1f} s per evaluation). --epochs changes it.")


def warn_if_at_risk(untrained: float, raw: float, say) -> None:
    if max(untrained, raw) >= AT_RISK:
        say(f"at risk: on these images raw pixels already reach {raw:.1%} and the untrained network {untrained:.1%} "
            "(kNN), a high bar. Training can make such features worse (it did on scikit-learn's 8x8 digits with the "
            "photos' recipe: README, 'Defaults on your own images'). The run goes on, and ends with the untrained "
            "network if its last epoch does not beat it on the training images.")


def tell_result(m: dict, out: Path, say) -> None:
    """The run's last lines: kNN and linear beside the untrained network and raw pixels; which network it kept."""
    linear = (f"; linear {m['linear_top1']:.1%} (random init {m.get('random_init_linear_top1', float('nan')):.1%}, "
              f"raw pixels {m['raw_pixel_linear_top1']:.1%})" if "linear_top1" in m else "")
    print(f"kNN top-1 {m['knn_top1']:.1%} (random init {m['random_init_knn_top1']:.1%}, raw pixels "
          f"{m['raw_pixel_knn_top1']:.1%}){linear} -> {out / 'metrics.json'}")
    untrained, kept_top1 = m["random_init_knn_top1"], m["kept_knn_top1"]
    if m["kept_epoch"] == 0:
        say(f"kept: the untrained network (kNN {untrained:.1%}). The last epoch scored below it by leave-one-out kNN on "
            f"the training images ({m['history'][-1]['train_loo_top1']:.1%} against {m['kept_train_loo_top1']:.1%}): "
            "training made the features worse here, so the run keeps the untrained weights. Raw pixels or other "
            "settings (--tau, --epochs) may serve this data better.")
    if kept_top1 < untrained:
        say(f"warning: the kept network ({kept_top1:.1%}) is below the untrained one ({untrained:.1%}) on the test "
            "images, though it scored at least as well on the training images: use the untrained network's features or raw "
            "pixels for this data, or try other settings (--tau, --epochs).")


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
                         ("random_init_linear_top1", (trainer.monitor.untrained or {}).get("model"))):
        if weights is not None:
            model.load_state_dict(weights)
            columns[key] = linear_probe(embed(model, train.images), train.labels, embed(model, test.images), test.labels)["top1"]
    mean = pixel_mean(train.images)
    columns["raw_pixel_linear_top1"] = linear_probe(raw_pixel_features(train.images, mean), train.labels,
                                                    raw_pixel_features(test.images, mean), test.labels)["top1"]
    return columns


def pretrained_encoder(checkpoint: str, device):
    """The network a ``train`` run ended with, or a shipped checkpoint's (``"shipped"``: the default one;
    ``"shipped:60-epoch"``: one by name, ``pretrained.SHIPPED``), and its TrainConfig."""
    from . import pretrained
    from .config import get_device
    from .models import build_model
    from .registry import objective_class

    if checkpoint == "shipped" or checkpoint.startswith("shipped:"):
        name = checkpoint.partition(":")[2] or pretrained.DEFAULT
        model, info = pretrained.load_pretrained(device, name=name)
        return model, TrainConfig.from_dict(info["config"])
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f"--checkpoint {checkpoint}: no such file; give a train run's checkpoint.pt, or 'shipped'")
    state = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_dict(state["config"])
        model = build_model(cfg.model, cfg.dim, cfg.head or objective_class(cfg.objective).head)
        model.load_state_dict(resume.kept_network(state))  # the untrained weights where training made it worse
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"--checkpoint {path} is not a checkpoint.pt written by `train` ({type(err).__name__}); "
                              "give a train run's checkpoint.pt, or 'shipped'") from None
    return model.to(get_device(device)).eval(), cfg


def embed_command(args) -> dict:
    """The features of every image in ``--data`` (a folder, any depth) from a trained network, with file names."""
    from .report import embed_folder

    preflight(args)
    model, cfg = pretrained_encoder(args.checkpoint, args.device)
    done = embed_folder(model, args.data, args.out)
    print(f"{done['images']} images -> {done['out']} (features: {done['images']} x {done['dim']}, float32, unit length; "
          f"files: their paths under {args.data})" + (f"; {len(done['skipped'])} unreadable file(s) left out" if done["skipped"] else ""))
    return done


def semisup_command(args) -> dict:
    from .models import build_encoder
    from .semisup import few_labels

    preflight(args)
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
        elif args.command == "embed":
            embed_command(args)
        elif args.command == "reproduce":
            from .reproduce import reproduce_command

            reproduce_command(args)
    except (ValueError, CheckpointError, DatasetUnavailableError) as err:
        lines = str(err).splitlines()
        parser.exit(2, f"error: {lines[0]}\n" + "".join(f"  {line}\n" for line in lines[1:]))
    except FloatingPointError as err:
        parser.exit(3, f"error: {err}\n")
    except KeyboardInterrupt as stop:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        if args.command == "reproduce":
            parser.exit(code, f"{how}: the finished rows are kept in {args.out}; the same command goes on from here "
                        "(finished rows are skipped, the row under way resumes from its last complete epoch)\n")
        ckpt = Path(args.out).expanduser() / "checkpoint.pt" if args.out.strip() else None
        if ckpt is not None and ckpt.exists():
            parser.exit(code, f"{how}: the last complete epoch is saved in {ckpt.parent}; continue with --resume\n")
        parser.exit(code, f"{how} before the first epoch finished: nothing was saved\n")
    finally:
        dist.cleanup()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
