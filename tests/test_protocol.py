"""The objective protocol (objectives.py): the trainer asks objectives, it never probes or names them."""
import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from instdisc_lesson import trainer as trainer_module
from instdisc_lesson.nce import NCE
from instdisc_lesson.nonparametric import NonParametricSoftmax
from instdisc_lesson.objectives import BankObjective, Objective
from instdisc_lesson.registry import OBJECTIVES, build_objective, objective_class
from instdisc_lesson.parametric import ParametricSoftmax
from instdisc_lesson.pic import PIC, RowSparseSGD
from instdisc_lesson.recipe import TrainConfig, deviations, paper_config, quick_config

SGD_CFG = SimpleNamespace(lr=0.1, momentum=0.9, weight_decay=5e-4)


def test_trainer_source_has_no_probe_and_no_objective_name():
    """Read trainer.py itself: no hasattr/getattr on the objective, no objective name as a string."""
    tree = ast.parse(Path(inspect.getsourcefile(trainer_module)).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr"):
            assert "objective" not in ast.unparse(node.args[0]), ast.unparse(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in OBJECTIVES, f"trainer.py names the objective {node.value!r}"


def test_every_objective_is_an_objective_and_built_from_the_config():
    for name in OBJECTIVES:
        cfg = quick_config(objective=name, dim=8, **({"nce_m": 5} if name == "nce" else {}))
        obj = build_objective(cfg, 20)
        assert isinstance(obj, Objective) and type(obj) is objective_class(name)
    assert issubclass(NCE, BankObjective) and issubclass(NonParametricSoftmax, BankObjective)
    assert not issubclass(PIC, BankObjective) and not issubclass(ParametricSoftmax, BankObjective)


def test_the_objectives_say_what_they_need():
    assert PIC.head == "mlp" and PIC.default_tau == 0.2
    assert all(objective_class(n).head == "linear" and objective_class(n).default_tau is None
               for n in ("parametric", "softmax", "nce"))
    # presets ask the class: PIC gets its own tau unless one is given; the others keep the preset's
    assert quick_config(objective="pic").tau == 0.2 and paper_config(objective="pic").tau == 0.2
    assert quick_config(objective="pic", tau=0.5).tau == 0.5
    assert quick_config(objective="softmax").tau == 0.1 and paper_config(objective="nce").tau == 0.07


def test_deviations_name_what_the_paper_did_not_run():
    """Table 1's NCE rows (m = 1, 10, 512, 4096) are the paper's own runs, so their m is no deviation; an m the
    paper never ran is, and so is the EMA of Z. The softmax has no m to depart in: an m given to it is refused."""
    for m in (1, 10, 512, 4096):
        assert deviations(paper_config(objective="nce", nce_m=m)) == {}, m
        assert deviations(paper_config(objective="nce", nce_m=m, z_mode="ema")) == {"z_mode": ("ema", "once")}, m
    assert deviations(paper_config(objective="nce", nce_m=256)) == {"nce_m": (256, 4096)}
    assert deviations(paper_config(objective="softmax")) == {}
    with pytest.raises(ValueError, match="nce_m is not read by the softmax objective"):
        paper_config(objective="softmax", nce_m=256)


def test_defaults_of_the_protocol():
    obj = ParametricSoftmax(10, 4)
    assert obj.bank is None and obj.extras() == {}
    obj.start_from(torch.zeros(10, 4))  # no rows to start: a no-op
    assert type(obj.make_optimizer(obj.parameters(), SGD_CFG)) is torch.optim.SGD


def test_bank_objectives_expose_their_bank_and_nce_its_log_Z():
    soft, nce = NonParametricSoftmax(10, 4), NCE(10, 4, m=3)
    assert soft.bank is soft.memory.bank and nce.bank is nce.memory.bank
    assert soft.extras() == {} and set(nce.extras()) == {"log_Z"}


@pytest.mark.parametrize("correction", [True, False])
def test_pic_asks_for_its_row_sparse_optimizer(correction):
    obj = PIC(10, 4, correction=correction)
    opt = obj.make_optimizer(obj.parameters(), SGD_CFG)
    assert isinstance(opt, RowSparseSGD) and opt.correction is correction
    assert not hasattr(obj.weight, "sampled_rows")  # no hidden channel between objective and optimizer


@pytest.mark.parametrize("kwargs,message", [
    (dict(bank_momentum=1.5), r"bank_momentum=1.5 must lie in \[0, 1\) \(--bank-momentum"),
    (dict(tau=0.0), r"tau=0.0 must be > 0 \(--tau"), (dict(lam=-1.0), r"lam=-1.0 must be >= 0 \(--lam"),
    (dict(objective="triplet"), "unknown objective 'triplet'"), (dict(model="vgg"), "unknown model 'vgg'"),
    (dict(z_mode="sometimes"), r"z_mode='sometimes' is unknown \(--z-mode\)"),
    (dict(objective="pic", recent_k=-2), r"recent_k=-2 must be >= 0 \(--recent-k"), (dict(epochs=0), r"epochs=0 must be a positive integer \(--epochs\)"),
])
def test_config_messages_name_the_user_facing_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_every_check_lives_in_validate():
    import instdisc_lesson

    package = Path(instdisc_lesson.__file__).parent
    for path in package.rglob("*.py"):
        if path.name in ("validate.py", "exercises.py", "objective_checks.py"):
            continue  # the notebooks' checks (of exercises, of the trainer's objectives) are not validators
        tree = ast.parse(path.read_text())
        defined = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("check_")]
        assert not defined, f"{path.name} defines {defined}: validators belong in validate.py"


def test_build_encoder_is_the_trainers_starting_point(tiny):
    from instdisc_lesson.models import build_encoder
    from instdisc_lesson.trainer import Trainer

    train, test = tiny
    cfg = quick_config(epochs=1, batch_size=16, knn_k=5)
    model, features = build_encoder(cfg, train.images)
    trainer = Trainer(cfg, train, test, progress=False)
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)  # same seed, same init, same BatchNorm statistics
    assert torch.allclose(features, trainer.objective.bank, atol=1e-5)  # bank_init="features" starts from them
