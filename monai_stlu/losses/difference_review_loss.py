# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MCF's contrastive difference review: a squared error to the label where two subnets disagree."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.utils.fast_path import argmax, at_least_float32

__all__ = ["DifferenceReviewLoss"]


class DifferenceReviewLoss(nn.Module):
    """``sum(M * sum_{c >= 1} (p_c - y_c)^2) / (sum(M) + eps)``, ``M`` the voxels whose argmax labels two subnets
    disagree on (detached), ``p`` the softmax of the first subnet's logits and ``y`` the one-hot label: each subnet
    reviews the regions where the pair differs. With two classes this is the reference's
    ``sum(diff_mask * (p_1 - y)^2) / (sum(diff_mask) + 1e-16)``, ``diff_mask`` the exclusive or of the two foreground
    predictions; with more classes every foreground channel is counted.

    Reference:
        Wang Y. et al., "MCF: Mutual Correction Framework for Semi-Supervised Medical Image Segmentation", CVPR 2023
        (``WYC-321/MCF``, ``train_MCF.py``: ``v_mse``/``r_mse``).

    Args:
        eps: added to the number of disagreeing voxels (1e-16 as the reference).
    """

    def __init__(self, eps: float = 1e-16) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, other_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Args:
            logits: (B, C, *spatial) logits of the subnet the loss trains.
            other_logits: the other subnet's logits (only their argmax is used, without gradient).
            label: (B, 1, *spatial) class indices.
        """
        prob = torch.softmax(at_least_float32(logits), dim=1)
        disagree = (argmax(logits.detach(), dim=1) != argmax(other_logits.detach(), dim=1)).to(prob.dtype)
        target = F.one_hot(label[:, 0].long(), prob.shape[1]).movedim(-1, 1).to(prob.dtype)
        dist = ((prob[:, 1:] - target[:, 1:]) ** 2).sum(dim=1)
        return (disagree * dist).sum() / (disagree.sum() + self.eps)
