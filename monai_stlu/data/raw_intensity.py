# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The converters' intensity steps for raw scans sent to inference (preprocessed h5 files pass unchanged)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_stlu.data.converters import cdf_clip_value
from monai_stlu.data.h5_reader import is_h5_source

__all__ = ["RawIntensityd"]

_MODES = ("zscore", "brain_zscore", "ct_window")


class RawIntensityd(MapTransform):
    """Normalise a raw scan as the bundle's converter normalised its training data, so a NIfTI/NRRD/DICOM scan of the
    modality gives a sensible segmentation. Images read from h5 files (already preprocessed by a converter or the
    community's scripts) pass through unchanged.

    Modes (see :py:mod:`monai_stlu.data.converters` for the published steps):
        - ``"zscore"`` (LA, LGE-MRI): ``(x - mean) / std`` over the volume, as UA-MT's conversion.
        - ``"brain_zscore"`` (BraTS-2019, MR sequences): clip at the 99.9th percentile of the volume, then z-score
          with the mean and std of the voxels > 0, as SSL4MIS's; the bundle's :py:class:`RawGeometryd` first crops
          to the brain's box as SSL4MIS does, so the percentile is taken over the same voxels.
        - ``"ct_window"`` (Pancreas-CT): HU window [-125, 275] scaled to [0, 1], then z-score over the volume. The
          published z-score is over a crop around the pancreas, which needs the label: over a whole abdomen the mean
          and std differ, a known shift between the training data and raw scans.

    Args:
        keys: image keys.
        mode: one of ``"zscore"``, ``"brain_zscore"``, ``"ct_window"``.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: an unknown mode (at construction).
    """

    def __init__(self, keys: KeysCollection, mode: str = "zscore", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if mode not in _MODES:
            raise ValueError(f"RawIntensityd mode {mode!r} is not one of {_MODES}.")
        self.mode = mode

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "ct_window":
            x = (x.clamp(-125.0, 275.0) + 125.0) / 400.0
        if self.mode == "brain_zscore":  # SSL4MIS's clip, as the converter computes it
            x = torch.clamp(x, max=cdf_clip_value(x.detach().cpu().numpy(), 0.999))
            brain = x[x > 0]
            mean, std = (brain.mean(), brain.std(unbiased=False)) if brain.numel() > 1 else (x.mean(), x.std(unbiased=False))
        else:
            mean, std = x.mean(), x.std(unbiased=False)
        return (x - mean) / std.clamp_min(1e-8)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if not is_h5_source(d[key]):
                x = d[key].float()  # channel first: each channel (MR sequence) is normalised on its own
                d[key] = torch.stack([self._normalise(c) for c in x]) if x.ndim > 3 else self._normalise(x)
        return d
