# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MONAI's SegResNet with its encoder stages and decoder exposed for two-stream methods."""

from __future__ import annotations

import torch
from monai.networks.nets import SegResNet
from torch import nn

__all__ = ["SegResNetBackbone"]


class _InputStage(nn.Module):
    """SegResNet's first stage: the initial convolution, its dropout, the first residual blocks (not registered
    in the network, so the state dict keeps SegResNet's names)."""

    def __init__(self, net: SegResNet) -> None:
        super().__init__()
        object.__setattr__(self, "net", net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.convInit(x)
        if net.dropout_prob is not None:
            x = net.dropout(x)
        return net.down_layers[0](x)


class SegResNetBackbone(SegResNet):
    """``monai.networks.nets.SegResNet`` whose encoder stages and decoder can be run one at a time.

    The network is MONAI's SegResNet unchanged (same parameters and names, so its state dict loads into a plain
    ``SegResNet`` built with the same arguments; same ``forward``). On top, the stage interface of
    :py:class:`monai_stlu.networks.nets.STLUNet`:

    - ``encoder``: stage 0 is the initial convolution (and its dropout) with the first residual blocks, stage ``k``
      the ``k``-th down-sampling convolution with its residual blocks;
    - ``decode_stages(features)``: SegResNet's decoder (1x1 convolution and up-sampling, additive skip, residual
      blocks per level, then the final norm-activation-convolution) on the list of stage outputs.
      (SegResNet's own ``decode(x, down_x)`` is kept as it is.)

    Reference:
        Myronenko A., "3D MRI brain tumor segmentation using autoencoder regularization", BrainLes 2018.

    Args:
        spatial_dims: 2 or 3.
        init_filters: channels of the first stage (doubled per down-sampling).
        in_channels: input channels.
        out_channels: classes.
        dropout_prob: dropout after the initial convolution; None for none.
        norm: SegResNet's normalisation (group norm with 8 groups by default).
        blocks_down: residual blocks per encoder stage.
        blocks_up: residual blocks per decoder level.

    Example::

        net = SegResNetBackbone(init_filters=16)
        logits = net(torch.rand(1, 1, 96, 96, 64))
    """

    __jit_unused_properties__ = ["encoder"]

    def __init__(
        self,
        spatial_dims: int = 3,
        init_filters: int = 8,
        in_channels: int = 1,
        out_channels: int = 2,
        dropout_prob: float | None = None,
        norm: tuple | str = ("GROUP", {"num_groups": 8}),
        blocks_down: tuple = (1, 2, 2, 4),
        blocks_up: tuple = (1, 1, 1),
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=out_channels,
            dropout_prob=dropout_prob,
            norm=norm,
            blocks_down=blocks_down,
            blocks_up=blocks_up,
        )
        #: every spatial input size must be a multiple of this
        self.size_divisor = 2 ** (len(blocks_down) - 1)

    @property
    def encoder(self) -> list[nn.Module]:
        """The encoder stages, shallow to deep."""
        return [_InputStage(self), *list(self.down_layers)[1:]]

    def decode_stages(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the outputs of every encoder stage, shallow to deep."""
        return self.decode(features[-1], features[::-1])
