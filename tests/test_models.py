"""Encoders: unit-length outputs of the requested dimension, and the CIFAR ResNet-18 stem."""
import pytest
import torch

from instdisc_lesson.models import ConvNet, build_model, resnet18_cifar


@pytest.mark.parametrize("name,dim", [("convnet", 128), ("convnet", 16), ("resnet18", 32)])
def test_output_is_unit_length(name, dim):
    model = build_model(name, dim).eval()
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_resnet18_has_cifar_stem():
    net = resnet18_cifar().backbone
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)
    # A 32x32 input reaches the last block at 4x4 (32 -> 32 -> 16 -> 8 -> 4), not 1x1 as with the ImageNet stem.
    feats = {}
    def record(module, inputs, output):
        feats["l4"] = output.shape

    net.layer4.register_forward_hook(record)
    net.eval()(torch.rand(1, 3, 32, 32))
    assert feats["l4"][-2:] == (4, 4)


def test_convnet_parameter_count_is_small():
    assert sum(p.numel() for p in ConvNet().parameters()) < 200_000


def test_unknown_model_and_bad_dim():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg")
    with pytest.raises(ValueError, match="dim=0 must be a positive"):
        build_model("convnet", 0)
