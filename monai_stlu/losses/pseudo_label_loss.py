# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Symmetric argmax pseudo-label supervision between two predictions (STLU-Net's unsupervised loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from monai_stlu.losses.seg_dice_loss import SegDiceLoss

__all__ = ["SymmetricPseudoLabelLoss"]


class SymmetricPseudoLabelLoss(nn.Module):
    """``loss(a, b) = L(a, argmax b) + L(b, argmax a)`` with detached pseudo-labels.

    For STLU-Net, ``a`` is the semantic-enhancement stream's unlabeled logits ``p_d^u`` and ``b`` the
    feature-mixing stream's ``p_m^u``: ``L_unsup = Dice(p_d^u, argmax p_m^u) + Dice(p_m^u, argmax p_d^u)``.

    Reference:
        "Enhancing semi-supervised medical image segmentation via semantic transfer", Pattern Recognition 2026.

    Args:
        loss: a segmentation loss taking ``(logits, class_index_target)`` with the target shaped (B, 1, *spatial);
            default :py:class:`monai_stlu.losses.SegDiceLoss`.
    """

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.loss = SegDiceLoss() if loss is None else loss

    @staticmethod
    def pseudo_label(logits: torch.Tensor) -> torch.Tensor:
        """Detached argmax over the channel dimension, kept as a (B, 1, *spatial) class-index tensor."""
        return torch.argmax(logits.detach(), dim=1, keepdim=True)

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits_a: (B, C, *spatial) logits of the first prediction.
            logits_b: logits of the second prediction, same shape.

        Returns:
            the scalar symmetric loss.

        Raises:
            ValueError: when the shapes differ.
        """
        if logits_a.shape != logits_b.shape:
            raise ValueError(f"both predictions need the same shape, got {list(logits_a.shape)} and {list(logits_b.shape)}.")
        return self.loss(logits_a, self.pseudo_label(logits_b)) + self.loss(logits_b, self.pseudo_label(logits_a))
