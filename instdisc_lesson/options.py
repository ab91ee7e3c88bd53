"""What ``python -m instdisc_lesson --help`` says: every option of ``train``, ``semisup``, ``embed`` and ``reproduce``.

Taught in notebook 06. Each help names the default that will actually be used. Many of ``train``'s depend on
where the run is, so they are given for the three cases of ``recipe.preset``, named alike in every help:

    quick set   --data quick: the settings calibrated on the generated shapes (``recipe.QUICK_DEFAULTS``);
    CPU         any other data without a GPU (the quick budget): fitted to the images (``recipe.fitted_config``);
    paper       a GPU (the gpu and paper budgets) or --preset: the paper's run (``recipe.paper_config``).

The numbers come from the modules that use them, so the help cannot drift from the code.
"""
from __future__ import annotations

import argparse

from .models import MODELS
from .nce import NCE, NCE_M
from .pic import PIC
from .precision import MEMORY_FORMATS, PRECISIONS
from .objectives import TAU
from .recipe import CPU_SECONDS, FITTED_DEFAULTS as FITTED, MAX_PASSES, QUICK_DEFAULTS as QUICK
from .registry import OBJECTIVE_OPTIONS, OBJECTIVES, readers
from .views import _KEYS as AUGMENT_KEYS, MARKS_BATCH, MARKS_TAU

