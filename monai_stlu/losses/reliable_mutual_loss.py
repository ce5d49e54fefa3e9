# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The reliability-weighted mutual cross-entropy of "mutual learning with reliable pseudo labels"."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["ReliableMutualLoss"]


class ReliableMutualLoss(nn.Module):
    """For every ordered pair of decoders (student ``i``, teacher ``j``, ``i != j``)::

        mask   = [H(p_i) > H(p_j)]                         (the teacher is the more confident at the voxel)
        y_j    = argmax p_j
        c_jk   = normalize(mean of f_j over the voxels with y_j = k)   (a class prototype per image)
        s_jk   = cos(f_j, c_jk)                              (per voxel)
        w      = (1 - mean_k (s_jk - p_jk)^2) * mask           (reliability: prototypes agree with the probabilities)
        L_ij   = sum(CE(p_i, y_j) * w) / (sum(mask) + 1e-6)

    summed over the pairs; ``H`` is the entropy with ``log(p + 1e-6)``, ``w`` carries no gradient. ``CE`` is applied
    to the probabilities ``p_i`` as its logits, exactly as the reference code calls ``nn.CrossEntropyLoss`` on the
    softmax outputs (``softmax_ce_input`` False computes it on the logits instead: a documented difference).

    Reference:
        Su J. et al., "Mutual learning with reliable pseudo label for semi-supervised medical image segmentation",
        Medical Image Analysis 2024 (``Jiawei0o0/mutual-learning-with-reliable-pseudo-labels``,
        ``code/train_Mutual_Reliable.py``).

    Args:
        softmax_ce_input: the cross-entropy takes the probabilities as its input (the reference's call).
        eps: the cosine similarity's epsilon.
    """

    def __init__(self, softmax_ce_input: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.softmax_ce_input = softmax_ce_input
        self.eps = eps

    def forward(self, logits: Sequence[torch.Tensor], features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``logits`` and ``features`` of each decoder, ``(B, C, *spatial)`` and ``(B, F, *spatial)``."""
        probs = [torch.softmax(at_least_float32(o), dim=1) for o in logits]
        entropy = [-(p * torch.log(p + 1e-6)).sum(1) for p in probs]
        total = probs[0].new_zeros(())
        for j, (p_j, f_j) in enumerate(zip(probs, features)):
            weight, pseudo = self.reliability(p_j, at_least_float32(f_j))
            for i, p_i in enumerate(probs):
                if i == j:
                    continue
                mask_ij = (entropy[i] > entropy[j]).float()
                student = p_i if self.softmax_ce_input else at_least_float32(logits[i])
                ce = F.cross_entropy(student, pseudo, reduction="none")
                total = total + (ce * (weight * mask_ij).detach()).sum() / (mask_ij.sum() + 1e-6)
        return total

    def reliability(self, p: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's per-voxel reliability ``1 - mean_k (cos(f, c_k) - p_k)^2`` and its argmax pseudo-label."""
        b, c = p.shape[:2]
        pseudo = p.argmax(1)
        onehot = F.one_hot(pseudo.reshape(b, -1), c).to(f.dtype)  # (B, N, C)
        flat = f.reshape(b, f.shape[1], -1)  # (B, F, N)
        proto = torch.bmm(flat, onehot) / (onehot.sum(1, keepdim=True) + 1e-6)  # (B, F, C): class means
        proto = F.normalize(proto, dim=1)
        dot = torch.einsum("bfn,bfc->bcn", flat, proto)
        norms = flat.norm(dim=1, keepdim=True).clamp_min(self.eps) * proto.norm(dim=1)[..., None].clamp_min(self.eps)
        sim = (dot / norms).reshape(p.shape)
        weight = 1.0 - ((sim - p) ** 2).mean(1)
        return weight, pseudo
