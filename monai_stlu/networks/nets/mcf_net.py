# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MCF's two subnets of different architecture, evaluated as their ensemble."""

from __future__ import annotations

import torch
from torch import nn

from monai_stlu.networks.nets.resnet_vnet import ResNetVNet
from monai_stlu.networks.nets.vnet import VNet

__all__ = ["MCFNet"]


class MCFNet(nn.Module):
    """A V-Net and a :py:class:`ResNetVNet` (ResNet-34 encoder, V-Net decoder) side by side, each with channel
    dropout in training as the reference builds them (``VNet(has_dropout=True)``: bottleneck and head; ``Resnet34``:
    head).

    ``forward(x)`` is what the reference tests: the mean of the two subnets' softmax probabilities, returned as its
    logarithm, so that a softmax of the output gives the mean back and its argmax is the ensemble's label; the
    network evaluates, exports (TorchScript, ONNX) and serves as one model. :py:meth:`forward_pair` gives each
    subnet's logits for training (:py:class:`monai_stlu.engines.MCFMethod`).

    Reference:
        Wang Y. et al., "MCF: Mutual Correction Framework for Semi-Supervised Medical Image Segmentation", CVPR 2023
        (``WYC-321/MCF``: ``train_MCF.py``, ``test_util.py``'s ``test_single_case`` averaging both softmaxes).

    Args:
        in_channels: input channels.
        out_channels: classes.
        n_filters: first-stage channels of both subnets.
        dropout: channel dropout in training, as the reference's subnets.
        dropout_prob: its probability.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        dropout: bool = True,
        dropout_prob: float = 0.5,
    ) -> None:
        super().__init__()
        self.vnet = VNet(3, in_channels, out_channels, n_filters, "batch", dropout=dropout, dropout_prob=dropout_prob)
        self.resnet = ResNetVNet(in_channels, out_channels, n_filters, dropout=dropout, dropout_prob=dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = 0.5 * (torch.softmax(self.vnet(x).float(), dim=1) + torch.softmax(self.resnet(x).float(), dim=1))
        return torch.log(p.clamp_min(1e-12))

    @torch.jit.unused
    def forward_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The V-Net's and the ResNet subnet's logits."""
        return self.vnet(x), self.resnet(x)
