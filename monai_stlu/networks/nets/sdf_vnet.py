# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""V-Net with a second head that regresses the signed distance map of the segmentation (DTC, SASSNet)."""

from __future__ import annotations

import torch
from torch import nn

from monai_stlu.networks.layers.guarded_conv import GuardedConv3d
from monai_stlu.networks.nets.vnet import VNet

__all__ = ["SDFVNet"]


class SDFVNet(nn.Module):
    """A :py:class:`VNet` whose last decoder features (after its dropout) feed two 1x1x1 heads: the segmentation
    logits and ``tanh`` of a level-set (signed distance) map, one channel per foreground class.

    As in the references, a two-class problem has one segmentation logit ``z`` with ``p_fg = sigmoid(z)``;
    :py:meth:`forward` returns it as the two-channel logits ``[0, z]``, whose softmax is ``[1 - sigmoid(z),
    sigmoid(z)]`` and whose argmax is ``z > 0``, so the network evaluates, exports and serves like any other
    segmentation network of the bundles, with the references' parameter count (``VNet(n_classes=1)`` plus a second
    one-channel head). With more classes the segmentation head has ``out_channels`` softmax logits and the level-set
    head ``out_channels - 1`` channels (an extension: the references are binary).

    :py:meth:`forward_sdf` returns ``(logits, sdf)`` for training.

    Reference:
        Luo X. et al., "Semi-supervised Medical Image Segmentation through Dual-task Consistency", AAAI 2021
        (``HiLab-git/DTC``, ``networks/vnet_sdf.py``); Li S. et al., "Shape-aware Semi-supervised 3D Semantic
        Segmentation for Medical Images", MICCAI 2020 (``kleinzcy/SASSnet``).

    Args:
        spatial_dims: 3 or 2.
        in_channels: input channels.
        out_channels: classes (>= 2).
        n_filters: first-stage channels.
        normalization: see :py:class:`VNet`.
        dropout: channel dropout on the bottleneck and on the features both heads read (the references train with it).
        dropout_prob: its probability.

    Raises:
        ValueError: when ``out_channels`` < 2.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batch",
        dropout: bool = True,
        dropout_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if out_channels < 2:
            raise ValueError(f"out_channels must be >= 2 (background and foreground), got {out_channels}.")
        self.single_logit = out_channels == 2
        self.backbone = VNet(
            spatial_dims,
            in_channels,
            1 if self.single_logit else out_channels,
            n_filters,
            normalization,
            dropout=dropout,
            dropout_prob=dropout_prob,
        )
        conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
        self.sdf_head = conv_t(n_filters, out_channels - 1, kernel_size=1)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The class logits from the segmentation head's output (``[0, z]`` for one logit)."""
        return torch.cat([torch.zeros_like(z), z], dim=1) if self.single_logit else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.backbone(x))

    @torch.jit.unused
    def forward_sdf(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, tanh(level set))`` from one pass; both heads read the same dropped-out features."""
        h = self.backbone.dropout(self.backbone.decode_features(self.backbone.encode(x)))
        return self.logits(self.backbone.head(h)), torch.tanh(self.sdf_head(h))
