"""ConvNet energies: one energy per image at every size, the published 32-px layout, spectral norm, input gradients,
validation."""

import pytest
import torch
from torch import nn

from anila_core.images.convnets import IMAGE_SIZES, ConvEnergy, make_convnet


def _convs(net):
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_one_energy_per_image(size, channels):
    net = make_convnet((channels, size, size), width=4)
    x = torch.rand(3, channels, size, size) * 2 - 1
    e = net(x)
    assert e.shape == (3,) and torch.isfinite(e).all()
    # no batch statistics: an image's energy does not depend on its neighbours in the batch
    assert torch.allclose(net(x[1:2]), e[1:2], atol=1e-6)


def test_default_32px_layout_is_the_vanilla_convnet():
    net = make_convnet((3, 32, 32))
    convs = _convs(net)
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert [(c.kernel_size[0], c.stride[0]) for c in convs] == [(3, 1), (4, 2), (4, 2), (4, 2), (4, 1)]
    assert isinstance(net.net[1], nn.LeakyReLU) and net.net[1].negative_slope == 0.2


def test_depth_grows_with_size_and_width_is_capped():
    n_convs = {s: len(_convs(make_convnet((3, s, s), width=2))) for s in IMAGE_SIZES}
    assert n_convs == {8: 3, 16: 4, 32: 5, 64: 6}
    assert max(c.out_channels for c in _convs(make_convnet((3, 64, 64), width=2))) == 16


def test_activation_choice():
    net = make_convnet((1, 16, 16), width=4, activation="silu")
    assert any(isinstance(m, nn.SiLU) for m in net.modules())
    assert not any(isinstance(m, nn.LeakyReLU) for m in net.modules())


def test_spectral_norm_makes_every_layer_sigma_one():
    torch.manual_seed(0)
    net = make_convnet((3, 32, 32), width=8, spectral_norm=True)
    x = torch.randn(2, 3, 32, 32)
    net.train()
    for _ in range(30):  # one power iteration per training-mode forward pass
        net(x)
    convs = _convs(net)
    assert len(convs) == 5 and all(hasattr(c, "parametrizations") for c in convs)
    for conv in convs:
        w = conv.weight  # the normalised weight the layer uses
        sigma = torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.02)
    plain = _convs(make_convnet((3, 32, 32), width=8))
    assert not any(hasattr(c, "parametrizations") for c in plain)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_input_gradient_exists(spectral_norm):
    net = make_convnet((3, 16, 16), width=4, spectral_norm=spectral_norm).eval()
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    (g,) = torch.autograd.grad(net(x).sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    # each image's gradient comes from its own energy only
    (g0,) = torch.autograd.grad(net(x[:1]).sum(), x)
    assert torch.allclose(g0[0], g[0], atol=1e-6) and (g0[1:] == 0).all()


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="image_size: expected one of"):
        ConvEnergy(image_size=28)
    with pytest.raises(ValueError, match="image_size"):
        make_convnet((3, 128, 128))
    with pytest.raises(ValueError, match="image_shape: expected square"):
        make_convnet((3, 32, 16))
    with pytest.raises(ValueError, match="image_shape: expected \\(channels, height, width\\)"):
        make_convnet((32, 32))
    with pytest.raises(ValueError, match="in_channels: expected an integer >= 1"):
        make_convnet((0, 32, 32))
    with pytest.raises(ValueError, match="width: expected an integer >= 1"):
        make_convnet((3, 32, 32), width=0)
    with pytest.raises(ValueError, match="activation: unknown name 'gelu'"):
        make_convnet((3, 32, 32), activation="gelu")
    with pytest.raises(ValueError, match="spectral_norm"):
        make_convnet((3, 32, 32), spectral_norm="yes")
    with pytest.raises(ValueError, match="x: expected shape \\(N, 3, 32, 32\\)"):
        make_convnet((3, 32, 32), width=2)(torch.zeros(2, 3, 16, 16))
