# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MCF: two subnets of different architecture correct each other (difference review, competitive pseudo-labels)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import init_weights, sharpen
from monai_stlu.losses.difference_review_loss import DifferenceReviewLoss
from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.utils.distributed import broadcast_module
from monai_stlu.utils.fast_path import at_least_float32

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["MCFMethod"]


class MCFMethod(SemiSupervisedMethod):
    """Mutual correction of a V-Net ``v`` and a ResNet-encoder subnet ``r``
    (:py:class:`monai_stlu.networks.nets.MCFNet`), both fed the labeled and unlabeled images in one batch:

    - supervised, per subnet: ``CE + Dice + review_weight * review``, the Dice being the reference's squared
      foreground Dice and ``review`` the contrastive difference review
      (:py:class:`monai_stlu.losses.DifferenceReviewLoss`) on the labeled images;
    - dynamic competitive pseudo-labels: the subnet with the lower labeled Dice loss this iteration is the good
      student; its unlabeled softmax, sharpened with ``T`` and detached, is the target of the other subnet's
      ``mean((p - target)^2)`` over every voxel and class, weighted by ``consistency_weight`` (a
      :py:class:`monai_stlu.handlers.RampUpHandler`: ``0.1 * exp(-5 (1 - t/40)^2)``, ``t = iteration // 150``); the
      good student trains on its supervised loss only (ties go to ``r``, as the reference's ``<``).

    The two subnets' losses are summed into one (their parameters are disjoint, so each gets exactly the gradient of
    its own loss, as the reference's two optimisers with the same settings). The choice is made on the device (no
    host synchronisation). ``init`` re-draws every convolution and transposed convolution of both subnets
    Kaiming-normal, BatchNorm weights 1 and biases 0, as the reference's ``__init_weight``. The reference divides the
    LR by 10 after iterations 2,500 and 5,000 of 6,000 (one iteration later than UA-MT's rule: ``StepDecay``'s
    ``start`` is one reference iteration) and tests the mean of the two subnets' softmaxes without post-processing
    (``MCFNet.forward``).

    Reference:
        Wang Y. et al., "MCF: Mutual Correction Framework for Semi-Supervised Medical Image Segmentation", CVPR 2023
        (``WYC-321/MCF``, ``code/train_MCF.py``, ``test_LA_MCF.py``).

    Args:
        dice_loss: the supervised Dice, default the reference's ``dice_loss`` (``SegDiceLoss()``: squared foreground
            Dice over the batch, smoothing 1e-5).
        ce_weight: weight of the cross-entropy (1 in the reference).
        review_weight: weight of the difference review (0.5).
        temperature: sharpening temperature of the pseudo-labels (``T`` 0.1).
        consistency_weight: initial pseudo-label weight (the ramp handler overwrites it).
        init: ``"kaiming"`` (the reference's) or ``"default"`` (the network as built).
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        dice_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        ce_weight: float = 1.0,
        review_weight: float = 0.5,
        temperature: float = 0.1,
        consistency_weight: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if init not in ("kaiming", "default"):
            raise ValueError(f"init must be 'kaiming' or 'default', got {init!r}.")
        self.dice_loss = SegDiceLoss() if dice_loss is None else dice_loss
        self.review = DifferenceReviewLoss()
        self.ce_weight, self.review_weight, self.temperature = ce_weight, review_weight, temperature
        self.consistency_weight = float(consistency_weight)
        self.init = init

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Initialise both subnets as the reference does (a resumed run then loads its checkpoint over them)."""
        if self.init == "kaiming":
            init_weights(engine.network, "kaiming", transposed=True)
            broadcast_module(engine.network)  # multi-process: every rank starts from rank 0's draw

    def supervised(self, logits: torch.Tensor, other: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(CE + Dice + review_weight * review, Dice)`` of one subnet on the labeled images."""
        ce = F.cross_entropy(at_least_float32(logits), label[:, 0].long())
        dice = self.dice_loss(at_least_float32(logits), label)
        return self.ce_weight * ce + dice + self.review_weight * self.review(logits, other, label), dice

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError("MCFMethod needs an unlabeled batch every iteration.")
        if not hasattr(network, "forward_pair"):
            raise TypeError(f"MCFMethod needs a two-subnet network (MCFNet), got {type(network).__name__}.")
        b = image_labeled.shape[0]
        out_v, out_r = network.forward_pair(torch.cat([image_labeled, image_unlabeled], dim=0))
        sup_v, dice_v = self.supervised(out_v[:b], out_r[:b], label)
        sup_r, dice_r = self.supervised(out_r[:b], out_v[:b], label)
        p_v = torch.softmax(at_least_float32(out_v[b:]), dim=1)
        p_r = torch.softmax(at_least_float32(out_r[b:]), dim=1)
        v_good = (dice_v < dice_r).to(p_v.dtype).detach()  # 1: the V-Net leads this iteration
        cons_v = ((p_v - sharpen(p_r.detach(), self.temperature)) ** 2).mean()  # the V-Net learns from r
        cons_r = ((p_r - sharpen(p_v.detach(), self.temperature)) ** 2).mean()
        cons = (1.0 - v_good) * cons_v + v_good * cons_r
        loss = sup_v + sup_r + self.consistency_weight * cons
        with torch.no_grad():
            pred = 0.5 * (torch.softmax(at_least_float32(out_v[:b]), 1) + torch.softmax(at_least_float32(out_r[:b]), 1))
        return {
            "pred": torch.log(pred.clamp_min(1e-12)),
            "loss": loss,
            "sup": self.term(sup_v + sup_r),
            "unsup": self.term(cons),
            "vnet_leads": self.term(v_good),
            "consistency_weight": self.consistency_weight,
        }
