# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The labeled-only lower bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss

__all__ = ["SupervisedMethod"]


class SupervisedMethod(SemiSupervisedMethod):
    """Train on the labeled images alone with ``0.5 * (CE + Dice)``; the unlabeled loader is not used.

    Args:
        sup_loss: the supervised loss, default :py:class:`monai_stlu.losses.SegDiceCELoss`.
    """

    uses_unlabeled = False

    def __init__(self, sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.sup_loss = SegDiceCELoss() if sup_loss is None else sup_loss

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        pred = network(image_labeled)
        loss = self.sup_loss(pred, label)
        return {"pred": pred, "loss": loss, "sup": self.term(loss)}
