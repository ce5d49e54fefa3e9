# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""DTC: dual-task consistency between the segmentation and the level set turned into a mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.losses.sdf_loss import SDFLoss
from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["DTCMethod", "heaviside"]


def heaviside(level_set: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """DTC's smooth Heaviside transform of a level set into a foreground probability: ``sigmoid(-k * sdf)``."""
    return torch.sigmoid(-k * at_least_float32(level_set))


class DTCMethod(SemiSupervisedMethod):
    """``L = Dice(p_l, y) + beta * mse(sdf_l, SDF(y)) + w(t) * mean((sigmoid(-k sdf) - p_fg)^2)``.

    The network is an :py:class:`monai_stlu.networks.nets.SDFVNet` (segmentation and ``tanh`` level-set heads);
    ``SDF(y)`` is the normalised signed distance map of the label (:py:class:`monai_stlu.losses.SDFLoss`), the
    consistency compares, on every case of the batch (labeled and unlabeled), the foreground probability with the
    level set turned into a mask (:py:func:`heaviside`, ``k = 1500``). The reference's Dice is UA-MT's (squared,
    ``1e-5``, foreground: :py:class:`monai_stlu.losses.SegDiceLoss`'s default); its cross-entropy is computed and
    logged but not in the loss, so it is not computed here. ``consistency_weight`` is set by a
    :py:class:`monai_stlu.handlers.RampUpHandler`: ``1.0 * exp(-5 (1 - t/40)^2)``, ``t = iteration // 150``;
    the learning rate of the reference drops tenfold every 2,500 iterations (``StepDecay``).

    Reference:
        Luo X. et al., "Semi-supervised Medical Image Segmentation through Dual-task Consistency", AAAI 2021
        (``HiLab-git/DTC``, ``train_la_dtc.py``).

    Args:
        sup_loss: the segmentation loss on labeled cases, default :py:class:`monai_stlu.losses.SegDiceLoss`.
        beta: weight of the level-set regression (0.3).
        k: the Heaviside transform's steepness (1500).
        consistency_weight: initial dual-task consistency weight (the ramp handler overwrites it).
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        beta: float = 0.3,
        k: float = 1500.0,
        consistency_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceLoss() if sup_loss is None else sup_loss
        self.sdf_loss = SDFLoss()
        self.beta = float(beta)
        self.k = float(k)
        self.consistency_weight = float(consistency_weight)

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError("DTCMethod needs an unlabeled batch every iteration.")
        if not hasattr(network, "forward_sdf"):
            raise TypeError(f"DTCMethod needs a network with a level-set head (SDFVNet), got {type(network).__name__}.")
        b = image_labeled.shape[0]
        logits, sdf = network.forward_sdf(torch.cat([image_labeled, image_unlabeled], dim=0))
        dice = self.sup_loss(logits[:b], label)
        sdf_loss = self.sdf_loss(sdf[:b], label)
        sup = dice + self.beta * sdf_loss
        prob_fg = torch.softmax(at_least_float32(logits), dim=1)[:, 1:]
        cons = torch.mean((heaviside(sdf, self.k) - prob_fg) ** 2)
        loss = sup + self.consistency_weight * cons
        return {
            "pred": logits[:b],
            "loss": loss,
            "sup": self.term(sup),
            "dice": self.term(dice),
            "sdf": self.term(sdf_loss),
            "unsup": self.term(cons),
            "consistency_weight": self.consistency_weight,
        }
