from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.window_loop import window_loop
from monai_stlu.inferers import StrideSlidingWindowInferer, stride_to_overlap
from monai_stlu.networks import VNet


@pytest.mark.parametrize("shape", [(1, 1, 70, 50, 40), (1, 1, 28, 40, 30)])  # the second needs padding
def test_matches_community_loop(shape):
    torch.manual_seed(0)
    net = VNet(n_filters=4).eval()
    image = torch.randn(shape)
    patch, stride = (32, 32, 16), (9, 9, 4)
    inferer = StrideSlidingWindowInferer(roi_size=patch, stride=stride, sw_batch_size=5)
    with torch.no_grad():
        got = inferer(image, net)[0].double()
    want = window_loop(net, image, patch, stride)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_stride_to_overlap_gives_exact_intervals():
    from monai.inferers.utils import _get_scan_interval

    for roi, stride in [((112, 112, 80), (18, 18, 4)), ((96, 96, 96), (16, 16, 16)), ((64, 64, 48), (48, 48, 32))]:
        ov = stride_to_overlap(roi, stride)
        assert _get_scan_interval((300, 300, 300), roi, 3, ov) == tuple(stride)
    with pytest.raises(ValueError):
        stride_to_overlap((32, 32), (0, 8))
    with pytest.raises(ValueError):
        stride_to_overlap((32, 32), (8,))


def test_amp_path_agrees_with_fp32():
    torch.manual_seed(0)
    net = VNet(n_filters=4).eval()
    image = torch.randn(1, 1, 48, 48, 32)
    fp32 = StrideSlidingWindowInferer((32, 32, 16), (16, 16, 8))
    fast = StrideSlidingWindowInferer((32, 32, 16), (16, 16, 8), amp=True, channels_last=True)
    with torch.no_grad():
        a, b = fp32(image, net), fast(image, net)
    assert b.dtype == torch.float32
    agree = (a.argmax(1) == b.argmax(1)).float().mean()
    assert agree > 0.98
    assert (a - b).abs().max() < 0.05
