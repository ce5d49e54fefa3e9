# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""URPC: consistency of every pyramid level with their mean, rectified by each level's KL uncertainty."""

from __future__ import annotations

import torch

from monai_stlu.engines.methods.multi_output import MultiOutputMethod
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["URPCMethod", "rectified_consistency"]


def rectified_consistency(prob: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """URPC's term for one level: with ``v = sum_c mean_c (log mean_c - log p_c)`` (the KL divergence of the level's
    softmax ``p`` from the mean of all levels, per voxel)::

        mean((mean - p)^2 * exp(-v)) / (mean(exp(-v)) + 1e-8) + mean(v)

    Neither ``mean`` nor ``v`` is detached (as the reference)."""
    v = torch.sum(torch.xlogy(mean, mean) - mean * torch.log(prob), dim=1, keepdim=True)
    w = torch.exp(-v)
    return torch.mean((mean - prob) ** 2 * w) / (torch.mean(w) + 1e-8) + torch.mean(v)


class URPCMethod(MultiOutputMethod):
    """``L = mean_i sup(p_i^l, y) + w(t) * mean_i rectified_consistency(p_i^u, mean_j p_j^u)`` over the levels ``i``
    of a :py:class:`monai_stlu.networks.nets.PyramidVNet` (every level up-sampled to the input size).

    As SSL4MIS's 3D script: ``sup`` is ``0.5 (CE + Dice)`` with its every-class squared Dice (configure
    :py:class:`monai_stlu.losses.SegDiceCELoss` with ``include_background=True``; the reference divides the sum of the
    eight CE and Dice terms by 8), the consistency weight ramps to 0.1 over 400 steps of 150 iterations, the learning
    rate starts at 0.1 and decays as ``(1 - t/T)^0.9``.

    Reference:
        Luo X. et al., "Efficient Semi-supervised Gross Target Volume of Nasopharyngeal Carcinoma Segmentation via
        Uncertainty Rectified Pyramid Consistency", MICCAI 2021 (``HiLab-git/SSL4MIS``,
        ``train_uncertainty_rectified_pyramid_consistency_3D.py``).

    Args:
        sup_loss: see :py:class:`MultiOutputMethod`.
        consistency_weight: see :py:class:`MultiOutputMethod`.
    """

    def consistency(self, logits_unlabeled: list[torch.Tensor]) -> torch.Tensor:
        probs = [torch.softmax(at_least_float32(o), dim=1) for o in logits_unlabeled]
        mean = sum(probs) / len(probs)
        return sum(rectified_consistency(p, mean) for p in probs) / len(probs)
