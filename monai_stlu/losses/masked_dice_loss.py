# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""BCP's Dice loss: per sample and class, optionally over a region of voxels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["MaskedDiceLoss"]


class MaskedDiceLoss(nn.Module):
    """``1 - mean_{n, c} (2 sum_v m p y + s) / (sum_v m (p + y) + s)`` over samples ``n`` and every class ``c``
    (background included), with ``p`` the softmax, ``y`` the one-hot target and ``m`` an optional region mask
    (all voxels when None); not squared, ``s = 1e-5``.

    This is the Dice of BCP's copy-paste losses (``mask_DiceLoss``): a region's loss is multiplied by its weight
    outside the Dice, so weighting the pseudo-labelled region by 0.5 halves its Dice loss (a weight inside both
    numerator and denominator would cancel).

    Reference:
        Bai Y. et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023.

    Args:
        smooth: the smoothing term ``s`` of numerator and denominator.
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            logits: (N, C, *spatial).
            target: class indices, (N, 1, *spatial) or (N, *spatial).
            mask: region weights broadcastable to (N, 1, *spatial), or None for every voxel.

        Returns:
            the scalar loss, in float32 at least.
        """
        n, c = logits.shape[:2]
        prob = torch.softmax(at_least_float32(logits), dim=1).reshape(n, c, -1)
        t = target.reshape(n, -1).long()
        onehot = F.one_hot(t, c).permute(0, 2, 1).to(prob.dtype)
        inter, union = prob * onehot, prob + onehot
        if mask is not None:
            m = mask.to(prob.dtype).expand(n, 1, *logits.shape[2:]).reshape(n, 1, -1)
            inter, union = inter * m, union * m
        dice = (2 * inter.sum(2) + self.smooth) / (union.sum(2) + self.smooth)
        return 1.0 - dice.mean()
