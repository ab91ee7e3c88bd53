"""PIC: cosine softmax against a float64 loop, recent negatives with K = n, and the weight-update correction."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from instdisc_lesson.pic import PIC


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_cosine_softmax_equals_brute_force():
    obj = PIC(n=6, dim=4, tau=0.2, generator=torch.Generator().manual_seed(0))
    f, idx = unit(3, 4, seed=1), torch.tensor([5, 0, 2])
    W = obj.weight.detach().double()
    W = W / W.norm(dim=1, keepdim=True)
    expected = 0.0
    for row, i in zip(f.double(), idx.tolist()):
        logits = [float(W[j] @ row) / 0.2 for j in range(6)]
        expected += -(logits[i] - math.log(sum(math.exp(z) for z in logits)))
    assert obj(f, idx).item() == pytest.approx(expected / 3, rel=1e-5)


def test_recent_negatives_with_k_equal_n_is_the_full_cosine_softmax():
    full = PIC(n=20, dim=4, tau=0.2, generator=torch.Generator().manual_seed(0))
    recent = PIC(n=20, dim=4, tau=0.2, recent_k=20)
    recent.weight.data.copy_(full.weight.data)
    for batch in torch.arange(20).split(5):  # one pass fills the queue with all 20 instances
        recent.after_step(None, batch)
    f, idx = unit(5, 4, seed=2), torch.tensor([3, 17, 8, 8, 0])
    assert recent(f, idx).item() == pytest.approx(full(f, idx).item(), rel=1e-6)
    assert recent.candidates(idx).tolist() == list(range(20))


def test_queue_keeps_the_k_most_recent():
    obj = PIC(n=100, dim=4, recent_k=6)
    for batch in (torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])):
        obj.after_step(None, batch)
    assert sorted(obj.queue.tolist()) == [3, 4, 5, 6, 7, 8]
    assert obj.candidates(torch.tensor([50])).tolist() == [3, 4, 5, 6, 7, 8, 50]


def _two_steps(correction):
    torch.manual_seed(0)
    obj = PIC(n=10, dim=4, tau=0.2, correction=correction, generator=torch.Generator().manual_seed(0))
    obj.recent_k = 0
    opt = obj.make_optimizer(obj.parameters(), SimpleNamespace(lr=0.1, momentum=0.9, weight_decay=5e-4))
    history = []
    for idx in (torch.tensor([0, 1]), torch.tensor([2, 3])):
        obj.candidates = lambda i: i.sort().values  # only the batch's rows are sampled (as with tiny K)
        loss = obj(unit(2, 4, seed=int(idx[0])), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((obj.weight.detach().clone(), opt.state[obj.weight]["momentum_buffer"].clone()))
    return history


def test_correction_keeps_unsampled_rows_and_momentum_bit_identical():
    (w1, m1), (w2, m2) = _two_steps(correction=True)
    untouched = [0, 1, 4, 5, 6, 7, 8, 9]  # step 2 samples rows 2 and 3 only
    assert torch.equal(w2[untouched], w1[untouched]) and torch.equal(m2[untouched], m1[untouched])
    assert not torch.equal(w2[[2, 3]], w1[[2, 3]])
    never = [4, 5, 6, 7, 8, 9]
    assert torch.equal(m2[never], torch.zeros_like(m2[never]))


def test_without_correction_momentum_and_decay_move_unsampled_rows():
    (w1, m1), (w2, m2) = _two_steps(correction=False)
    assert not torch.equal(w2[[0, 1]], w1[[0, 1]])  # momentum carried rows 0, 1 on with no gradient
    assert not torch.equal(w2[[4, 5]], w1[[4, 5]])  # weight decay shrinks never-sampled rows
    assert (w2[[4, 5]].norm(dim=1) < w1[[4, 5]].norm(dim=1)).all()


def test_pic_trains_through_the_trainer(tiny):
    from instdisc_lesson.recipe import quick_config
    from instdisc_lesson.trainer import Trainer

    train, test = tiny
    cfg = quick_config(objective="pic", epochs=2, batch_size=16, knn_k=5, window=32, stride=8, recent_k=24)
    trainer = Trainer(cfg, train, test, progress=False)
    before = trainer.objective.weight.detach().clone()
    trainer.fit()
    assert cfg.tau == 0.2 and len(trainer.history) == 2
    assert isinstance(trainer.model.head, torch.nn.Sequential)  # PIC's 2-layer MLP head
    visited = set(torch.cat([trainer.objective.sampler.window(e) for e in range(2)]).tolist())
    others = sorted(set(range(64)) - visited)
    changed = (trainer.objective.weight.detach() != before).any(dim=1)
    assert not changed[others].any(), "rows never sampled must not move with the correction on"


def test_bad_pic_arguments():
    with pytest.raises(ValueError, match="tau=0 must be > 0"):
        PIC(10, 4, tau=0)
    with pytest.raises(ValueError, match="recent_k=-1 must be >= 0"):
        PIC(10, 4, recent_k=-1)
