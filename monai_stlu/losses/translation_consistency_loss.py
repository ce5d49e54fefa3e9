# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""TraCoCo's translation consistency: two crops of one volume agree where they overlap."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.data.translated_crop import overlap_slices
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["TranslationConsistencyLoss"]


class TranslationConsistencyLoss(nn.Module):
    """On the region two crops of each image share: ``spatial_weight * sum_i KL(a_i || b_i) + entropy_weight *
    mean(sum_c q log q)``, computed as the reference does.

    For image ``i``, ``a_i`` and ``b_i`` are the two crops' logits on the shared region, each a (C, X, Y, Z) tensor
    clamped to ``[1e-6, 1]``; the KL term is ``F.kl_div(log_softmax(a_i, dim=1), softmax(b_i, dim=1)).mean()``, so
    its softmax runs along the first spatial axis (dim 1 of the per-image tensor), and both crops get its gradient.
    The second term (the reference's ``NegEntropy``) averages, over the 2 x B regions, the voxel mean of
    ``sum_c q_c log q_c`` with ``q`` the softmax over classes of the clamped logits: minimising it raises the
    predictions' entropy on the shared regions. Images whose crops share no voxel are skipped.

    Reference:
        Liu Y. et al., "Translation Consistent Semi-supervised Segmentation for 3D Medical Images", IEEE TMI 2024
        (``yyliu01/TraCoCo``, ``Code/VnetLA/train.py``: ``spatial_loss``, ``NegEntropy``; ``spatial_weight`` 0.3,
        ``hyp`` 0.1 in ``Configs/config.py``).

    Args:
        spatial_weight: weight of the KL term.
        entropy_weight: weight of the negative-entropy term.
    """

    def __init__(self, spatial_weight: float = 0.3, entropy_weight: float = 0.1) -> None:
        super().__init__()
        self.spatial_weight, self.entropy_weight = spatial_weight, entropy_weight

    def forward(self, logits: torch.Tensor, translated_logits: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        """Args:
            logits: (B, C, *spatial) logits of the training crops.
            translated_logits: the translated crops' logits, same shape.
            translation: (B, n_spatial) the translated crops' start minus the training crops' start.
        """
        size = logits.shape[2:]
        spatial = at_least_float32(logits).new_zeros(())
        regions: list[torch.Tensor] = []
        for i, shift in enumerate(translation.tolist()):
            first, second = overlap_slices(shift, size)
            a = at_least_float32(logits[i][(slice(None), *first)])
            b = at_least_float32(translated_logits[i][(slice(None), *second)])
            if a.numel() == 0 or b.numel() == 0:
                continue
            a, b = a.clamp(min=1e-6, max=1.0), b.clamp(min=1e-6, max=1.0)
            spatial = spatial + F.kl_div(torch.log_softmax(a, dim=1), torch.softmax(b, dim=1), reduction="none").mean()
            regions += [a, b]
        entropy = spatial.new_zeros(())
        for r in regions:
            q = torch.softmax(r, dim=0)
            entropy = entropy + torch.sum(q.log() * q, dim=0).mean()
        if regions:
            entropy = entropy / len(regions)
        return self.spatial_weight * spatial + self.entropy_weight * entropy
