# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Utilities on whole networks."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn", "size_divisor", "check_patch_size", "unwrap"]

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


def size_divisor(network: nn.Module) -> int | list[int]:
    """The number every spatial input size of ``network`` must be a multiple of (a list, one per axis, when the axes
    differ, as a DynUNet planned for anisotropic spacing): the ``size_divisor`` attribute of the network or, for a
    wrapper (``STLUNet``, ``MCNetPlus``, DDP), of the first sub-module that has one; 1 if none declares it."""
    for module in network.modules():
        divisor = getattr(module, "size_divisor", None)
        if isinstance(divisor, int) or (isinstance(divisor, (list, tuple)) and divisor):
            return divisor if isinstance(divisor, int) else [int(d) for d in divisor]
    return 1


def check_patch_size(patch_size: Sequence[int], network: nn.Module, name: str = "patch_size") -> list[int]:
    """Check, before any work starts, that a window/crop size suits ``network`` (V-Net: multiples of 16).

    Args:
        patch_size: the spatial size, e.g. ``[112, 112, 80]``.
        network: the network that will see windows of that size.
        name: the config key, named in the message.

    Returns:
        the size as a list of ints.

    Raises:
        ValueError: naming the key, the size, the divisor and the nearest valid sizes.
    """
    size = [int(s) for s in patch_size]
    divisor = size_divisor(network)
    divisors = [divisor] * len(size) if isinstance(divisor, int) else divisor
    if len(divisors) != len(size) or any(s < d or s % d for s, d in zip(size, divisors)):
        below = [max(d, s // d * d) for s, d in zip(size, divisors)]
        above = [-(-s // d) * d for s, d in zip(size, divisors)]
        raise ValueError(
            f"{name} {size} does not suit {type(network).__name__}: every size must be a positive multiple of "
            f"{divisor} (e.g. {below} or {above})."
        )
    return size


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside ``DataParallel``/``DistributedDataParallel`` (what checkpoints store and what inference
    needs: DDP cannot be deep-copied), else ``module``."""
    return module.module if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else module
