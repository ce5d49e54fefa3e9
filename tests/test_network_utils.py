from __future__ import annotations

import torch
from torch import nn

from monai_stlu.inferers import StrideSlidingWindowInferer
from monai_stlu.networks import MCNetPlus, STLUNet, VNet, fuse_conv_bn


def _randomise_norms(net: nn.Module, mean_offset: float = 0.0) -> None:
    """Give every BatchNorm non-trivial statistics and affine weights; optionally shift a conv bias and the
    matching running mean by the same amount (the function is unchanged, the magnitudes are not)."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.Sequential):
            for conv, bn in zip(list(m)[:-1], list(m)[1:]):
                if isinstance(bn, nn.BatchNorm3d) and isinstance(conv, (nn.Conv3d, nn.ConvTranspose3d)):
                    n = bn.num_features
                    bn.running_mean.copy_(torch.randn(n, generator=g) * 0.3 + mean_offset)
                    bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                    bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                    bn.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
                    conv.bias.data += mean_offset


def test_folded_network_computes_the_same_function():
    torch.manual_seed(0)
    for net in (VNet(n_filters=4), MCNetPlus(n_filters=4), STLUNet(n_filters=4)):
        net = net.double()
        _randomise_norms(net)
        net.train()
        x = torch.randn(2, 1, 32, 32, 16, dtype=torch.float64)
        folded = fuse_conv_bn(net)
        n_bn = sum(isinstance(m, nn.BatchNorm3d) for m in net.modules())
        assert n_bn > 0 and not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
        assert net.training and not folded.training  # the original is untouched, the copy is in eval mode
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net.eval()(x), rtol=1e-10, atol=1e-10)


def test_norms_without_running_statistics_stay():
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2, track_running_stats=False))
    assert isinstance(fuse_conv_bn(net)[1], nn.BatchNorm3d)


def test_inferer_folds_for_mixed_precision_and_leaves_network_alone():
    # a conv bias of 24 cancelled by BatchNorm's running mean: unfolded, bf16 rounds the conv output at a spacing
    # of 0.125 before the subtraction; folded, the rounding is relative to the normalised output
    torch.manual_seed(1)
    net = VNet(n_filters=4)
    _randomise_norms(net, mean_offset=24.0)
    net.eval()
    image = torch.randn(1, 1, 40, 40, 24)
    roi, stride = (32, 32, 16), (8, 8, 8)
    with torch.no_grad():
        ref = StrideSlidingWindowInferer(roi, stride, fuse_bn=False)(image, net)
        # bf16 forced: "auto" is float32 on a CPU without native bf16 (AVX2), where there is no rounding to compare
        bf16 = dict(amp=True, amp_dtype="bfloat16", channels_last=True)
        folded = StrideSlidingWindowInferer(roi, stride, **bf16)(image, net)
        unfolded = StrideSlidingWindowInferer(roi, stride, fuse_bn=False, **bf16)(image, net)
    err_folded, err_unfolded = (folded - ref).abs().max(), (unfolded - ref).abs().max()
    assert err_folded < 0.02 and err_unfolded > 3 * err_folded, (err_folded, err_unfolded)
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    assert not net.training


def test_inferer_unwraps_data_parallel():
    torch.manual_seed(2)
    net = VNet(n_filters=4)
    _randomise_norms(net)
    net.eval()
    image = torch.randn(1, 1, 32, 32, 16)
    inferer = StrideSlidingWindowInferer((32, 32, 16), (16, 16, 8))
    with torch.no_grad():
        torch.testing.assert_close(inferer(image, nn.DataParallel(net).eval()), inferer(image, net), rtol=1e-5, atol=1e-6)