# Written out at 79 columns: argparse prints these as they are (RawDescriptionHelpFormatter).
TRAIN = """\
Train an encoder by instance discrimination (no labels), then report its kNN
and linear accuracy on the test images beside the untrained network's and
raw pixels'. It prints the settings it chose, why, and the time it expects.

Unset options take the defaults of one of three cases, named in each help:
  quick set  --data quick: settings calibrated on the 2,000 generated shapes.
  CPU        other data without a GPU: settings fitted to the training
             images, and as many epochs as fit in {cap} minutes here.
  paper      a GPU, or --preset paper: the paper's run (ResNet-18, NCE
             m = {m}, 200 epochs).
--preset decides first, then --data quick, then the machine (which
INSTDISC_BUDGET=quick|gpu|paper overrides).""".format(cap=CPU_SECONDS // 60, m=NCE_M)

EXAMPLES = """\
examples:
  python -m instdisc_lesson train --data quick --out runs/quick
  python -m instdisc_lesson train --data path/to/my_images --out runs/mine
  python -m instdisc_lesson train --preset paper --data cifar10 \\
      --model convnet --objective softmax --out runs/paper
  torchrun --standalone --nproc_per_node 2 -m instdisc_lesson train \\
      --data quick --objective nce --epochs 3 --out runs/ddp

More in docs/cli.md: the fitted defaults, the network a run keeps, and what
is refused and why."""

TORCHRUN = """\
`torchrun --nproc_per_node N -m instdisc_lesson train ...` trains on N
processes (CPU: gloo; one GPU each: NCCL). --batch-size is then the global
batch, and rank 0 alone writes --out (notebook 08)."""

SEMISUP = ("Few labels (notebook 09): a pretrained network with only --fraction of the training labels, four ways "
           "on the same labelled images: kNN and a linear probe on frozen features, fine-tuning every weight, and "
           "the same network trained from scratch (the baseline). Writes --out/metrics.json.")

EMBED = ("Write the features of every image in a folder (read at any depth, each resized to 32x32 as for training) "
         "from a trained network, with the images' file names, to one .npz file for your own analysis.")

REPRODUCE = """\
Train the rows of the paper's Table 1 at its schedule (--preset paper: 200
epochs, lr 0.03 x0.1 at epochs 120 and 160) on CIFAR-10 here, one after
another, and write the table: each row beside the paper's numbers and beside
the course's shipped record of it. Before it starts it times a few steps of
every row and prints the expected total; after every row it prints how many are
done and when the rest should finish, and rewrites table1.md and table1.png in
--out. Each row trains into --out/ROW with --resume: run the same command
again after an interruption, and finished rows are skipped while the row under
way continues from its last complete epoch.

rows (in the order they run):
{rows}"""

REPRODUCE_EXAMPLES = """\
examples:
  python -m instdisc_lesson reproduce table1
  python -m instdisc_lesson reproduce table1 --rows paper-softmax paper-nce-m4096
  python -m instdisc_lesson reproduce table1 --model resnet18 --device cuda \\
      --out runs/table1-resnet18       # the paper's network: its full run, on a GPU
  python -m instdisc_lesson reproduce table1 --rows paper-softmax --epochs 2 \\
      --out runs/table1-try            # minutes: see that it runs

Each row's train command is printed as it starts. More in docs/cli.md."""

DEVICE = "cuda, cuda:N, mps or cpu (default: the best here: CUDA, then MPS, then the CPU)"


def _per_case(quick, cpu, paper) -> str:
    """``Default: quick set: 0.1; CPU: 0.07; paper: 0.07``, cases of the same value named together."""
    cases = {}
    for case, value in (("quick set", quick), ("CPU", cpu), ("paper", paper)):
        cases.setdefault(str(value), []).append(case)
    return "Default: " + "; ".join(f"{' and '.join(names)}: {value}" for value, names in cases.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m instdisc_lesson",
                                     description="Instance discrimination (InstDisc, Wu et al. "
                                                 "2018; PIC): the course's command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,semisup,embed,reproduce}")
    t = sub.add_parser("train", help="train an encoder by instance discrimination and report its kNN accuracy",
                       usage="%(prog)s --out FOLDER [--data quick|cifar10|FOLDER] [OPTION ...]", description=TRAIN,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_options(t.add_argument_group("data"))
    _objective_options(t.add_argument_group("objective and network"))
    _optimisation_options(t.add_argument_group("optimisation"))
    _evaluation_options(t.add_argument_group("evaluation"))
    _run_options(t.add_argument_group("run"))
    t.add_argument_group("distributed (torchrun)", TORCHRUN).add_argument(
        "--sync-bn", dest="sync_batchnorm", action="store_true", default=None,
        help="on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm); default: each process's own")
    _semisup_options(sub.add_parser("semisup", help="few labels: kNN, linear probe, fine-tuning and training from "
                                    "scratch on a fraction of the labels (notebook 09)", description=SEMISUP))
    _embed_options(sub.add_parser("embed", help="write the features of a folder of images (with their file names) "
                                  "to a .npz", description=EMBED))
    _reproduce_options(sub.add_parser("reproduce", help="train the rows of the paper's Table 1 at its schedule here "
                                      "and write the table beside the paper's and the shipped records",
                                      usage="%(prog)s table1 [--rows NAME ...] [--out FOLDER] [OPTION ...]",
                                      description=REPRODUCE.format(rows=_rows()), epilog=REPRODUCE_EXAMPLES,
                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _rows() -> str:
    from .records.definitions import PAPER200

    return "\n".join(f"  {run.name:<22} {run.label}" for run in PAPER200)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _reproduce_options(r) -> None:
    from .records.definitions import PAPER200

    r.add_argument("table", choices=("table1",), help="the table to reproduce: table1 (Wu et al. 2018, Table 1)")
    r.add_argument("--rows", nargs="+", choices=[run.name for run in PAPER200], metavar="NAME",
                   help="the rows to train, by name (listed above), in the order given (default: all of them)")
    r.add_argument("--out", default="runs/table1", metavar="FOLDER", help="folder for the rows' runs (one "
                   "folder each, as train writes them) and for table1.md and table1.png (default: runs/table1)")
    r.add_argument("--model", choices=MODELS, help="the network: convnet (the default, as in the shipped records; "
                   "a row takes 1-3 h on 2 CPU cores) or resnet18 (the paper's; on a GPU this is its full run)")
    r.add_argument("--epochs", type=_positive, metavar="N", help="train N epochs instead of the paper's 200 (the lr "
                   "steps follow: x0.1 at 60%% and 80%%), e.g. to try the command in minutes")
    r.add_argument("--data-root", default=None, metavar="FOLDER", help="where CIFAR-10 is, or is downloaded to "
                   "(default: $INSTDISC_DATA, else data/)")
    r.add_argument("--device", default=None, help=DEVICE)


def _semisup_options(f) -> None:
    f.add_argument("--data", default=None, metavar="quick|cifar10|FOLDER",
                   help="as for train (default: quick without a GPU, else cifar10)")
    f.add_argument("--data-root", default=None, metavar="FOLDER",
                   help="where CIFAR-10 is, or is downloaded to (default: $INSTDISC_DATA, else data/)")
    f.add_argument("--checkpoint", default="shipped", metavar="shipped|FILE", help="the pretrained network: "
                   "'shipped' (the default: the course's CIFAR-10 ConvNet trained by the paper's recipe for 200 "
                   "epochs), 'shipped:60-epoch' (the first one, which the few-labels records used), or a train run's "
                   "checkpoint.pt (the network it kept)")
    f.add_argument("--fraction", type=float, required=True, metavar="F", help="share of the training labels used, "
                   "in (0, 1], e.g. 0.01: 1%% of the images, the same number from every class")
    f.add_argument("--steps", type=int, default=600, metavar="N", help="SGD steps of fine-tuning and of training "
                   "from scratch, whatever the fraction (default: 600)")
    f.add_argument("--eval-every", type=int, default=100, metavar="N", help="test accuracy every N steps, for the "
                   "curves in metrics.json (default: 100; 0: at the end only)")
    f.add_argument("--seed", type=int, default=0,
                   help="which images are labelled, and the training seed (default: 0)")
    f.add_argument("--device", default=None, help=DEVICE)
    f.add_argument("--out", required=True, metavar="FOLDER", help="folder for metrics.json (created if missing)")


def _embed_options(e) -> None:
    e.add_argument("--checkpoint", default="shipped", metavar="shipped|FILE", help="a train run's checkpoint.pt "
                   "(the network it kept), 'shipped' (the default: the paper's recipe, 200 epochs, on CIFAR-10) or "
                   "'shipped:60-epoch'")
    e.add_argument("--data", required=True, metavar="FOLDER", help="a folder of images, read at any depth; files "
                   "that are not readable images are left out with a warning")
    e.add_argument("--device", default=None, help=DEVICE)
    e.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz to write: features (n, d) float32, "
                   "unit length, and files (n,): the images' paths under --data")


def _data_options(g) -> None:
    g.add_argument("--data", default=None, metavar="quick|cifar10|FOLDER", help="'quick' (2,000 generated shapes, "
                   "offline), 'cifar10' (downloaded into --data-root the first time, about 170 MB) or a FOLDER of "
                   "your own with train/<class>/<images> and optionally test/<class>/<images> (else a fifth of each "
                   "class is held out for testing). Own images, of any size and mode, are centre-cropped, resized to "
                   "32x32 RGB and all held in memory (3 KB each: 100,000 images take 300 MB). Labels (the class "
                   "folders) are used only to evaluate. Default: quick without a GPU, else cifar10")
    g.add_argument("--data-root", default=None, metavar="FOLDER", help="where CIFAR-10 is, or is downloaded to "
                   "(default: $INSTDISC_DATA, else data/)")
    g.add_argument("--train-size", type=int, metavar="N", help="pretrain on N training images, a random subset; kNN "
                   "still searches every training image (default: 0, all of them)")
    g.add_argument("--augment", default=None, metavar="VIEWS", help="the views: 'paper' (the paper's recipe for colour "
                   "photos), 'fitted' (chosen by looking at the training images), or KEY=VALUE,... on top of the "
                   f"default, with KEY one of {', '.join(AUGMENT_KEYS)} (e.g. crop_min=0.5,p_flip=0). Default: fitted "
                   "for a folder of your own (without --preset), the paper's for quick and cifar10")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="the horizontal mirror: "
                   "--no-flip where orientation matters (a mirrored symbol is another symbol). Default: on, except for "
                   "grey marks on a plain background when the views are fitted")


def _objective_options(g) -> None:
    g.add_argument("--preset", choices=("paper", "course"), help="paper: the paper's run as written, anywhere "
                   "(one-shot Z, a random bank, 200 epochs); course: the same with the course's "
                   "deviations (--z-mode ema, --bank-init features). Default: none, the case's defaults (see above)")
    g.add_argument("--objective", choices=OBJECTIVES, help="parametric softmax (eq. 1), non-parametric softmax over "
                   "all n (eq. 2), NCE (eqs. 4-7), or PIC (Cao et al. 2020: cosine softmax, MLP head). "
                   + _per_case(QUICK["objective"], "softmax", "nce"))
    g.add_argument("--model", choices=MODELS, help="a small ConvNet (fast on a CPU) or ResNet-18 for CIFAR. "
                   + _per_case(QUICK["model"], "convnet", "resnet18"))
    g.add_argument("--dim", type=int, metavar="D", help="size of the features and the memory bank (default: 128)")
    cases = {"tau": _per_case(QUICK["tau"], f"{TAU}, or {MARKS_TAU} for grey marks on a plain background", TAU)
             + f"; PIC's own {PIC.settings['tau']} in every case",
             "nce_m": _per_case(QUICK["nce_m"], f"an eighth of the training images, at most {NCE_M}", NCE_M),
             "z_mode": _per_case(QUICK["z_mode"], FITTED["z_mode"], NCE.settings["z_mode"]),
             "bank_init": _per_case(QUICK["bank_init"], FITTED["bank_init"], NCE.settings["bank_init"])}
    for option in OBJECTIVE_OPTIONS:  # each declared by the objectives that read it (``Objective.options``)
        read_by = readers(option.field)
        g.add_argument(option.flag, dest=option.field, **option.kwargs, help=option.help.format(
            cases=cases.get(option.field, "")) + f". Read by {', '.join(read_by)} only")


def _optimisation_options(g) -> None:
    g.add_argument("--epochs", type=int, help="passes over the training images. " + _per_case(
                   QUICK["epochs"], f"as many as fit in the {CPU_SECONDS // 60}-minute cap a default run may take, "
                   f"timed here before it starts (at most {MAX_PASSES})", "200, the paper's"))
    g.add_argument("--batch-size", type=int, metavar="B", help="images per step (under torchrun: over all processes). "
                   + _per_case(QUICK["batch_size"], f"128, at most a quarter of the images, or {MARKS_BATCH} for grey "
                               "marks", 128))
    g.add_argument("--lr", type=float, help="SGD learning rate, x0.1 at 60%% and 80%% of the epochs (default: 0.03, "
                   "the paper's; momentum 0.9, weight decay 5e-4)")
    g.add_argument("--seed", type=int, help="random seed (default: 0)")
    g.add_argument("--precision", choices=PRECISIONS, help="the network's arithmetic (the objective, "
                   "bank and kNN stay fp32). Default: quick set: fp32; CPU and paper: auto, both timed "
                   "here and the faster kept")
    g.add_argument("--memory-format", choices=MEMORY_FORMATS, help="the network's memory "
                   "layout. Default: quick set: contiguous; CPU and paper: auto, timed with the "
                   "precision")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (default: off; its "
                   "warm-up is reported apart)")


def _evaluation_options(g) -> None:
    g.add_argument("--knn-k", type=int, metavar="K", help="neighbours of the weighted kNN on the test images. "
                   + _per_case(QUICK["knn_k"], "4%% of the smallest class's images, 5 to 200", 200))
    g.add_argument("--eval-every", type=int, metavar="N", help="kNN every N epochs, and always after the last. "
                   + _per_case(QUICK["eval_every"], "a tenth of the epochs", 1))


def _run_options(g) -> None:
    g.add_argument("--out", required=True, metavar="FOLDER", help="the run's folder, created if missing: checkpoint.pt "
                   "(after every epoch), history.json (loss and kNN per epoch), metrics.json (the results and the "
                   "config) and report.png (curves, nearest neighbours, UMAP; needs matplotlib). A folder that already "
                   "holds a run is refused unless --resume")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch "
                   "(the same options, or it is refused)")
    g.add_argument("--device", default=None, help=DEVICE)
