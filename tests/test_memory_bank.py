"""Memory bank: the momentum update against the formula in float64, read-before-write, staleness."""
import pytest
import torch

from instdisc_lesson.memory_bank import MemoryBank


def test_init_rows_are_random_unit_vectors():
    bank = MemoryBank(100, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(100), atol=1e-6)
    assert bank.bank.mean(0).abs().max() < 0.2  # no shared direction (mean of 100 random unit rows ~ 0.1/row)


def test_update_matches_formula_including_renormalisation():
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(10, 4, momentum=0.5, generator=g)
    before = bank.bank.clone().double()
    idx = torch.tensor([3, 7])
    f = torch.nn.functional.normalize(torch.randn(2, 4, generator=g), dim=1)
    bank.update(idx, f)
    # Reference, by hand in float64: v <- (m v + (1-m) f) / ||m v + (1-m) f||
    mixed = 0.5 * before[idx] + 0.5 * f.double()
    expected = mixed / mixed.norm(dim=1, keepdim=True)
    assert torch.allclose(bank.bank[idx].double(), expected, atol=1e-6)
    untouched = torch.tensor([0, 1, 2, 4, 5, 6, 8, 9])
    assert torch.equal(bank.bank[untouched].double(), before[untouched])


def test_momentum_zero_overwrites():
    bank = MemoryBank(5, 3, momentum=0.0)
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, 2.0]]), dim=1)
    bank.update(torch.tensor([2]), f)
    assert torch.allclose(bank.bank[2], f[0])


def test_read_returns_rows_before_update():
    bank = MemoryBank(6, 3, momentum=0.5)
    idx = torch.tensor([1, 4])
    positive = bank.read(idx)
    old = positive.clone()
    bank.update(idx, torch.nn.functional.normalize(torch.ones(2, 3), dim=1))
    assert torch.equal(positive, old)  # a copy: the update cannot leak into the positive already read


def test_age_counts_updates_since_last_write():
    bank = MemoryBank(4, 2)
    f = torch.nn.functional.normalize(torch.ones(1, 2), dim=1)
    bank.update(torch.tensor([0]), f)  # step 0
    bank.update(torch.tensor([1]), f)  # step 1
    bank.update(torch.tensor([0]), f)  # step 2
    assert bank.age().tolist() == [1, 2, 3, 3]  # rows 2, 3 were never written: as old as the run


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_momentum_outside_range_is_rejected(momentum):
    with pytest.raises(ValueError, match=rf"momentum={momentum} must lie in \[0, 1\)"):
        MemoryBank(10, 4, momentum=momentum)


def test_bad_features_and_indices_are_rejected():
    bank = MemoryBank(10, 4)
    with pytest.raises(ValueError, match="do not fit dim 4"):
        bank.update(torch.tensor([0]), torch.ones(1, 5))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 9\]"):
        bank.update(torch.tensor([10]), torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 9\]"):
        bank.update(torch.tensor([-1]), torch.ones(1, 4))


def test_nan_features_and_float_indices_never_reach_the_bank():
    bank = MemoryBank(10, 4, generator=torch.Generator().manual_seed(0))
    before = bank.bank.clone()
    with pytest.raises(ValueError, match="NaN or inf and were refused"):
        bank.update(torch.tensor([1, 2]), torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="NaN or inf"):
        bank.fill(torch.full((10, 4), float("inf")))
    with pytest.raises(ValueError, match="integer tensor"):
        bank.update(torch.tensor([1.0, 2.0]), torch.ones(2, 4))
    assert torch.equal(bank.bank, before) and int(bank.step) == 0
    bank.update(torch.tensor([3]), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float16))  # any float dtype is fine
    assert bank.bank.dtype == torch.float32 and torch.isfinite(bank.bank).all()
