# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""SASSNet: a level-set head and a discriminator that pulls unlabeled shapes towards labeled ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.adversarial import AdversarialMethod
from monai_stlu.losses.sdf_loss import SDFLoss
from monai_stlu.losses.seg_dice_loss import SegDiceLoss

__all__ = ["SASSNetMethod"]


class SASSNetMethod(AdversarialMethod):
    """``L = Dice(p_l, y) + beta * mse(sdf_l, SDF(y)) + w(t) * CE(D(sdf_u, x_u), labeled)``, and ``D`` trained to
    tell labeled from unlabeled (image, level set) pairs (:py:class:`AdversarialMethod`).

    The network is an :py:class:`monai_stlu.networks.nets.SDFVNet`; the supervised part is DTC's (UA-MT's Dice,
    the normalised SDF regression with ``beta = 0.3``); the adversarial weight ramps to ``0.01``
    (``0.01 * exp(-5 (1 - t/40)^2)``, ``t = iteration // 150``); ``D`` takes Adam steps of ``1e-4``, betas
    ``(0.9, 0.99)``; the segmenter's learning rate drops tenfold every 2,500 iterations (``StepDecay``).

    Reference:
        Li S. et al., "Shape-aware Semi-supervised 3D Semantic Segmentation for Medical Images", MICCAI 2020
        (``kleinzcy/SASSnet``, ``train_gan_sdfloss.py``).

    Args:
        num_classes: classes of the segmentation (``D`` scores ``num_classes - 1`` level-set channels).
        in_channels: image channels.
        sup_loss: the segmentation loss, default :py:class:`monai_stlu.losses.SegDiceLoss`.
        beta: weight of the level-set regression.
        kwargs: :py:class:`AdversarialMethod` arguments (``ndf``, ``d_lr``, ``d_betas``, ``consistency_weight``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        beta: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(map_channels=num_classes - 1, in_channels=in_channels, **kwargs)
        self.sup_loss = SegDiceLoss() if sup_loss is None else sup_loss
        self.sdf_loss = SDFLoss()
        self.beta = float(beta)

    def segment(self, network: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if not hasattr(network, "forward_sdf"):
            raise TypeError(f"SASSNetMethod needs a network with a level-set head (SDFVNet), got {type(network).__name__}.")
        logits, sdf = network.forward_sdf(image)
        return {"logits": logits, "map": sdf}

    def supervised(self, out: dict[str, torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        dice = self.sup_loss(out["logits"], label)
        sdf_loss = self.sdf_loss(out["map"], label)
        return {"sup": dice + self.beta * sdf_loss, "dice": dice, "sdf": sdf_loss}
