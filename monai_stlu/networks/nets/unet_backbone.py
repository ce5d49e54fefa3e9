# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MONAI's UNet with its encoder stages and decoder exposed for two-stream methods."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["UNetBackbone"]


class UNetBackbone(UNet):
    """``monai.networks.nets.UNet`` whose encoder stages and decoder can be run one at a time.

    MONAI builds the UNet recursively: level ``k`` is ``Sequential(down_k, SkipConnection(level k + 1), up_k)``
    with the bottom layer innermost, the skip concatenating ``down_k``'s output with the deeper levels' result. The
    network is that UNet unchanged (same parameters and names: its state dict loads into a plain ``UNet``; same
    ``forward``). On top, the stage interface of :py:class:`monai_stlu.networks.nets.STLUNet`:

    - ``encoder``: ``[down_0, down_1, ..., bottom]`` (``down_0`` already strides, as in MONAI's UNet);
    - ``decode_stages(features)``: ``up_k(cat(features[k], deeper))`` from the bottom up.

    Reference:
        Ronneberger O. et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015;
        Kerfoot E. et al., "Left-Ventricle Quantification Using Residual U-Net", STACOM 2018 (MONAI's residual units).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        channels: channels per level, top first (one more than ``strides``).
        strides: the stride of each level's down-sampling.
        num_res_units: residual units per block (0: plain convolutions).
        norm: normalisation (MONAI's instance norm by default).
        dropout: dropout in every block.

    Example::

        net = UNetBackbone(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2))
        logits = net(torch.rand(1, 1, 96, 96, 64))
    """

    __jit_unused_properties__ = ["encoder", "decoder"]

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: tuple | str = "INSTANCE",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        #: every spatial input size must be a multiple of this
        self.size_divisor = math.prod(int(s) for s in strides)

    def _levels(self) -> list[nn.Sequential]:
        levels, block = [], self.model
        while isinstance(block, nn.Sequential) and len(block) == 3:
            levels.append(block)
            block = block[1].submodule
        return levels

    @property
    def encoder(self) -> list[nn.Module]:
        """The encoder stages, shallow to deep: each level's down-sampling block, then the bottom layer."""
        levels = self._levels()
        return [level[0] for level in levels] + [levels[-1][1].submodule]

    @property
    def decoder(self) -> list[nn.Module]:
        """Each level's up-sampling block, deepest first."""
        return [level[2] for level in reversed(self._levels())]

    def decode_stages(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the outputs of every encoder stage, shallow to deep."""
        x = features[-1]
        for j, up in enumerate(self.decoder):
            x = up(torch.cat([features[len(features) - 2 - j], x], dim=1))
        return x
