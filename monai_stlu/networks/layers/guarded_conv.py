# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A 3D convolution that keeps float32 where the CPU's bfloat16 weight gradient is wrong."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GuardedConv3d"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


class GuardedConv3d(nn.Conv3d):
    """``torch.nn.Conv3d`` that runs in float32 when CPU autocast would compute a wrong weight gradient.

    With torch 2.13 (oneDNN) on CPUs with native bfloat16, the bfloat16 weight gradient of a 3D convolution whose
    input is smaller than the kernel along a spatial axis (a V-Net's 2-voxel-deep bottleneck under a 3x3x3 kernel,
    i.e. a 32-voxel-deep patch) reads memory it never wrote: values up to 1e37, NaN, or different on every call.
    The forward pass and the input gradient are right. Under CPU autocast with a gradient being recorded, such a
    small input is convolved in float32 instead (these maps are tiny, the cost is nil); everywhere else, and in
    TorchScript/ONNX export, this is ``torch.nn.Conv3d`` with the same parameters and state dict.
    ``tests/test_guarded_conv.py`` checks the guarded gradient against float64.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if self._needs_float32(x):
                return self._float32_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _needs_float32(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and torch.is_grad_enabled()
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") in _LOW_PRECISION
            and any(size < k for size, k in zip(x.shape[2:], self.kernel_size))
        )

    @torch.jit.unused
    def _float32_forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self._conv_forward(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())
