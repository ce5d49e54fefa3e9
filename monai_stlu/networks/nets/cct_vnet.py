# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""CCT's network on the V-Net: one encoder, a main decoder and auxiliary decoders fed perturbed encoder features."""

from __future__ import annotations

import torch
from torch import nn

from monai_stlu.networks.layers.feature_perturbation import ActiveDropout, AttentionDropout, FeatureNoise
from monai_stlu.networks.layers.guarded_conv import GuardedConv3d
from monai_stlu.networks.nets.vnet import VNet

__all__ = ["CCTVNet"]


class CCTVNet(nn.Module):
    """A :py:class:`VNet` (encoder, main decoder and head) plus one auxiliary decoder and head per perturbation;
    auxiliary decoder ``k`` reads every encoder stage output through perturbation ``k``: feature noise ``U(-0.3,
    0.3)``, dropout 0.3 and attention-guided dropout (``t ~ U(0.7, 0.9)``), SSL4MIS's three. :py:meth:`forward` is the
    V-Net's (evaluation, export and serving use the main decoder only); :py:meth:`forward_all` returns the main
    logits then each auxiliary decoder's.

    Reference:
        Ouali Y. et al., "Semi-Supervised Semantic Segmentation with Cross-Consistency Training", CVPR 2020, in the
        form of ``HiLab-git/SSL4MIS`` (``networks/unet.py``, ``UNet_CCT``; 2D there, the only SSL4MIS form), here on
        the bundles' 3D V-Net.

    Args:
        spatial_dims: 3 or 2.
        in_channels: input channels.
        out_channels: classes.
        n_filters: first-stage channels.
        normalization: see :py:class:`VNet`.
        dropout: the V-Net's channel dropout (bottleneck and before the heads) in training.
        dropout_prob: its probability.
        noise_range: the feature noise's ``r``.
        dropout_p: the auxiliary dropout's probability.
        attention_range: the attention threshold's ``(low, high)``.
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
        noise_range: float = 0.3,
        dropout_p: float = 0.3,
        attention_range: tuple[float, float] = (0.7, 0.9),
    ) -> None:
        super().__init__()
        self.backbone = VNet(
            spatial_dims, in_channels, out_channels, n_filters, normalization, dropout=dropout, dropout_prob=dropout_prob
        )
        self.perturbations = nn.ModuleList(
            [FeatureNoise(noise_range), ActiveDropout(dropout_p), AttentionDropout(*attention_range)]
        )
        conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
        self.aux_decoders = nn.ModuleList([self.backbone.build_decoder() for _ in self.perturbations])
        self.aux_heads = nn.ModuleList([conv_t(n_filters, out_channels, kernel_size=1) for _ in self.perturbations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @torch.jit.unused
    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Main logits, then each auxiliary decoder's on its perturbed copy of the encoder features."""
        feats = self.backbone.encode(x)
        outs = [self.backbone.decode(feats)]
        for perturb, stages, head in zip(self.perturbations, self.aux_decoders, self.aux_heads):
            h = self.backbone.run_decoder(stages, [perturb(f) for f in feats])[-1]
            outs.append(head(self.backbone.dropout(h)))
        return outs
