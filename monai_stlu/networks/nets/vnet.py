# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The V-Net used by the semi-supervised LA literature (UA-MT, DTC, MC-Net, STLU-Net)."""

from __future__ import annotations

import torch
from torch import nn

from monai_stlu.networks.layers.guarded_conv import GuardedConv3d

__all__ = ["VNet", "ConvStage", "DecoderStage"]

_NORMALIZATIONS = ("batch", "instance", "group", "none")


def _norm(normalization: str, channels: int, spatial_dims: int) -> nn.Module:
    if normalization == "batch":
        return nn.BatchNorm3d(channels) if spatial_dims == 3 else nn.BatchNorm2d(channels)
    if normalization == "instance":
        return nn.InstanceNorm3d(channels) if spatial_dims == 3 else nn.InstanceNorm2d(channels)
    if normalization == "group":
        return nn.GroupNorm(num_groups=min(16, channels), num_channels=channels)
    return nn.Identity()


def _conv_norm_relu(
    conv: nn.Module, normalization: str, channels: int, spatial_dims: int
) -> list[nn.Module]:
    return [conv, _norm(normalization, channels, spatial_dims), nn.ReLU(inplace=True)]


class ConvStage(nn.Sequential):
    """An optional stride-2 down-sampling conv followed by ``n_convs`` 3x3x3 conv-norm-ReLU layers.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels entering the stage.
        out_channels: channels leaving the stage.
        n_convs: number of 3x3x3 convolutions.
        normalization: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        downsample: whether the stage starts with a 2x2x2 stride-2 convolution (``in -> out`` channels).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        n_convs: int,
        normalization: str = "batch",
        downsample: bool = False,
    ) -> None:
        conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
        layers: list[nn.Module] = []
        channels = in_channels
        if downsample:
            layers += _conv_norm_relu(
                conv_t(channels, out_channels, kernel_size=2, stride=2, padding=0), normalization, out_channels, spatial_dims
            )
            channels = out_channels
        for _ in range(n_convs):
            layers += _conv_norm_relu(
                conv_t(channels, out_channels, kernel_size=3, padding=1), normalization, out_channels, spatial_dims
            )
            channels = out_channels
        super().__init__(*layers)


class DecoderStage(nn.Module):
    """Up-sampling, an additive skip connection, then ``n_convs`` conv-norm-ReLU layers.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the coarser feature map.
        out_channels: channels of the skip connection and of the output.
        n_convs: number of 3x3x3 convolutions after the skip addition.
        normalization: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        upsample: ``"deconv"`` (2x2x2 stride-2 transposed conv, the V-Net's), or ``"trilinear"``/``"nearest"``
            interpolation followed by a 3x3x3 conv (MC-Net+'s other decoders); each followed by norm and ReLU.

    Raises:
        ValueError: for an unknown ``upsample`` mode.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        n_convs: int,
        normalization: str = "batch",
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        if upsample == "deconv":
            convt_t = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
            layers = [convt_t(in_channels, out_channels, kernel_size=2, stride=2, padding=0)]
        elif upsample in ("trilinear", "nearest"):
            mode = "nearest" if upsample == "nearest" else ("trilinear" if spatial_dims == 3 else "bilinear")
            conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
            # MC-Net's trilinear decoder interpolates with align_corners=True
            interp = nn.Upsample(scale_factor=2, mode=mode, align_corners=None if mode == "nearest" else True)
            layers = [interp, conv_t(in_channels, out_channels, kernel_size=3, padding=1)]
        else:
            raise ValueError(f"upsample must be 'deconv', 'trilinear' or 'nearest', got {upsample!r}.")
        self.up = nn.Sequential(*layers[:-1], *_conv_norm_relu(layers[-1], normalization, out_channels, spatial_dims))
        self.convs = ConvStage(spatial_dims, out_channels, out_channels, n_convs, normalization, downsample=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(self.up(x) + skip)


class VNet(nn.Module):
    """V-Net as used by UA-MT, DTC, MC-Net and STLU-Net for semi-supervised 3D segmentation.

    Five encoder stages of ``n_filters * (1, 2, 4, 8, 16)`` channels with ``1, 2, 3, 3, 3`` 3x3x3
    conv-norm-ReLU layers, stride-2 2x2x2 convolutions between stages, transposed-conv up-sampling with
    **additive** skip connections, and a 1x1x1 head. With ``dropout=True`` a ``Dropout3d`` is applied to the
    bottleneck and before the head (as in the reference implementation).

    The network exposes a small interface that two-stream models such as
    :py:class:`monai_stlu.networks.nets.STLUNet` rely on:

    - ``encoder``: an ``nn.ModuleList`` of stages; stage ``k`` maps the output of stage ``k - 1`` (or the image)
      to the ``k``-th feature map.
    - ``decode(features)`` (also as ``decode_stages``): maps the list of all encoder stage outputs to logits.

    Spatial sizes must be divisible by 16.

    Reference:
        Milletari F. et al., "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
        Segmentation", 3DV 2016; the semi-supervised variant follows Yu L. et al., "Uncertainty-aware
        Self-ensembling Model for Semi-supervised 3D Left Atrium Segmentation", MICCAI 2019.

    Args:
        spatial_dims: 3 (volumes) or 2 (images).
        in_channels: number of input channels.
        out_channels: number of output classes (logits channels).
        n_filters: channels of the first stage; later stages double it.
        normalization: ``"batch"`` (default), ``"instance"``, ``"group"`` or ``"none"``.
        dropout: whether to apply channel dropout at the bottleneck and before the head.
        dropout_prob: the dropout probability.

    Raises:
        ValueError: when ``spatial_dims`` or ``normalization`` is not supported, or a size is not positive.

    Example::

        net = VNet(in_channels=1, out_channels=2)  # 9,448,866 parameters
        logits = net(torch.rand(1, 1, 112, 112, 80))
    """

    stage_convs = (1, 2, 3, 3, 3)
    #: every spatial size of an input must be a multiple of this (four stride-2 downsamplings)
    size_divisor = 2 ** (len(stage_convs) - 1)

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batch",
        dropout: bool = False,
        dropout_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}.")
        if min(in_channels, out_channels, n_filters) < 1:
            raise ValueError("in_channels, out_channels and n_filters must be positive.")
        self.spatial_dims = spatial_dims
        channels = [n_filters * 2**k for k in range(len(self.stage_convs))]
        self.encoder_channels = channels
        self.encoder = nn.ModuleList(
            [
                ConvStage(
                    spatial_dims,
                    in_channels if k == 0 else channels[k - 1],
                    channels[k],
                    n_convs,
                    normalization,
                    downsample=k > 0,
                )
                for k, n_convs in enumerate(self.stage_convs)
            ]
        )
        self.normalization = normalization
        self.decoder = self.build_decoder()
        drop_t = nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d
        self.dropout = drop_t(p=dropout_prob) if dropout else nn.Identity()
        conv_t = GuardedConv3d if spatial_dims == 3 else nn.Conv2d
        self.head = conv_t(n_filters, out_channels, kernel_size=1, padding=0)

    def build_decoder(self, upsample: str = "deconv") -> nn.ModuleList:
        """A decoder for this network's encoder (another one for a multi-decoder network): stage ``j`` goes from
        encoder level ``4 - j`` to level ``k = 3 - j``, with as many convolutions as encoder level ``k``."""
        ch = self.encoder_channels
        return nn.ModuleList(
            [
                DecoderStage(self.spatial_dims, ch[k + 1], ch[k], self.stage_convs[k], self.normalization, upsample)
                for k in reversed(range(len(ch) - 1))
            ]
        )

    @staticmethod
    @torch.jit.unused
    def run_decoder(stages: nn.ModuleList, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every stage output of a decoder on the encoder stage outputs, coarse to fine (the last: full size);
        for training paths (TorchScript compiles :py:meth:`decode_features`)."""
        x = features[-1]
        n = len(features)
        outputs: list[torch.Tensor] = []
        for j, stage in enumerate(stages):
            x = stage(x, features[n - 2 - j])
            outputs.append(x)
        return outputs

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the output of every encoder stage, shallow to deep."""
        features: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        features[-1] = self.dropout(features[-1])
        return features

    def decode_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The last decoder feature map (before dropout and head) from the encoder stage outputs."""
        x = features[-1]
        for j, stage in enumerate(self.decoder):  # TorchScript iterates only its own module lists
            x = stage(x, features[len(features) - 2 - j])
        return x

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Map the encoder stage outputs (as returned by :py:meth:`encode`) to logits."""
        return self.head(self.dropout(self.decode_features(features)))

    def decode_stages(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The stage interface's decoder (:py:class:`~monai_stlu.networks.nets.STLUNet`, the MONAI adapters):
        :py:meth:`decode`."""
        return self.decode(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
