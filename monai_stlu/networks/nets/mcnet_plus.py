# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MC-Net+: one V-Net encoder, three decoders with different up-sampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_stlu.networks.layers.guarded_conv import GuardedConv3d
from monai_stlu.networks.nets.vnet import VNet

__all__ = ["MCNetPlus"]


class MCNetPlus(nn.Module):
    """A V-Net encoder shared by three decoders that up-sample by transposed convolution, trilinear and nearest
    interpolation. ``forward(x)`` returns the first (transposed-conv) decoder's logits, so the network evaluates and
    exports like a V-Net; :py:meth:`forward_all` returns every decoder's logits for training.

    Reference:
        Wu Y. et al., "Mutual consistency learning for semi-supervised medical image segmentation",
        Medical Image Analysis 2022 (MC-Net+).

    Args:
        spatial_dims: 3 or 2.
        in_channels: input channels.
        out_channels: classes.
        n_filters: first-stage channels.
        normalization: see :py:class:`VNet`.
        upsample_modes: one decoder per mode; the first is the V-Net's own decoder.
        dropout: channel dropout in training on the shared bottleneck and before each head (as the reference trains).
        dropout_prob: its probability.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batch",
        upsample_modes: Sequence[str] = ("deconv", "trilinear", "nearest"),
        dropout: bool = True,
        dropout_prob: float = 0.5,
    ) -> None:
        super().__init__()
        modes = list(upsample_modes)
        if not modes or modes[0] != "deconv":
            raise ValueError(f"the first decoder must be 'deconv' (the V-Net's), got {modes}.")
        # the backbone's dropout acts on the bottleneck (shared by every decoder) in training, as MC-Net's encoder;
        # the heads have their own
        self.backbone = VNet(
            spatial_dims, in_channels, out_channels, n_filters, normalization, dropout=dropout, dropout_prob=dropout_prob
        )
        conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
        self.extra_decoders = nn.ModuleList([self.backbone.build_decoder(mode) for mode in modes[1:]])
        self.extra_heads = nn.ModuleList([conv_t(n_filters, out_channels, kernel_size=1) for _ in modes[1:]])
        drop_t = nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d
        self.head_dropout = drop_t(p=dropout_prob) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.encode(x)
        return self.backbone.head(self.head_dropout(self.backbone.decode_features(feats)))

    @torch.jit.unused
    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every decoder, the V-Net decoder first."""
        return self.forward_all_features(x)[0]

    @torch.jit.unused
    def forward_all_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits of every decoder (the V-Net decoder first) and the features each head reads (the last decoder
        stage after the head's dropout: the reference's ``x9``, which mutual learning with reliable pseudo-labels
        builds its class prototypes from)."""
        enc = self.backbone.encode(x)
        feats = [self.head_dropout(self.backbone.decode_features(enc))]
        feats += [self.head_dropout(self.backbone.run_decoder(stages, enc)[-1]) for stages in self.extra_decoders]
        heads = [self.backbone.head, *self.extra_heads]
        return [head(f) for head, f in zip(heads, feats)], feats
