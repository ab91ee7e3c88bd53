"""The recipe of a run: every knob in one dataclass, and the presets. Taught in notebook 06.

The paper's recipe (Wu et al. 2018, CIFAR-10): SGD lr 0.03, momentum 0.9, weight decay 5e-4,
batch 128, 200 epochs, lr x0.1 at epochs 120 and 160, tau = 0.07 (0.1 in the CIFAR code), bank
momentum 0.5, NCE m = 4096, kNN k = 200. ``paper_config()`` holds it; ``quick_config()`` holds the
settings calibrated for a CPU in quick mode (see README and benchmarks/RESULTS.md for the measurements);
``fitted_config()`` the defaults fitted to any other data on a CPU (RESULTS.md section 10);
``course_config()`` the paper's run with the course's named deviations (``COURSE_DEVIATIONS``).

An objective with a temperature of its own (PIC's 0.2, Cao et al. 2020) gets it from a preset unless
``tau`` is given: the preset asks the objective's class (``default_tau``), never its name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .augment import AugmentConfig
from .models import MODELS
from .nce import NCE_M, Z_ESTIMATORS, Z_MODES
from .precision import MEMORY_FORMATS, PRECISIONS
from .registry import OBJECTIVE_FIELDS, OBJECTIVES, objective_class, unread_message
from .validate import (check_bank_init, check_bank_momentum, check_choice, check_lam, check_positive,
                       check_positive_int, check_recent_k, check_sgd, check_tau, check_world, check_z)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. Defaults are the paper's CIFAR-10 recipe.

    Frozen: a run trains with the config it was built with (the CLI resolves "auto" precision and the epochs a
    time cap allows before the Trainer exists). The objective's own settings (``registry.OBJECTIVE_FIELDS``, from
    ``tau`` to ``correction``) are None until the chosen objective fills in its defaults (``Objective.settings``);
    one that the objective does not read is refused, so a config never holds a value that does nothing.
    """

    data: str = "cifar10"
    objective: str = "nce"  # parametric | softmax | nce | pic
    model: str = "resnet18"  # convnet | resnet18
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple = (0.6, 0.8)  # fractions of the run: epochs 120 and 160 of 200
    tau: float | None = None  # softmax, nce: 0.07; pic: its own 0.2
    nce_m: int | None = None  # nce: 4096
    bank_momentum: float | None = None  # softmax, nce: 0.5 (the paper's code)
    bank_init: str | None = None  # random (paper) | features: bank (or PIC weight) rows start as the untrained features
    lam: float | None = None  # softmax, nce: proximal weight of eqs. 8-9, 0 (off)
    z_mode: str | None = None  # nce: once (paper: Z from the first batch, then fixed) | ema (the course's deviation)
    z_momentum: float | None = None  # nce: 0.99
    z_estimator: str | None = None  # nce: noise (eq. 7: the m noise scores) | all (lemniscate's code: the positive too)
    shared_negatives: bool | None = None  # nce: False
    window: int | None = None  # pic: sliding window D (0: the standard epoch over all n)
    stride: int | None = None  # pic: window stride S (0: D)
    recent_k: int | None = None  # pic: recent negatives K (0: all n)
    correction: bool | None = None  # pic: weight-update correction, True
    dim: int = 128
    train_size: int = 0  # pretrain on this many training images, a seeded random subset (0: all); kNN still searches all
    head: str | None = None  # linear (InstDisc) | mlp (PIC); None: the objective's own head
    knn_k: int = 200
    knn_sigma: float = 0.1
    eval_every: int = 1
    compile: bool = False  # torch.compile the model; the first step's warm-up is reported separately
    precision: str = "fp32"  # fp32 | bf16 (autocast for the network; objective, bank, kNN stay fp32) | auto (timed)
    memory_format: str = "contiguous"  # contiguous | channels_last | auto (timed with the precision)
    world_size: int = 1  # processes training together (torchrun); batch_size is the global batch over all of them
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over the global batch (CUDA only)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        put = object.__setattr__  # frozen: the constructor's own normalisation is the one write
        if isinstance(self.augment, dict):
            put(self, "augment", AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}))
        put(self, "lr_milestones", tuple(self.lr_milestones))
        check_choice("objective", self.objective, OBJECTIVES)
        own = objective_class(self.objective).settings
        for name in OBJECTIVE_FIELDS:
            if name not in own and getattr(self, name) is not None:
                raise ValueError(unread_message(name, self.objective))
            if getattr(self, name) is None and name in own:
                put(self, name, own[name])
        check_choice("model", self.model, MODELS)
        for name in ("epochs", "batch_size", "dim", "knn_k", "eval_every"):
            check_positive_int(name, getattr(self, name), "--" + name.replace("_", "-"))
        check_positive("lr", self.lr, "--lr")
        check_positive("knn_sigma", self.knn_sigma)
        check_sgd(self.momentum, self.weight_decay, self.lr_milestones)
        for name, check in (("tau", check_tau), ("lam", check_lam), ("bank_momentum", check_bank_momentum),
                            ("bank_init", check_bank_init), ("recent_k", check_recent_k)):
            if name in own:
                check(getattr(self, name))
        if "z_mode" in own:
            check_z(self.z_mode, self.z_momentum, Z_MODES)
            check_choice("z_estimator", self.z_estimator, Z_ESTIMATORS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("memory_format", self.memory_format, MEMORY_FORMATS)
        check_world(self.world_size, self.batch_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config a dict (a checkpoint's, a record's) describes. Fields it does not know are left out, and so
        are settings its objective does not read (checkpoints written before the refusal kept them all)."""
        known, own = {f.name for f in fields(cls)}, objective_class(d.get("objective", cls.objective)).settings
        return cls(**{k: v for k, v in d.items() if k in known and (k not in OBJECTIVE_FIELDS or k in own)})


def lr_drops(epochs: int, fractions: tuple = TrainConfig.lr_milestones) -> list[int]:
    """The epochs after which the learning rate falls x0.1 (``MultiStepLR``'s milestones): the ``fractions`` of a
    run of ``epochs``, rounded, at least epoch 1 (the paper: 0.6 and 0.8, epochs 120 and 160 of 200)."""
    return sorted({max(1, round(f * epochs)) for f in fractions})


# Calibrated for the offline quick set on a 2-core CPU (see README, "How quick mode was calibrated").
QUICK_DEFAULTS = dict(data="quick", model="convnet", objective="softmax", epochs=12, batch_size=64, lr=0.03,
                      tau=0.1, nce_m=256, bank_init="features", z_mode="ema", knn_k=20, eval_every=1)

# What the course changes from the paper's run, each with why. course_config() is the paper's run with these.
COURSE_DEVIATIONS = {
    "z_mode": ("ema", "NCE's Z follows the features (EMA 0.99) instead of being fixed at the first batch: a one-shot Z "
                      "from random features diverged in short CPU runs (notebook 03)"),
    "bank_init": ("features", "the bank (PIC: its weight rows) starts from the untrained network's features instead of "
                              "random vectors, so a short run learns from its first epoch (notebook 02)"),
}


def _preset(defaults: dict, overrides: dict) -> TrainConfig:
    """``defaults`` with ``overrides``. Of the defaults' objective settings only those the chosen objective reads
    apply, and an objective with a temperature of its own (PIC) keeps it unless tau is overridden; the overrides
    are the caller's, so one that the objective does not read is refused (``TrainConfig``)."""
    cls = objective_class(overrides.get("objective", defaults.get("objective", TrainConfig.objective)))
    read = {name: value for name, value in defaults.items() if name not in OBJECTIVE_FIELDS or name in cls.settings
            and not (name == "tau" and cls.default_tau is not None)}
    return TrainConfig(**{**read, **overrides})


def paper_config(**overrides) -> TrainConfig:
    """The paper's CIFAR-10 run (Wu et al. 2018), as written: ResNet-18, NCE m = 4096, tau 0.07, 200 epochs,
    SGD lr 0.03 (x0.1 at epochs 120 and 160), Z from the first batch (eq. 7 over the noise samples) and then
    fixed, a random bank (sec. 3.1). Where the paper and its code (lemniscate) differ, the paper is taken for tau
    0.07 (the CIFAR script's default is 0.1) and Z from the noise samples (the code averages the positive in too),
    the code for batch 128 and bank momentum 0.5 (the paper replaces a row by the new feature); the horizontal
    flip is the course's (the CIFAR script has it commented out). Evaluation is the course's: kNN with
    sigma = 0.1 (the paper: sigma = tau = 0.07) and a ridge probe for the linear column (the paper: a linear SVM)."""
    return _preset({}, overrides)


def course_config(**overrides) -> TrainConfig:
    """The paper's run with the course's deviations (``COURSE_DEVIATIONS``): EMA of Z, bank from features."""
    return _preset({field: value for field, (value, _) in COURSE_DEVIATIONS.items()}, overrides)


# The numbers of noise samples the paper itself ran (Table 1: NCE with m = 1, 10, 512 and 4096).
PAPER_NCE_M = (1, 10, 512, 4096)


def deviations(cfg: TrainConfig) -> dict:
    """Where ``cfg`` departs from the paper's run in the settings that change the method (not in size, data,
    network or schedule): ``{field: (value, the paper's value)}``, the paper's being the objective's own defaults
    (PIC's tau 0.2 is Cao et al.'s). An m of the paper's own Table 1 (``PAPER_NCE_M``) is the paper's, not a
    deviation; a setting the objective does not read is None in both and never one."""
    paper = TrainConfig(objective=cfg.objective)
    method = ("tau", "nce_m", "bank_momentum", "bank_init", "lam", "z_mode", "z_momentum", "z_estimator",
              "shared_negatives", "dim", "augment", "momentum", "weight_decay")
    return {f: (getattr(cfg, f), getattr(paper, f)) for f in method
            if getattr(cfg, f) != getattr(paper, f) and not (f == "nce_m" and cfg.nce_m in PAPER_NCE_M)}


def quick_config(**overrides) -> TrainConfig:
    """The settings quick mode uses: the offline quick set, the small ConvNet, a few epochs."""
    return _preset(QUICK_DEFAULTS, overrides)


# Fitted to the data on a CPU (calibrated on CIFAR-10 folders of 2,000-20,000 photos and on
# digits, benchmarks/RESULTS.md section 10). On real photos learning needs images seen, not epochs: a
# small folder needs many passes. The CLI then shortens the run if this machine is too slow for it.
IMAGES_TO_SEE = 300_000   # about 60 passes over 5,000 photos, 6 over CIFAR-10's 50,000 (when no time is measured)
CPU_SECONDS = 12 * 60     # the longest a run chosen by the defaults may train on a CPU (the CLI fills it: time_epochs)
FITTED_DEFAULTS = dict(model="convnet", objective="softmax", batch_size=128, lr=0.03, tau=0.07,
                       bank_init="features", z_mode="ema", precision="auto", memory_format="auto")


def fitted_config(n: int, smallest_class: int, **overrides) -> TrainConfig:
    """The defaults for ``n`` training images whose smallest class has ``smallest_class`` images:

    - epochs so that about ``IMAGES_TO_SEE`` images are seen (between 5 and 200 passes);
    - batch 128 (at most n / 4), the paper's lr 0.03 and tau 0.07, the bank started from the untrained
      features (so a short run learns from its first epoch);
    - kNN k scaled like the paper's 200 neighbours among 5,000 images per class (4 %), at least 5;
    - NCE m = n / 8 noise samples, at most the paper's 4096; kNN every tenth of the run.
    """
    epochs = overrides.get("epochs") or min(200, max(5, -(-IMAGES_TO_SEE // n)))
    fitted = dict(FITTED_DEFAULTS, epochs=epochs, batch_size=max(2, min(128, n // 4)),
                  knn_k=max(1, min(200, smallest_class, max(5, round(0.04 * smallest_class)))),
                  nce_m=max(1, min(NCE_M, n // 8)), eval_every=max(1, epochs // 10))
    return _preset(fitted, overrides)


MAX_PASSES = 500  # the most epochs the defaults train, however fast the machine or small the folder


def time_epochs(cost: dict, seconds: float | None = None, evaluations: int = 11) -> tuple[int, str]:
    """``(epochs, why)``: the epochs the defaults train on a CPU, chosen by the time they may take.

    As many as fit in ``seconds`` (default: 0.9 of ``CPU_SECONDS``, a margin for the timing's noise) with
    ``evaluations`` kNN evaluations, at most ``MAX_PASSES``: on photos kNN rises well past 300,000 images seen
    before it levels off (README, 'Defaults on your own images'), so the time the user allows is used. ``cost`` is what
    ``cost.expected_seconds`` measured (``step_seconds``, ``eval_seconds``, ``steps_per_epoch``).
    """
    seconds = 0.9 * CPU_SECONDS if seconds is None else seconds
    per_epoch = cost["steps_per_epoch"] * cost["step_seconds"]
    fit = max(1, int((seconds - evaluations * cost["eval_seconds"]) // max(per_epoch, 1e-9)))
    if fit >= MAX_PASSES:
        return MAX_PASSES, f"the most the defaults train (MAX_PASSES); this machine would fit {fit} in the time allowed"
    return fit, (f"as many as fit in {seconds / 60:.0f} of the {CPU_SECONDS / 60:.0f} minutes a default run may take "
                 f"on a CPU ({per_epoch:.1f} s per epoch, as timed)")


def preset(budget: str, data: str, sizes: tuple[int, int] | None = None, **overrides) -> TrainConfig:
    """The one rule that picks a run's defaults, for the CLI and the notebooks alike:

    - ``data="quick"``: the calibrated quick-set settings (``quick_config``);
    - the gpu and paper budgets: the paper's run (``paper_config``);
    - any other data in the quick budget (a CPU): settings fitted to it (``fitted_config``), which needs
      ``sizes = (training images, images in the smallest class)``.
    """
    if data == "quick":
        return quick_config(**overrides, data=data)
    if budget != "quick":
        return paper_config(**overrides, data=data)
    if sizes is None:
        raise ValueError(f"the defaults for {data} are fitted to its images: give sizes=(images, smallest class)")
    return fitted_config(*sizes, **overrides, data=data)


def default_objective(budget: str, data: str, preset_name: str | None = None) -> str:
    """The objective a run gets when none is named: ``preset``'s rule (``--preset`` first, then the quick set,
    then the machine), so that the CLI can refuse another objective's option before any data is loaded."""
    if preset_name is None and data == "quick":
        return QUICK_DEFAULTS["objective"]
    if preset_name is None and budget == "quick":
        return FITTED_DEFAULTS["objective"]
    return TrainConfig.objective


def default_config(**overrides) -> TrainConfig:
    """The notebooks' defaults in this budget: ``preset(budget(), dataset_name())``, i.e. ``quick_config`` in
    quick mode, ``paper_config`` otherwise."""
    from .config import budget, dataset_name

    return preset(budget(), dataset_name(), (50_000, 5_000), **overrides)
