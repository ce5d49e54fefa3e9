# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The feature perturbations of cross-consistency training (CCT): noise, dropout, attention-guided dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureNoise", "ActiveDropout", "AttentionDropout"]


class FeatureNoise(nn.Module):
    """``x + x * n`` with ``n ~ U(-r, r)`` drawn once per call for every (channel, position) and shared by the batch.

    Reference:
        Ouali Y. et al., "Semi-Supervised Semantic Segmentation with Cross-Consistency Training", CVPR 2020 (as
        ``FeatureNoise`` in ``HiLab-git/SSL4MIS``, ``networks/unet.py``).

    Args:
        uniform_range: ``r`` (0.3).
    """

    def __init__(self, uniform_range: float = 0.3) -> None:
        super().__init__()
        self.uniform_range = float(uniform_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = (torch.rand(x.shape[1:], device=x.device, dtype=x.dtype) * 2.0 - 1.0) * self.uniform_range
        return x + x * noise.unsqueeze(0)


class ActiveDropout(nn.Module):
    """Element-wise dropout with probability ``p`` that is on whenever the module runs (SSL4MIS calls
    ``F.dropout(x, p)`` (its ``Dropout``), whose ``training`` defaults to True; the auxiliary decoders it feeds run in
    training only)."""

    def __init__(self, p: float = 0.3) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


class AttentionDropout(nn.Module):
    """Zero the positions whose channel-mean activation reaches ``t * max``, with ``t ~ U(low, high)`` drawn once per
    call and the max taken per sample: the most attended regions are dropped (CCT's "feature dropout", SSL4MIS's
    ``FeatureDropout``).

    Reference:
        Ouali Y. et al., CVPR 2020 (as ``FeatureDropout`` in ``HiLab-git/SSL4MIS``, ``networks/unet.py``).

    Args:
        low: lower bound of ``t`` (0.7).
        high: upper bound of ``t`` (0.9).
    """

    def __init__(self, low: float = 0.7, high: float = 0.9) -> None:
        super().__init__()
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = x.mean(dim=1, keepdim=True)
        max_val = attention.amax(dim=[d for d in range(1, attention.dim())], keepdim=True)  # per sample
        t = self.low + (self.high - self.low) * float(torch.rand(()))
        return x * (attention < max_val * t).to(x.dtype)
