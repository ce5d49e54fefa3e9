# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""TraCoCo's Confident Regional Cross-entropy (CRC) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["ConfidentRegionalCELoss"]


class ConfidentRegionalCELoss(nn.Module):
    """Cross-entropy to another network's confident voxels plus a complementary term on its unlikely classes:

    ``mean_{q_max >= t} q_max * CE(p, argmax q) + mean_{q_min < t_neg} q_min * CE(1 - p, argmin q)``

    with ``q`` the softmax of the target logits (no gradient) and ``p`` that of the inputs; the second term is the
    cross-entropy of ``clamp(1 - p, 1e-6, 1)`` with the least likely class, which pushes ``p`` away from it. A term
    with no voxel selected is 0. With two classes ``argmin q = 1 - argmax q``: the reference's ``semi_crc_loss``.

    Reference:
        Liu Y. et al., "Translation Consistent Semi-supervised Segmentation for 3D Medical Images", IEEE TMI 2024
        (``yyliu01/TraCoCo``, ``Code/VnetLA/Utils/losses.py``, ``semi_crc_loss``).

    Args:
        threshold: the confidence ``t`` a target voxel needs for the positive term (0.65 on LA).
        neg_threshold: ``t_neg``: the negative term takes the voxels whose least likely class is below it (0.1).
    """

    def __init__(self, threshold: float = 0.65, neg_threshold: float = 0.1) -> None:
        super().__init__()
        self.threshold, self.neg_threshold = threshold, neg_threshold

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Args:
            inputs: (B, C, *spatial) logits being trained.
            targets: (B, C, *spatial) logits of the other network (used without gradient).
        """
        q = torch.softmax(at_least_float32(targets.detach()), dim=1)
        logits = at_least_float32(inputs)
        pos_weight, hard = q.max(dim=1)
        neg_weight, unlikely = q.min(dim=1)
        pos_mask, neg_mask = pos_weight >= self.threshold, neg_weight < self.neg_threshold
        total = logits.new_zeros(())
        if bool(pos_mask.any()):
            ce = F.nll_loss(torch.log_softmax(logits, dim=1), hard, reduction="none") * pos_weight
            total = total + ce[pos_mask].mean()
        if bool(neg_mask.any()):
            inverse = torch.clamp(1 - torch.softmax(logits, dim=1), min=1e-6, max=1.0)
            ce = F.nll_loss(inverse.log(), unlikely, reduction="none") * neg_weight
            total = total + ce[neg_mask].mean()
        return total
