# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The fully convolutional discriminator of SASSNet and DAN: scores an (image, map) pair as labeled or not."""

from __future__ import annotations

import torch
from monai.networks.layers import Conv
from torch import nn

__all__ = ["FCDiscriminator"]


class FCDiscriminator(nn.Module):
    """``classifier(avgpool(conv4(...(leaky(conv0(map) + conv1(image))))))``: four stride-2 4x4x4 convolutions of
    ``ndf * (1, 2, 4, 8)`` channels (the first one applied to the map and to the image and summed), LeakyReLU 0.2,
    channel dropout 0.5 after the first three, a global average and a linear layer to two logits (class 1: "from a
    labeled case").

    The references pool with a fixed ``AvgPool3d`` of the input size / 16 (``(7, 7, 5)`` for SASSNet's 112x112x80
    patches, ``(6, 6, 6)`` for SSL4MIS's 96^3); here the average is global (``AdaptiveAvgPool``), which is the same
    operation at those sizes and works at any patch size.

    Reference:
        Li S. et al., "Shape-aware Semi-supervised 3D Semantic Segmentation for Medical Images", MICCAI 2020
        (``kleinzcy/SASSnet``, ``networks/discriminator.py``, ``FC3DDiscriminator``); Zhang Y. et al., "Deep
        Adversarial Networks for Biomedical Image Segmentation Utilizing Unannotated Images", MICCAI 2017 (3D form in
        ``HiLab-git/SSL4MIS``).

    Args:
        spatial_dims: 3 or 2.
        map_channels: channels of the scored map (a level set: classes - 1; a softmax: classes).
        in_channels: image channels.
        ndf: channels of the first convolution.
        dropout_prob: channel dropout probability.
    """

    def __init__(
        self, spatial_dims: int = 3, map_channels: int = 1, in_channels: int = 1, ndf: int = 64, dropout_prob: float = 0.5
    ) -> None:
        super().__init__()
        conv_t = Conv[Conv.CONV, spatial_dims]
        self.conv0 = conv_t(map_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv1 = conv_t(in_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = conv_t(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = conv_t(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = conv_t(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ndf * 8, 2)
        self.act = nn.LeakyReLU(negative_slope=0.2)
        self.dropout = nn.Dropout3d(dropout_prob) if spatial_dims == 3 else nn.Dropout2d(dropout_prob)

    def forward(self, map: torch.Tensor, image: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the references' name)
        x = self.dropout(self.act(self.conv0(map) + self.conv1(image)))
        x = self.dropout(self.act(self.conv2(x)))
        x = self.dropout(self.act(self.conv3(x)))
        x = self.act(self.conv4(x))
        return self.classifier(self.pool(x).flatten(1))
