# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MC-Net+: Dice on every decoder, mutual consistency with sharpened probabilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import sharpen
from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["MCNetPlusMethod"]


class MCNetPlusMethod(SemiSupervisedMethod):
    """``L = lambda_sup * sum_i Dice(p_i^l, y) + w(t) * sum_{i != j} mean((p_i - sharpen(p_j, T))^2)``.

    ``p_i`` is the softmax of decoder ``i`` of a :py:class:`monai_stlu.networks.nets.MCNetPlus` over the labeled and
    unlabeled images together; the sharpened targets keep their gradient, as in the reference code
    (``detach_targets=True`` stops it). ``consistency_weight`` is set by a
    :py:class:`monai_stlu.handlers.RampUpHandler` (``1.0 * exp(-5 (1 - t/40)^2)``, ``t = iteration // 150``).

    Reference:
        Wu Y. et al., "Mutual consistency learning for semi-supervised medical image segmentation",
        Medical Image Analysis 2022 (``ycwu1997/MC-Net``, ``train_mcnet_3d.py``).

    Args:
        sup_loss: per-decoder supervised loss, default
            ``SegDiceLoss(squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8)``: the reference's ``Binary_dice_loss``
            of the foreground (``sum p + sum g``, epsilon 1e-8, over the batch).
        lambda_sup: weight of the summed supervised losses (0.5 in the reference).
        temperature: sharpening temperature ``T``.
        consistency_weight: initial consistency weight (the ramp handler overwrites it).
        detach_targets: stop gradients through the sharpened targets.
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        lambda_sup: float = 0.5,
        temperature: float = 0.1,
        consistency_weight: float = 0.0,
        detach_targets: bool = False,
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceLoss(squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8) if sup_loss is None else sup_loss
        self.lambda_sup = lambda_sup
        self.temperature = temperature
        self.consistency_weight = float(consistency_weight)
        self.detach_targets = detach_targets

    def mutual_consistency(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """``sum_{i != j} mean((softmax_i - sharpen(softmax_j))^2)``."""
        probs = [torch.softmax(at_least_float32(o), dim=1) for o in logits]
        targets = [sharpen(p.detach() if self.detach_targets else p, self.temperature) for p in probs]
        total = probs[0].new_zeros(())
        for i, p in enumerate(probs):
            for j, t in enumerate(targets):
                if i != j:
                    total = total + ((p - t) ** 2).mean()
        return total

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError("MCNetPlusMethod needs an unlabeled batch every iteration.")
        if not hasattr(network, "forward_all"):
            raise TypeError(f"MCNetPlusMethod needs a multi-decoder network (MCNetPlus), got {type(network).__name__}.")
        b = image_labeled.shape[0]
        outs = network.forward_all(torch.cat([image_labeled, image_unlabeled], dim=0))
        sup = sum(self.sup_loss(o[:b], label) for o in outs)
        cons = self.mutual_consistency(outs)
        loss = self.lambda_sup * sup + self.consistency_weight * cons
        return {
            "pred": outs[0][:b],
            "loss": loss,
            "sup": self.term(sup),
            "unsup": self.term(cons),
            "consistency_weight": self.consistency_weight,
        }
