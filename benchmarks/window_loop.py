"""The community's sliding-window evaluation (``test_single_case`` of UA-MT / MC-Net), restated: one window at a
time, softmax per window, probabilities averaged by count. The baseline of ``speed.py`` and an independent check of
``StrideSlidingWindowInferer`` in the tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["window_loop"]


def window_loop(net, image: torch.Tensor, patch: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Average softmax of ``net`` over windows at ``min(stride * i, size - patch)``, after zero padding the volume
    (centred) up to the patch size. ``image`` is (1, 1, X, Y, Z); returns (C, X, Y, Z) float64 probabilities."""
    x = image[0, 0]
    pads = [max(p - s, 0) for p, s in zip(patch, x.shape)]
    lo = [p // 2 for p in pads]
    x = torch.nn.functional.pad(x, [v for d in reversed(range(3)) for v in (lo[d], pads[d] - lo[d])])
    size = x.shape
    n = [math.ceil((size[d] - patch[d]) / stride[d]) + 1 for d in range(3)]
    score = None
    count = torch.zeros(size, dtype=torch.float64)
    for i in range(n[0]):
        xs = min(stride[0] * i, size[0] - patch[0])
        for j in range(n[1]):
            ys = min(stride[1] * j, size[1] - patch[1])
            for k in range(n[2]):
                zs = min(stride[2] * k, size[2] - patch[2])
                win = x[xs : xs + patch[0], ys : ys + patch[1], zs : zs + patch[2]][None, None]
                with torch.no_grad():
                    prob = torch.softmax(net(win), dim=1)[0].double()
                if score is None:
                    score = torch.zeros((prob.shape[0], *size), dtype=torch.float64)
                score[:, xs : xs + patch[0], ys : ys + patch[1], zs : zs + patch[2]] += prob
                count[xs : xs + patch[0], ys : ys + patch[1], zs : zs + patch[2]] += 1
    out = score / count
    return out[:, lo[0] : lo[0] + image.shape[2], lo[1] : lo[1] + image.shape[3], lo[2] : lo[2] + image.shape[4]]
