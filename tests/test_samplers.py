"""Sliding-window scheduler: windows and visit gaps against hand-computed values."""
import pytest
import torch

from instdisc_lesson.samplers import SlidingWindowSampler, standard_epoch, visit_gaps


def test_windows_slide_and_wrap_by_hand():
    s = SlidingWindowSampler(n=8, window=4, stride=2, shuffle=False)
    assert [s.window(e).tolist() for e in range(5)] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 0, 1], [0, 1, 2, 3]]
    assert s.cycle == 4


def test_visit_gaps_by_hand():
    """n=8, D=4, S=2, B=2, no shuffle, 8 windows (two cycles, 16 steps).
    Steps: w0 [0,1],[2,3]; w1 [2,3],[4,5]; w2 [4,5],[6,7]; w3 [6,7],[0,1]; then again.
    Instances 2..7 are seen at steps s, s+1, s+8, s+9: gaps 1, 7, 1 (six instances).
    Instances 0, 1 are seen at steps 0, 7, 8, 15: gaps 7, 1, 7.
    So 6*2 + 2*1 = 14 gaps of 1 and 6*1 + 2*2 = 10 gaps of 7."""
    s = SlidingWindowSampler(n=8, window=4, stride=2, shuffle=False)
    batches = [b for e in range(8) for b in s.window(e).split(2)]
    gaps = visit_gaps(batches)
    assert sorted(set(gaps.tolist())) == [1, 7]
    assert int((gaps == 1).sum()) == 14 and int((gaps == 7).sum()) == 10
    assert visit_gaps([torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([1, 0])]).tolist() == [1, 2, 1]


def test_every_instance_is_visited_within_a_cycle():
    s = SlidingWindowSampler(n=1000, window=128, stride=32, seed=3)
    seen = torch.cat([s.window(e, torch.Generator().manual_seed(e)) for e in range(s.cycle)])
    assert set(seen.tolist()) == set(range(1000))
    assert len(seen) == s.cycle * 128


def test_sliding_window_shortens_gaps():
    """Standard epochs: mean gap n/B. Sliding window: most gaps are within the D/S consecutive windows (~D/B steps)."""
    n, B, D, S = 1024, 32, 256, 32
    g = torch.Generator().manual_seed(0)
    standard = visit_gaps([b for _ in range(6) for b in standard_epoch(n, g).split(B)])
    s = SlidingWindowSampler(n, D, S)
    sliding = visit_gaps([b for e in range(3 * s.cycle) for b in s.window(e, g).split(B)])
    assert abs(standard.float().mean().item() - n / B) < 0.1 * n / B
    assert sliding.float().median().item() <= D / B


def test_bad_windows_are_rejected():
    with pytest.raises(ValueError, match="need 1 <= stride <= window <= n"):
        SlidingWindowSampler(n=10, window=20, stride=5)
    with pytest.raises(ValueError, match="need 1 <= stride <= window <= n"):
        SlidingWindowSampler(n=10, window=4, stride=8)
