# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MONAI's DynUNet (the nnU-Net architecture) with its encoder stages and decoder exposed for two-stream methods."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import DynUNet
from torch import nn

__all__ = ["DynUNetBackbone", "plan_dynunet"]


def plan_dynunet(
    patch_size: Sequence[int], spacing: Sequence[float], max_pools: int = 5, min_size: int = 4
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides of a DynUNet for a patch and a voxel spacing, by nnU-Net's planning rule.

    An axis is down-sampled (stride 2) at a stage while its feature map stays at least ``min_size`` voxels after the
    halving and its current spacing is at most twice the finest current spacing (so a coarse axis waits until the
    others have caught up); every down-sampling doubles that axis' spacing. At each stage an axis whose current spacing is more than twice
    the finest gets a kernel of 1 (no context across thick slices), otherwise 3. Planning stops when no axis can be
    pooled or after ``max_pools`` down-samplings.

    Reference:
        Isensee F. et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
        segmentation", Nature Methods 2021 (the network topology rules of its experiment planner).

    Args:
        patch_size: the training patch, e.g. ``[112, 112, 80]``.
        spacing: its voxel spacing in mm, one value per axis.
        max_pools: the most down-samplings.
        min_size: the smallest feature-map size an axis may be pooled to.

    Returns:
        ``(kernel_size, strides)``: one ``[k, k, k]`` list per stage, the first stage's stride ``[1, 1, 1]``.

    Raises:
        ValueError: when the lengths differ, a value is not positive, or a pooled size is not divisible by 2.
    """
    size = [int(s) for s in patch_size]
    sp = [float(s) for s in spacing]
    if len(size) != len(sp) or min(size) < 1 or min(sp) <= 0:
        raise ValueError(f"plan_dynunet needs a positive patch size and spacing of one length, got {size} and {sp}.")

    def kernel(current: list[float]) -> list[int]:
        return [3 if s <= 2 * min(current) else 1 for s in current]

    kernels, strides = [kernel(sp)], [[1] * len(size)]
    for _ in range(max_pools):
        stride = [2 if (s <= 2 * min(sp) and n // 2 >= min_size) else 1 for s, n in zip(sp, size)]
        if all(st == 1 for st in stride):
            break
        odd = [n for n, st in zip(size, stride) if st == 2 and n % 2]
        if odd:
            raise ValueError(f"patch size {list(patch_size)} cannot be halved evenly (a feature map of {odd[0]}).")
        size = [n // st for n, st in zip(size, stride)]
        sp = [s * st for s, st in zip(sp, stride)]
        strides.append(stride)
        kernels.append(kernel(sp))
    return kernels, strides


class DynUNetBackbone(DynUNet):
    """``monai.networks.nets.DynUNet`` whose encoder stages and decoder can be run one at a time.

    The network is MONAI's DynUNet unchanged: the same parameters under the same names (its state dict loads into a
    plain ``DynUNet`` built with the same arguments and back) and the same ``forward``; export, sliding-window
    evaluation and MONAI Label see a DynUNet. On top, the stage interface that
    :py:class:`monai_stlu.networks.nets.STLUNet` mixes and drops features through:

    - ``encoder``: the stages ``[input_block, *downsamples, bottleneck]``, each applied to the previous output;
    - ``decode_stages(features)``: the up-sampling blocks (each: transposed convolution, concatenation with the skip
      features, convolutions) from the bottleneck up, then the output block.

    Deep supervision is off: the methods here supervise the full-resolution logits only, and deep-supervision heads
    would be parameters that no loss trains (``DynUNet`` with ``deep_supervision=True`` remains for supervised use).

    Reference:
        Isensee F. et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
        segmentation", Nature Methods 2021.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        kernel_size: per stage, as ``DynUNet`` (see :py:func:`plan_dynunet`).
        strides: per stage, the first usually 1.
        filters: channels per stage; None means ``DynUNet``'s default (nnU-Net's 32 doubling, capped at 320/512).
        dropout: dropout in every convolution block, as ``DynUNet``.
        norm_name: ``DynUNet``'s normalisation (nnU-Net's instance norm by default).
        act_name: ``DynUNet``'s activation (nnU-Net's leaky ReLU by default).
        res_block: residual convolution blocks.

    Example::

        kernels, strides = plan_dynunet([112, 112, 80], [0.625] * 3)
        net = DynUNetBackbone(3, 1, 2, kernels, strides, filters=[16, 32, 64, 128, 256])
    """

    __jit_unused_properties__ = ["encoder"]

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[Sequence[int] | int],
        strides: Sequence[Sequence[int] | int],
        filters: Sequence[int] | None = None,
        dropout: float | None = None,
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
        act_name: tuple | str = ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        res_block: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            kernel_size,
            strides,
            upsample_kernel_size=strides[1:],
            filters=filters,
            dropout=dropout,
            norm_name=norm_name,
            act_name=act_name,
            deep_supervision=False,
            res_block=res_block,
        )
        per_axis = [[int(s)] * spatial_dims if isinstance(s, int) else [int(v) for v in s] for s in strides]
        divisors = [math.prod(axis) for axis in zip(*per_axis)]
        #: the number every spatial input size must be a multiple of (one per axis when the strides differ)
        self.size_divisor: int | list[int] = divisors[0] if len(set(divisors)) == 1 else divisors

    @property
    def encoder(self) -> list[nn.Module]:
        """The encoder stages, shallow to deep: the input block, the down-sampling blocks, the bottleneck."""
        return [self.input_block, *self.downsamples, self.bottleneck]

    def decode_stages(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the outputs of every encoder stage (as the stages of :py:attr:`encoder` return them)."""
        x = features[-1]
        for j, up in enumerate(self.upsamples):  # deepest first
            x = up(x, features[len(features) - 2 - j])
        return self.output_block(x)
