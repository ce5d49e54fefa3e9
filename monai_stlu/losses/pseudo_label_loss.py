# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Symmetric argmax pseudo-label supervision between two predictions (STLU-Net's unsupervised loss)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from monai.losses import DiceLoss
from torch import nn

from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.utils.fast_path import argmax, at_least_float32

__all__ = ["SymmetricPseudoLabelLoss"]


class SymmetricPseudoLabelLoss(nn.Module):
    """``loss(a, b) = L(a, argmax b) + L(b, argmax a)`` with detached pseudo-labels.

    For STLU-Net, ``a`` is the semantic-enhancement stream's unlabeled logits ``p_d^u`` and ``b`` the
    feature-mixing stream's ``p_m^u``: ``L_unsup = Dice(p_d^u, argmax p_m^u) + Dice(p_m^u, argmax p_d^u)``.

    With ``threshold``, a pseudo-label counts only where the stream that makes it is confident (its largest softmax
    probability ``>= threshold``): the other voxels are left out of the Dice sums (intersection and both
    denominators), an ablation of confidence-gated pseudo-labels. This needs a MONAI ``DiceLoss`` (such as
    :py:class:`monai_stlu.losses.SegDiceLoss`), whose own form (squared or not, smoothing, classes) is kept.

    Reference:
        "Enhancing semi-supervised medical image segmentation via semantic transfer", Pattern Recognition 2026.

    Args:
        loss: a segmentation loss taking ``(logits, class_index_target)`` with the target shaped (B, 1, *spatial);
            default :py:class:`monai_stlu.losses.SegDiceLoss`.
        threshold: the confidence a pseudo-label needs, or None for every voxel.

    Raises:
        TypeError: when ``threshold`` is given and ``loss`` is not a MONAI ``DiceLoss``.
    """

    def __init__(
        self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, threshold: float | None = None
    ) -> None:
        super().__init__()
        self.loss = SegDiceLoss() if loss is None else loss
        self.threshold = threshold
        self._masked: DiceLoss | None = None
        if threshold is not None:
            if not isinstance(self.loss, DiceLoss):
                raise TypeError(f"a pseudo-label threshold needs a MONAI DiceLoss, got {type(self.loss).__name__}.")
            # the same Dice on probabilities and one-hot targets that are zero outside the confident voxels
            self._masked = copy.copy(self.loss)
            self._masked.softmax, self._masked.to_onehot_y, self._masked.sigmoid = False, False, False
            self._masked.other_act = None

    @staticmethod
    def pseudo_label(logits: torch.Tensor) -> torch.Tensor:
        """Detached argmax over the channel dimension, kept as a (B, 1, *spatial) class-index tensor."""
        return argmax(logits.detach(), dim=1, keepdim=True)

    def directed(self, learner: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``L(learner, argmax teacher)``, restricted to the teacher's confident voxels when ``threshold`` is set."""
        if self._masked is None:
            return self.loss(learner, self.pseudo_label(teacher))
        prob = torch.softmax(at_least_float32(learner), dim=1)
        t_prob = torch.softmax(teacher.detach().to(prob.dtype), dim=1)
        confidence, target = t_prob.max(dim=1, keepdim=True)
        mask = (confidence >= self.threshold).to(prob.dtype)
        onehot = torch.nn.functional.one_hot(target[:, 0], learner.shape[1]).movedim(-1, 1).to(prob.dtype)
        return self._masked(prob * mask, onehot * mask)

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
        return self.directed(logits_a, logits_b) + self.directed(logits_b, logits_a)
