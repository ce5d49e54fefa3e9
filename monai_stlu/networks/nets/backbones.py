# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The bundles' ``backbone`` key: one segmentation network per name, sized for the bundle's patch and spacing."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from monai_stlu.networks.nets.dynunet_backbone import DynUNetBackbone, plan_dynunet
from monai_stlu.networks.nets.segresnet_backbone import SegResNetBackbone
from monai_stlu.networks.nets.unet_backbone import UNetBackbone
from monai_stlu.networks.nets.vnet import VNet
from monai_stlu.utils.names import BACKBONES

__all__ = ["BACKBONES", "build_backbone", "check_backbone"]


def build_backbone(
    name: str = "vnet",
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    n_filters: int = 16,
    patch_size: Sequence[int] = (112, 112, 80),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    dropout: bool = False,
    dropout_prob: float = 0.5,
) -> nn.Module:
    """The segmentation network named ``name``, exposing the stage interface (``encoder``, ``decode_stages``) that
    :py:class:`monai_stlu.networks.nets.STLUNet` mixes features through, its plain ``forward`` the MONAI network's.

    - ``vnet``: :py:class:`VNet`, ``n_filters * (1, 2, 4, 8, 16)`` channels (the semi-supervised literature's).
    - ``dynunet``: :py:class:`DynUNetBackbone` (nnU-Net's), kernels and strides planned from ``patch_size`` and
      ``spacing`` by :py:func:`plan_dynunet`, ``n_filters`` doubling per stage, capped at ``20 * n_filters`` (nnU-Net
      doubles 32 up to 320), instance norm, leaky ReLU.
    - ``segresnet``: :py:class:`SegResNetBackbone`, ``init_filters = n_filters``, MONAI's default blocks (1, 2, 2, 4), group
      norm with 8 groups (fewer when ``n_filters`` is not a multiple of 8).
    - ``unet``: :py:class:`UNetBackbone`, channels ``n_filters * (1, 2, 4, 8, 16)``, strides 2, two residual units.

    ``dropout`` (the baselines' networks; STLU-Net's streams bring their own) is the V-Net's bottleneck-and-head
    channel dropout of ``dropout_prob``; the MONAI networks are built without dropout (their own default), so a
    method's stochasticity on them comes from its input noise and perturbations only.

    Args:
        name: one of :py:data:`BACKBONES`.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        n_filters: first-stage channels.
        patch_size: the training patch (DynUNet's plan; the others only need it divisible).
        spacing: voxel spacing in mm (DynUNet's plan).
        dropout: the V-Net's channel dropout.
        dropout_prob: its probability.

    Raises:
        ValueError: for an unknown name.
    """
    key = check_backbone(name)
    if key == "vnet":
        return VNet(spatial_dims, in_channels, out_channels, n_filters, dropout=bool(dropout), dropout_prob=dropout_prob)
    if key == "dynunet":
        kernels, strides = plan_dynunet(patch_size, spacing)
        filters = [min(n_filters * 2**k, 20 * n_filters) for k in range(len(strides))]
        return DynUNetBackbone(spatial_dims, in_channels, out_channels, kernels, strides, filters=filters)
    if key == "segresnet":
        groups = math.gcd(8, n_filters)  # MONAI's 8 groups, fewer when the first stage has fewer channels
        return SegResNetBackbone(
            spatial_dims, n_filters, in_channels, out_channels, norm=("GROUP", {"num_groups": groups})
        )
    channels = [n_filters * 2**k for k in range(5)]  # unet
    return UNetBackbone(spatial_dims, in_channels, out_channels, channels=channels, strides=(2, 2, 2, 2))


def check_backbone(name: str, supported: Sequence[str] = BACKBONES, method: str = "this method") -> str:
    """Refuse, before any work starts, a backbone the method cannot run on.

    Args:
        name: the ``backbone`` key.
        supported: the backbones the method's network is built for (its override's ``supported_backbones``).
        method: the method's name, for the message.

    Returns:
        the name, lower-cased.

    Raises:
        ValueError: one sentence naming the backbone, the method and what it supports.
    """
    key = str(name).lower()
    if key not in BACKBONES:
        raise ValueError(f"backbone {name!r} is unknown: choose one of {', '.join(BACKBONES)}.")
    if key not in [str(s).lower() for s in supported]:
        raise ValueError(
            f"{method} cannot run on backbone {name!r}: its network (extra heads or decoders) is built on "
            f"{' or '.join(supported)} only; set backbone to {supported[0]!r}."
        )
    return key
