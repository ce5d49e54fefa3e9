# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Channel-wise, similarity-guided mixing of labeled and unlabeled features (STLU-Net)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureMix"]


class FeatureMix(nn.Module):
    """Mix labeled and unlabeled feature maps channel by channel, weighted by their cosine similarity.

    For each pair (labeled sample ``i``, unlabeled sample ``i``) and each channel ``c``, with the spatial
    dimensions flattened::

        w     = clamp(cos(x_u[i, c], x_l[i, c]), 0, 1)
        x_m_u = w * x_u + (1 - w) * x_l
        x_m_l = w * x_l + (1 - w) * x_u

    The cosine divides by ``max(|x_u| |x_l|, eps)`` (as ``torch.nn.functional.cosine_similarity`` does), so an
    all-zero channel gets ``w = 0``. The weight is computed in at least float32, even under autocast. Mixed
    labeled features keep their labels.

    Reference:
        "Enhancing semi-supervised medical image segmentation via semantic transfer", Pattern Recognition 2026.

    Args:
        eps: the small value of the cosine's denominator.
        detach_weight: if True, no gradient flows through the mixing weight ``w``.

    Example::

        mix = FeatureMix()
        mixed_l, mixed_u = mix(torch.rand(2, 16, 8, 8, 8), torch.rand(2, 16, 8, 8, 8))
    """

    def __init__(self, eps: float = 1e-8, detach_weight: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.detach_weight = detach_weight

    def mixing_weight(self, x_labeled: torch.Tensor, x_unlabeled: torch.Tensor) -> torch.Tensor:
        """Return ``w`` of shape (B, C), in float32 at least (float64 inputs keep float64).

        ``cos = <x_u, x_l> / max(|x_u| |x_l|, eps)`` over the flattened spatial dimensions. The divisions act on
        the (B, C) reductions only, never on the full feature maps, which matters for 3D features.
        """
        dims = list(range(2, x_labeled.dim()))
        acc = torch.promote_types(x_labeled.dtype, torch.float32)
        dot = (x_labeled * x_unlabeled).sum(dim=dims, dtype=acc)
        norm_l = torch.linalg.vector_norm(x_labeled, dim=dims, dtype=acc)
        norm_u = torch.linalg.vector_norm(x_unlabeled, dim=dims, dtype=acc)
        w = (dot / (norm_l * norm_u).clamp_min(self.eps)).clamp(0.0, 1.0)
        return w.detach() if self.detach_weight else w

    def forward(self, x_labeled: torch.Tensor, x_unlabeled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x_labeled: features of the labeled batch, (B, C, *spatial).
            x_unlabeled: features of the unlabeled batch, same shape.

        Returns:
            ``(mixed_labeled, mixed_unlabeled)``, each of the input shape and dtype.

        Raises:
            ValueError: when the two inputs differ in shape (batch sizes must match for pairing) or have no
                spatial dimension.
        """
        if x_labeled.shape != x_unlabeled.shape:
            raise ValueError(
                "FeatureMix pairs labeled sample i with unlabeled sample i, so both inputs need the same shape; "
                f"got labeled {list(x_labeled.shape)} and unlabeled {list(x_unlabeled.shape)}."
            )
        if x_labeled.dim() < 3:
            raise ValueError(f"FeatureMix expects (B, C, *spatial) inputs, got shape {list(x_labeled.shape)}.")
        w = self.mixing_weight(x_labeled, x_unlabeled)
        shape = [w.shape[0], w.shape[1]] + [1] * (x_labeled.dim() - 2)
        w = w.reshape(shape).to(x_labeled.dtype)
        # lerp(a, b, w) = a + w (b - a): x_m^u = w x_u + (1 - w) x_l and x_m^l = w x_l + (1 - w) x_u, one op each
        mixed_unlabeled = torch.lerp(x_labeled, x_unlabeled, w)
        mixed_labeled = torch.lerp(x_unlabeled, x_labeled, w)
        return mixed_labeled, mixed_unlabeled
