# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A 3D ResNet-34 encoder under the V-Net's decoder: MCF's second subnet."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_stlu.networks.layers.guarded_conv import GuardedConv3d
from monai_stlu.networks.nets.vnet import VNet

__all__ = ["ResNetVNet"]


class _BasicBlock(nn.Module):
    """ResNet's basic block in 3D: two 3x3x3 conv-BN layers and an identity (or 1x1x1 conv-BN) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = GuardedConv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = GuardedConv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                GuardedConv3d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetVNet(VNet):
    """The V-Net decoder (transposed-conv up-sampling, additive skips, 3/3/2/1 convolutions, 1x1x1 head) on a 3D
    ResNet encoder: a 7x7x7 stride-1 stem of ``n_filters`` channels, then four layers of basic blocks (3, 4, 6 and 3
    for ResNet-34), each starting with a stride-2 block, of ``n_filters * (2, 4, 8, 16)`` channels. The feature maps
    have the V-Net encoder's sizes and channels, so the decoder is the V-Net's own. With ``dropout`` a ``Dropout3d``
    acts before the head in training (not on the bottleneck, as the reference's ``Resnet34``).

    MCF pairs it with a V-Net as the second, differently built subnet (17,930,354 parameters at 16 filters and two
    classes, as the reference's ``Resnet34``). Spatial sizes must be divisible by 16.

    Reference:
        Wang Y. et al., "MCF: Mutual Correction Framework for Semi-Supervised Medical Image Segmentation", CVPR 2023
        (``WYC-321/MCF``, ``code/networks/ResNet34.py`` and ``resnet.py``); He K. et al., "Deep Residual Learning
        for Image Recognition", CVPR 2016.

    Args:
        in_channels: input channels.
        out_channels: classes.
        n_filters: channels of the stem; the layers double it at each stage.
        blocks: basic blocks per layer, ``(3, 4, 6, 3)`` for ResNet-34.
        dropout: channel dropout before the head in training.
        dropout_prob: its probability.

    Raises:
        ValueError: when ``blocks`` does not have four positive counts.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        blocks: Sequence[int] = (3, 4, 6, 3),
        dropout: bool = True,
        dropout_prob: float = 0.5,
    ) -> None:
        if len(blocks) != len(self.stage_convs) - 1 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive counts (one per ResNet layer), got {list(blocks)}.")
        super().__init__(3, in_channels, out_channels, n_filters, "batch", dropout=False)
        channels = self.encoder_channels
        stem = nn.Sequential(
            GuardedConv3d(in_channels, channels[0], kernel_size=7, stride=1, padding=3, bias=False),
            nn.BatchNorm3d(channels[0]),
            nn.ReLU(inplace=True),
        )
        layers = [
            nn.Sequential(
                _BasicBlock(channels[k], channels[k + 1], stride=2),
                *[_BasicBlock(channels[k + 1], channels[k + 1]) for _ in range(count - 1)],
            )
            for k, count in enumerate(blocks)
        ]
        self.encoder = nn.ModuleList([stem, *layers])  # replaces the V-Net encoder the parent built
        self.dropout = nn.Dropout3d(p=dropout_prob) if dropout else nn.Identity()

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder stage's output, shallow to deep (no dropout on the bottleneck)."""
        features: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        return features
