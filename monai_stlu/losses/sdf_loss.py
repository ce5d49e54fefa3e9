# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Regression of a predicted level set onto the normalised signed distance map of the label (DTC, SASSNet)."""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import optional_import
from torch import nn

from monai_stlu.utils.fast_path import at_least_float32

distance_transform_edt, _ = optional_import("scipy.ndimage", name="distance_transform_edt")
find_boundaries, _ = optional_import("skimage.segmentation", name="find_boundaries")

__all__ = ["SDFLoss", "normalized_sdf"]


def normalized_sdf(mask: np.ndarray) -> np.ndarray:
    """The signed distance map of one binary mask, each side scaled to [0, 1] as DTC's ``compute_sdf``::

        sdf = (d_out - min d_out) / (max d_out - min d_out) - (d_in - min d_in) / (max d_in - min d_in)

    where ``d_in`` is the Euclidean distance of a foreground voxel to the background (0 outside) and ``d_out`` that of
    a background voxel to the foreground; the inner boundary (``skimage.segmentation.find_boundaries(mode="inner")``)
    is 0. Negative inside, positive outside, in [-1, 1]. An empty mask gives zeros (as the reference); a mask
    without background (where the reference divides by zero) gives -1 everywhere.

    Args:
        mask: a boolean array of any dimension.

    Returns:
        a float64 array of the same shape.
    """
    pos = np.asarray(mask).astype(bool)
    if not pos.any():
        return np.zeros(pos.shape)
    neg = ~pos
    if not neg.any():
        return -np.ones(pos.shape)

    def scaled(d: np.ndarray) -> np.ndarray:
        span = d.max() - d.min()
        return (d - d.min()) / span if span > 0 else np.zeros(d.shape)

    sdf = scaled(distance_transform_edt(neg)) - scaled(distance_transform_edt(pos))
    sdf[find_boundaries(pos, mode="inner")] = 0.0
    return sdf


class SDFLoss(nn.Module):
    """``mean((sdf_pred - sdf(label))^2)`` over the batch, one level-set channel per foreground class ``c``
    (``sdf(label == c)`` from :py:func:`normalized_sdf`). The target is computed on the host, per case, as the
    references do (``torch.no_grad``, ``scipy``/``scikit-image``).

    Reference:
        Luo X. et al., "Semi-supervised Medical Image Segmentation through Dual-task Consistency", AAAI 2021
        (``HiLab-git/DTC``: ``compute_sdf`` and ``MSELoss`` on ``tanh`` outputs).
    """

    @staticmethod
    def target(label: torch.Tensor, channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, channels, *spatial) normalised SDFs, in ``dtype``, of classes ``1..channels`` of a (B, 1, *spatial)
        label."""
        lab = label.detach().cpu().numpy()[:, 0]
        sdf = np.stack([np.stack([normalized_sdf(lab[b] == c + 1) for c in range(channels)]) for b in range(len(lab))])
        return torch.from_numpy(sdf).to(device=label.device, dtype=dtype)

    def forward(self, sdf_pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Args: ``sdf_pred`` (B, C-1, *spatial) level sets in [-1, 1]; ``label`` (B, 1, *spatial) class indices."""
        pred = at_least_float32(sdf_pred)
        return torch.mean((pred - self.target(label, pred.shape[1], pred.dtype)) ** 2)
