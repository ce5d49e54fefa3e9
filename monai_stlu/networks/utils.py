# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Utilities on whole networks."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fuse_conv_bn(network: nn.Module) -> nn.Module:
    """An inference copy of ``network`` with each BatchNorm folded into the convolution just before it.

    Inside every ``nn.Sequential``, a convolution (or transposed convolution) directly followed by a BatchNorm
    with running statistics becomes one convolution with the normalisation in its weights and bias, and the
    BatchNorm becomes ``nn.Identity``. In eval mode the copy computes the same function (to float rounding) with
    fewer passes over the feature maps. It also matters for mixed precision: unfolded, a convolution's bf16/fp16
    output is rounded *before* BatchNorm subtracts its running mean, and that cancellation turns the rounding into
    a systematic per-channel error that grows with depth (on a V-Net it flipped about ten times more voxels of the
    final argmax than the folded network does).

    Args:
        network: any module; it is not modified.

    Returns:
        a deep copy of ``network`` in eval mode, folded where the pattern occurs.
    """
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, _CONVS) and isinstance(norm, _NORMS) and norm.running_mean is not None:
                module[i] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.modules.conv._ConvTransposeNd))
                module[i + 1] = nn.Identity()
    return folded
