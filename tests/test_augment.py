"""Batched augmentation: shape and range, identity, per-sample independence, and hand-checkable cases."""
import math

import pytest
import torch

from instdisc_lesson.augment import AugmentConfig, augment, color_jitter, grayscale


def batch(n=16, seed=0):
    return (torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def test_shape_dtype_and_range():
    out = augment(batch(), AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_identity_settings_return_input():
    x = batch()
    out = augment(x, AugmentConfig.identity())
    assert torch.allclose(out, x.float() / 255, atol=1e-6)


def test_each_sample_gets_its_own_parameters():
    """One image repeated 64 times: per-sample draws give 64 different views (one draw would give 1)."""
    x = batch(1).expand(64, -1, -1, -1)
    out = augment(x, AugmentConfig(), torch.Generator().manual_seed(0)).flatten(1)
    distances = torch.cdist(out, out)
    assert (distances + torch.eye(64) * 1e9).min() > 1e-3


def test_generator_makes_it_reproducible():
    x = batch()
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(5))
    c = augment(x, AugmentConfig(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_only_is_an_exact_mirror():
    x = batch()
    out = augment(x, AugmentConfig.identity().with_(p_flip=1.0))
    assert torch.allclose(out, x.float().flip(-1) / 255, atol=1e-6)


def test_gray_only_gives_luma_in_all_channels():
    x = batch()
    out = augment(x, AugmentConfig.identity().with_(p_gray=1.0))
    luma = 0.2989 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()  # torchvision's weights, by hand
    for c in range(3):
        assert torch.allclose(out[:, c], luma / 255, atol=1e-5)


def test_grayscale_probability_is_per_sample():
    x = batch(400)
    out = augment(x, AugmentConfig.identity().with_(p_gray=0.2), torch.Generator().manual_seed(0))
    gray = ((out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) < 1e-6).float().mean().item()
    assert abs(gray - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 400)  # binomial standard error, 4 sigma


def test_brightness_scales_each_image_by_one_factor_in_range():
    x = torch.full((200, 3, 32, 32), 0.5)
    out = color_jitter(x, AugmentConfig.identity().with_(brightness=0.4), torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / 0.5
    assert torch.allclose(out, factors.view(-1, 1, 1, 1).expand_as(out) * 0.5)  # one factor per image
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6 and factors.std() > 0.1


def test_hue_rotation_keeps_gray_and_rotates_colour():
    gray = torch.full((8, 3, 4, 4), 0.3)
    out = color_jitter(gray, AugmentConfig.identity().with_(hue=0.5), torch.Generator().manual_seed(0))
    assert torch.allclose(out, gray, atol=1e-6)  # grey lies on the rotation axis
    red = torch.zeros(64, 3, 4, 4)
    red[:, 0] = 0.6
    out = color_jitter(red, AugmentConfig.identity().with_(hue=0.5), torch.Generator().manual_seed(0))
    assert torch.allclose(out.sum(1), red.sum(1), atol=1e-5) or out.max() <= 1.0  # sum kept unless clipped
    assert (out[:, 1:].amax(dim=(1, 2, 3)) > 0.1).any()  # some rotations moved red towards green/blue


def test_crop_of_constant_image_is_constant():
    x = torch.full((8, 3, 32, 32), 0.25)
    out = augment(x, AugmentConfig().with_(brightness=0, contrast=0, saturation=0, hue=0, p_gray=0),
                  torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-6)


def test_crop_zooms_in():
    """A crop at scale s of a horizontal ramp spans about sqrt(s) of the ramp's range."""
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(50, 3, 32, 32).contiguous()
    cfg = AugmentConfig.identity().with_(crop_scale=(0.25, 0.25))  # square crops of half the width
    out = augment(ramp, cfg, torch.Generator().manual_seed(0))
    span = out[:, 0, 16, -1] - out[:, 0, 16, 0]
    assert torch.allclose(span, torch.full_like(span, 0.5 * 31 / 32), atol=0.04)


def _orientation(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B,) the angle in degrees of each image's main axis (second moments of its brightness)."""
    w = images[:, 0]
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    m = w.sum((1, 2))
    cx, cy = (w * xs).sum((1, 2)) / m, (w * ys).sum((1, 2)) / m
    dx, dy = xs - cx.view(-1, 1, 1), ys - cy.view(-1, 1, 1)
    mu20, mu02, mu11 = (w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


def test_rotation_turns_a_bar_by_at_most_rotate_degrees():
    """A horizontal bar keeps its axis at 0 degrees without rotation; with rotate=30 each view's axis turns by a
    drawn angle within [-30, 30] degrees (degrees, not radians) and the draws cover the range."""
    bar = torch.zeros(200, 3, 32, 32)
    bar[:, :, 15:17, 6:26] = 1.0
    still = augment(bar, AugmentConfig.identity(), torch.Generator().manual_seed(0))
    assert _orientation(still).abs().max() < 0.5
    turned = _orientation(augment(bar, AugmentConfig.identity().with_(rotate=30), torch.Generator().manual_seed(0)))
    assert turned.abs().max() <= 31.0
    assert turned.min() < -25 and turned.max() > 25 and turned.abs().mean() > 10


def test_rotation_changes_the_views():
    x = batch(8)
    assert not torch.equal(augment(x, AugmentConfig(), torch.Generator().manual_seed(3)),
                           augment(x, AugmentConfig(rotate=10.0), torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(rotate=-5.0), "rotate"), (dict(rotate=200.0), "rotate"),
    (dict(crop_scale=(0.0, 1.0)), "crop_scale"), (dict(crop_scale=(0.8, 0.5)), "crop_scale"),
    (dict(brightness=-0.1), "brightness"), (dict(hue=0.7), "hue"), (dict(p_gray=1.5), "p_gray"),
])
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        augment(torch.zeros(3, 32, 32))


def test_grayscale_helper_matches_torchvision():
    import torchvision.transforms.functional as TF

    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
