# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Per-case Dice, Jaccard, HD95 and ASD with the definitions of the published semi-supervised tables (medpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.utils import get_mask_edges, get_surface_distance

__all__ = ["segmentation_metrics", "dice_score", "METRIC_NAMES"]

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


def _as_bool(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(bool)


def dice_score(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """Dice of two binary masks, ``2 |P & R| / (|P| + |R|)``; two empty masks score 1 (as in
    :py:func:`segmentation_metrics`)."""
    p, r = _as_bool(pred), _as_bool(ref)
    n = float(p.sum() + r.sum())
    return 1.0 if n == 0 else 2.0 * float(np.logical_and(p, r).sum()) / n


def segmentation_metrics(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """Dice, Jaccard, 95 % Hausdorff distance and average surface distance of two binary masks.

    The definitions are those of medpy (``medpy.metric.binary``), which the UA-MT / MC-Net / BCP / STLU-Net
    tables use; the surfaces and distance transforms come from MONAI (``get_mask_edges``: the mask XOR its
    binary erosion with the face-connected structuring element; ``get_surface_distance``: Euclidean distance
    transform). Two conventions differ from MONAI's own metric classes:

    - ``hd95`` is the 95th percentile of the **pooled** directed surface distances (pred->ref and ref->pred
      together); MONAI's ``HausdorffDistanceMetric`` takes the larger of the two directed percentiles.
    - ``asd`` is directed, from the prediction's surface to the reference's (MONAI's ``symmetric=False``).

    Empty masks are not flattered: an empty prediction (or reference) against a non-empty one scores Dice 0,
    Jaccard 0, and HD95 = ASD = the length of the volume's diagonal in the given units (the largest distance
    two voxels of the volume can have), where the community code would report 0. Two empty masks score Dice 1,
    Jaccard 1, HD95 0, ASD 0.

    Args:
        pred: binary prediction, spatial dims only.
        ref: binary reference, same shape.
        spacing: voxel spacing; None gives distances in voxels.

    Returns:
        ``{"dice", "jaccard", "hd95", "asd"}`` as floats.

    Raises:
        ValueError: when the shapes differ or the spacing length does not match.
    """
    p, r = _as_bool(pred), _as_bool(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}.")
    spacing_ = [1.0] * p.ndim if spacing is None else [float(s) for s in spacing]
    if len(spacing_) != p.ndim:
        raise ValueError(f"spacing {spacing_} does not match a {p.ndim}-D mask.")
    inter = float(np.logical_and(p, r).sum())
    n_p, n_r = float(p.sum()), float(r.sum())
    if n_p == 0 and n_r == 0:
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    dice = dice_score(p, r)
    jaccard = inter / (n_p + n_r - inter)
    if n_p == 0 or n_r == 0:
        worst = float(np.sqrt(sum(((s - 1) * d) ** 2 for s, d in zip(p.shape, spacing_))))
        return {"dice": dice, "jaccard": jaccard, "hd95": worst, "asd": worst}
    edges_p, edges_r = get_mask_edges(p, r, crop=True)  # numpy in, numpy out
    d_pr = np.asarray(get_surface_distance(edges_p, edges_r, distance_metric="euclidean", spacing=spacing_))
    d_rp = np.asarray(get_surface_distance(edges_r, edges_p, distance_metric="euclidean", spacing=spacing_))
    hd95 = float(np.percentile(np.concatenate([d_pr, d_rp]), 95))
    asd = float(d_pr.mean())
    return {"dice": dice, "jaccard": jaccard, "hd95": hd95, "asd": asd}
