# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""URPC's network on the V-Net: a prediction from every decoder stage, up-sampled to the input size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_stlu.networks.layers.guarded_conv import GuardedConv3d
from monai_stlu.networks.nets.vnet import VNet

__all__ = ["PyramidVNet"]


class PyramidVNet(nn.Module):
    """A :py:class:`VNet` whose four decoder stages each end in channel dropout (``0.5, 0.3, 0.2, 0.1`` from coarse
    to fine) and feed a 1x1x1 head whose logits are up-sampled trilinearly (``align_corners=False``) by ``8, 4, 2, 1``
    to the input size: the deep-supervision pyramid of URPC. :py:meth:`forward` returns the full-resolution head
    (the V-Net's own), :py:meth:`forward_all` every level, finest first.

    Reference:
        Luo X. et al., "Efficient Semi-supervised Gross Target Volume of Nasopharyngeal Carcinoma Segmentation via
        Uncertainty Rectified Pyramid Consistency", MICCAI 2021 (``HiLab-git/SSL4MIS``,
        ``networks/unet_3D_dv_semi.py``: the same heads, dropouts and up-sampling on its 3D U-Net; here on the
        bundles' V-Net).

    Args:
        spatial_dims: 3 or 2.
        in_channels: input channels.
        out_channels: classes.
        n_filters: first-stage channels.
        normalization: see :py:class:`VNet`.
        stage_dropout: dropout after each decoder stage, coarse to fine.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batch",
        stage_dropout: Sequence[float] = (0.5, 0.3, 0.2, 0.1),
    ) -> None:
        super().__init__()
        self.backbone = VNet(spatial_dims, in_channels, out_channels, n_filters, normalization, dropout=False)
        levels = len(self.backbone.decoder)
        if len(stage_dropout) != levels:
            raise ValueError(f"stage_dropout needs {levels} probabilities (one per decoder stage), got {list(stage_dropout)}.")
        drop_t = nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d
        self.stage_dropout = nn.ModuleList([drop_t(p=float(p)) for p in stage_dropout])
        conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
        ch = self.backbone.encoder_channels
        # coarse heads (stage j outputs level 3 - j); the finest head is the V-Net's own
        self.aux_heads = nn.ModuleList([conv_t(ch[levels - 1 - j], out_channels, kernel_size=1) for j in range(levels - 1)])
        mode = "trilinear" if spatial_dims == 3 else "bilinear"
        self.upsample = nn.ModuleList(
            [nn.Upsample(scale_factor=2 ** (levels - 1 - j), mode=mode) for j in range(levels - 1)]
        )

    def decoder_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every decoder stage's output after its dropout, coarse to fine (the last: full resolution)."""
        feats = self.backbone.encode(x)
        h = feats[-1]
        stages: list[torch.Tensor] = []
        for j, (stage, drop) in enumerate(zip(self.backbone.decoder, self.stage_dropout)):
            h = drop(stage(h, feats[len(feats) - 2 - j]))
            stages.append(h)
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.head(self.decoder_stages(x)[-1])

    @torch.jit.unused
    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every level at the input size, the full-resolution head first."""
        stages = self.decoder_stages(x)
        coarse = [up(head(s)) for s, head, up in zip(stages[:-1], self.aux_heads, self.upsample)]
        return [self.backbone.head(stages[-1]), *coarse[::-1]]
