"""GuardedConv3d: float32 where CPU bfloat16 gives a wrong weight gradient (an input smaller than the kernel, as a
V-Net's bottleneck on a 32-voxel-deep patch); a plain Conv3d everywhere else and in export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_stlu.networks import GuardedConv3d, STLUNet


def float64_grads(conv, x, gy):
    """Weight and input gradients of the convolution in float64, from the bfloat16-rounded operands."""
    w = conv.weight.detach().double().requires_grad_(True)
    xd = x.detach().bfloat16().double().requires_grad_(True)
    F.conv3d(xd, w, conv.bias.detach().double(), padding=conv.padding).backward(gy.bfloat16().double())
    return w.grad, xd.grad


@pytest.mark.parametrize("shape", [(2, 16, 2, 6, 6), (2, 16, 6, 6, 2), (2, 64, 2, 2, 2), (2, 16, 6, 6, 4)])
def test_bf16_weight_gradient_matches_float64(shape):
    conv = GuardedConv3d(shape[1], shape[1], 3, padding=1)
    x, gy = torch.randn(shape), torch.randn(shape)
    ref_w, ref_x = float64_grads(conv, x, gy)
    for _ in range(10):  # the unguarded kernel's error varied from call to call
        conv.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        y.backward(gy.to(y.dtype))
        err_w = float((conv.weight.grad.double() - ref_w).abs().max() / ref_w.abs().max())
        err_x = float((xi.grad.double() - ref_x).abs().max() / ref_x.abs().max())
        assert err_w < 2e-2 and err_x < 2e-2, (err_w, err_x)
    small = any(s < 3 for s in shape[2:])
    assert (y.dtype == torch.float32) == small  # float32 only where the input is smaller than the kernel


def test_same_parameters_outputs_and_export_as_conv3d():
    torch.manual_seed(0)
    guarded, plain = GuardedConv3d(4, 8, 3, padding=1), torch.nn.Conv3d(4, 8, 3, padding=1)
    plain.load_state_dict(guarded.state_dict())
    x = torch.randn(1, 4, 2, 5, 5)
    torch.testing.assert_close(guarded(x), plain(x), rtol=0, atol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference keeps the fast path
        assert guarded(x).dtype == torch.bfloat16
    scripted = torch.jit.script(guarded)
    torch.testing.assert_close(scripted(x), plain(x), rtol=0, atol=0)


def test_network_on_32_voxel_patch_has_finite_repeatable_bf16_gradients():
    """The failure as it showed: an STLU-Net's bf16 gradients on 32^3 patches held 1e37 values or NaN at random."""
    net = STLUNet(n_filters=4)
    x = torch.randn(2, 1, 32, 32, 32)
    grads = []
    for _ in range(4):
        torch.manual_seed(1)  # the same channel dropout every time
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.cat(list(net(x[:1], x[1:])))
        out.float().square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
