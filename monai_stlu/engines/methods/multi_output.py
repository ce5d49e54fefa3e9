# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The part URPC and CCT share: every output of a multi-output network supervised, a consistency between them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss

__all__ = ["MultiOutputMethod"]


class MultiOutputMethod(SemiSupervisedMethod):
    """``L = mean_i sup(o_i^l, y) + w(t) * consistency([o_i^u])`` over the outputs ``o_i`` of the network's
    ``forward_all`` on the labeled and unlabeled images together (the first output is the network's own, the one
    evaluated and exported). SSL4MIS's multi-output scripts divide the sum of the outputs' CE and Dice terms by twice
    their number: the mean of ``0.5 (CE + Dice)`` per output, with its every-class Dice (the default ``sup_loss``).
    Subclasses implement :py:meth:`consistency`; ``consistency_weight`` is set by the bundles' ramp handler.

    Args:
        sup_loss: the per-output supervised loss, default ``SegDiceCELoss(include_background=True)``.
        consistency_weight: initial weight (the ramp handler overwrites it).
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self, sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, consistency_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceCELoss(include_background=True) if sup_loss is None else sup_loss
        self.consistency_weight = float(consistency_weight)

    def consistency(self, logits_unlabeled: list[torch.Tensor]) -> torch.Tensor:
        """The unsupervised term from every output's logits on the unlabeled images."""
        raise NotImplementedError

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        name = type(self).__name__
        if image_unlabeled is None:
            raise ValueError(f"{name} needs an unlabeled batch every iteration.")
        if not hasattr(network, "forward_all"):
            raise TypeError(f"{name} needs a multi-output network (forward_all), got {type(network).__name__}.")
        b = image_labeled.shape[0]
        outs = network.forward_all(torch.cat([image_labeled, image_unlabeled], dim=0))
        sup = sum(self.sup_loss(o[:b], label) for o in outs) / len(outs)
        cons = self.consistency([o[b:] for o in outs])
        loss = sup + self.consistency_weight * cons
        return {
            "pred": outs[0][:b],
            "loss": loss,
            "sup": self.term(sup),
            "unsup": self.term(cons),
            "consistency_weight": self.consistency_weight,
        }
