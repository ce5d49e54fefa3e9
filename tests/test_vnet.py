from __future__ import annotations

import pytest
import torch

from monai_stlu.networks.nets import VNet


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_count():
    assert n_params(VNet(in_channels=1, out_channels=2)) == 9_448_866


def test_parameter_count_scales_with_filters():
    # conv weights scale with n_filters^2: a 4x smaller n_filters has about 16x fewer parameters
    small = n_params(VNet(n_filters=4))
    assert 9_448_866 / 17 < small < 9_448_866 / 15


@pytest.mark.parametrize("spatial_dims, shape", [(3, (2, 1, 32, 32, 16)), (2, (2, 3, 32, 48))])
def test_output_shape(spatial_dims, shape):
    net = VNet(spatial_dims=spatial_dims, in_channels=shape[1], out_channels=4, n_filters=4).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], 4, *shape[2:])


def test_encode_decode_interface():
    net = VNet(n_filters=4).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    feats = net.encode(x)
    assert [f.shape[1] for f in feats] == [4, 8, 16, 32, 64]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    with torch.no_grad():
        assert torch.equal(net.decode(feats), net(x))


def test_dropout_is_active_only_in_train_mode():
    net = VNet(n_filters=4, dropout=True)
    x = torch.rand(1, 1, 32, 32, 16)
    net.train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 1}, {"normalization": "layer"}, {"n_filters": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        VNet(**kwargs)
