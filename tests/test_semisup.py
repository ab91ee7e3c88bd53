"""Few labels: balanced label subsets, and a supervised recipe that leaves the pretrained network alone."""
import pytest
import torch

from conftest import make_dataset
from instdisc_lesson.models import build_model
from instdisc_lesson.semisup import accuracy, balanced_fraction, supervised


def test_balanced_fraction_takes_the_same_number_per_class():
    labels = torch.arange(1000) % 10  # 100 per class
    idx = balanced_fraction(labels, 0.05, seed=1)
    assert len(idx) == 50 and torch.bincount(labels[idx]).tolist() == [5] * 10
    assert len(idx.unique()) == 50 and torch.equal(idx, balanced_fraction(labels, 0.05, seed=1))  # repeatable
    assert not torch.equal(idx, balanced_fraction(labels, 0.05, seed=2))
    assert len(balanced_fraction(labels, 0.001)) == 10  # at least one per class
    with pytest.raises(ValueError, match=r"fraction=1.5 must lie in \(0, 1\]"):
        balanced_fraction(labels, 1.5)


def test_supervised_trains_a_copy_and_learns_colours():
    data = make_dataset(96)  # each class its own mean colour; train on images 0-63, test on 64-95
    train, test = data, data.subset(range(64, 96))
    torch.manual_seed(0)
    encoder = build_model("convnet", 16)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = supervised(encoder, train, torch.arange(64), test, steps=40, batch_size=16, lr=0.05, eval_every=20)
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())  # the argument is untouched
    assert [s for s, _ in result["history"]] == [20, 40] and result["history"][-1][1] == result["top1"]
    assert result["top1"] >= 0.6  # 4 colour classes, chance 0.25; seeds 0-3 gave 1.0, 0.75, 1.0, 0.75


def test_accuracy_counts_argmax_hits():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # predicts class 1 for every image
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2) + self.p

    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    assert accuracy(Fixed(), images, torch.tensor([1, 1, 0, 1])) == 0.75
