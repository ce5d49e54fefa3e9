# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""STLU-Net's loss: supervised Dice on both streams, symmetric argmax pseudo-labels between them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.losses.pseudo_label_loss import SymmetricPseudoLabelLoss
from monai_stlu.losses.seg_dice_loss import SegDiceLoss

__all__ = ["STLUMethod"]


class STLUMethod(SemiSupervisedMethod):
    """``L = Dice(p_d^l, y) + Dice(p_m^l, y) + gamma * [Dice(p_d^u, argmax p_m^u) + Dice(p_m^u, argmax p_d^u)]``.

    The network must be an :py:class:`monai_stlu.networks.nets.STLUNet` (called as ``network(x_l, x_u)``).
    ``gamma`` is set every iteration by :py:class:`monai_stlu.handlers.RampUpHandler`
    (attribute ``"gamma"``); without the handler it stays at ``gamma``'s initial value.

    Reference:
        "Enhancing semi-supervised medical image segmentation via semantic transfer", Pattern Recognition 2026.

    Args:
        sup_loss: supervised loss ``(logits, label) -> scalar``; default :py:class:`monai_stlu.losses.SegDiceLoss`.
        unsup_loss: unsupervised loss ``(logits_a, logits_b) -> scalar``; default
            :py:class:`monai_stlu.losses.SymmetricPseudoLabelLoss` over the same Dice.
        gamma: the initial weight of the unsupervised loss.
        pseudo_supervision: ``"symmetric"`` (the paper: each stream learns from the other's argmax), ``"mix_only"``
            (only the feature-mixing stream learns, from the enhancement stream's pseudo-labels) or ``"drop_only"``
            (only the enhancement stream learns, from the mixing stream's), an ablation.
        pseudo_threshold: confidence-gated pseudo-labels: only voxels where the stream making the pseudo-label has a
            largest softmax probability ``>= pseudo_threshold`` count (None: all, as the paper), an ablation.
    """

    ramp_attribute = "gamma"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        unsup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        gamma: float = 0.0,
        pseudo_supervision: str = "symmetric",
        pseudo_threshold: float | None = None,
    ) -> None:
        super().__init__()
        if pseudo_supervision not in ("symmetric", "mix_only", "drop_only"):
            raise ValueError(
                f"pseudo_supervision must be 'symmetric', 'mix_only' or 'drop_only', got {pseudo_supervision!r}."
            )
        self.pseudo_supervision = pseudo_supervision
        self.sup_loss = SegDiceLoss() if sup_loss is None else sup_loss
        self.unsup_loss = SymmetricPseudoLabelLoss(self.sup_loss, pseudo_threshold) if unsup_loss is None else unsup_loss
        if pseudo_supervision != "symmetric" and not hasattr(self.unsup_loss, "directed"):
            raise ValueError("a one-directional pseudo_supervision needs an unsup_loss with `directed` (SymmetricPseudoLabelLoss).")
        self.gamma = float(gamma)

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError("STLUMethod needs an unlabeled batch every iteration.")
        out = network(image_labeled, image_unlabeled)
        sup = self.sup_loss(out.drop_labeled, label) + self.sup_loss(out.mix_labeled, label)
        if self.pseudo_supervision == "symmetric":
            unsup = self.unsup_loss(out.drop_unlabeled, out.mix_unlabeled)
        else:  # one direction: the learning stream against the other's detached argmax
            learner, teacher = (
                (out.mix_unlabeled, out.drop_unlabeled)
                if self.pseudo_supervision == "mix_only"
                else (out.drop_unlabeled, out.mix_unlabeled)
            )
            unsup = self.unsup_loss.directed(learner, teacher)
        loss = sup + self.gamma * unsup
        return {
            "pred": out.drop_labeled,
            "loss": loss,
            "sup": self.term(sup),
            "unsup": self.term(unsup),
            "gamma": self.gamma,
        }
