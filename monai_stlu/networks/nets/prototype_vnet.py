# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""V-Net with SS-Net's projection, prediction and per-class selector heads for prototype separation."""

from __future__ import annotations

import torch
from torch import nn

from monai_stlu.networks.nets.vnet import VNet

__all__ = ["PrototypeVNet"]


def _mlp(dim_in: int, dim_hidden: int, dim_out: int, leaky: bool = False) -> nn.Sequential:
    act = nn.LeakyReLU(negative_slope=0.2) if leaky else nn.ReLU()
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.BatchNorm1d(dim_hidden), act, nn.Linear(dim_hidden, dim_out))


class PrototypeVNet(nn.Module):
    """A :py:class:`VNet` plus SS-Net's heads on the per-voxel embedding (the last decoder features after dropout,
    ``n_filters`` channels): a projection head and a prediction head (Linear-BN-ReLU-Linear, ``feat_dim``), and per
    class two selectors (Linear-BN-LeakyReLU(0.2)-Linear to one score) that weight network features and memory
    features in the contrastive loss. :py:meth:`forward` is the V-Net's (logits only: evaluation, export and serving
    use the plain network); :py:meth:`forward_embedding` returns ``(logits, embedding)``.

    Parameter names differ from the reference (``selectors[c]`` and ``memory_selectors[c]`` for
    ``contrastive_class_selector_<c>`` and ``contrastive_class_selector_memory<c>``); counts are equal.

    Reference:
        Wu Y. et al., "Exploring Smoothness and Class-Separation for Semi-supervised Medical Image Segmentation",
        MICCAI 2022 (``ycwu1997/SS-Net``, ``networks/VNet.py``).

    Args:
        spatial_dims: 3 or 2.
        in_channels: input channels.
        out_channels: classes.
        n_filters: first-stage channels (the embedding's width).
        normalization: see :py:class:`VNet`.
        dropout: channel dropout on the bottleneck and the embedding (SS-Net trains with it).
        dropout_prob: its probability.
        feat_dim: width of the projection/prediction heads (32).
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
        feat_dim: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = VNet(
            spatial_dims, in_channels, out_channels, n_filters, normalization, dropout=dropout, dropout_prob=dropout_prob
        )
        self.projection_head = _mlp(n_filters, feat_dim, feat_dim)
        self.prediction_head = _mlp(feat_dim, feat_dim, feat_dim)
        self.selectors = nn.ModuleList([_mlp(feat_dim, feat_dim, 1, leaky=True) for _ in range(out_channels)])
        self.memory_selectors = nn.ModuleList([_mlp(feat_dim, feat_dim, 1, leaky=True) for _ in range(out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @torch.jit.unused
    def forward_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, embedding)``: the embedding is what the head reads (after the dropout), (B, n_filters, ...)."""
        h = self.backbone.dropout(self.backbone.decode_features(self.backbone.encode(x)))
        return self.backbone.head(h), h
