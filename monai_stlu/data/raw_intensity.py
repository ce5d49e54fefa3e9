# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The converters' intensity steps for raw scans sent to inference (preprocessed h5 files pass unchanged)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["RawIntensityd"]

_MODES = ("zscore", "brain_zscore", "ct_window")


class RawIntensityd(MapTransform):
    """Normalise a raw scan as the bundle's converter normalised its training data, so a NIfTI/NRRD/DICOM scan of the
    modality gives a sensible segmentation. Images read from h5 files (already preprocessed by a converter or the
    community's scripts) pass through unchanged.

    Modes (see :py:mod:`monai_stlu.data.converters` for the published steps):
        - ``"zscore"`` (LA, LGE-MRI): ``(x - mean) / std`` over the volume, as UA-MT's conversion.
        - ``"brain_zscore"`` (BraTS-2019, FLAIR): clip at the 99.9th percentile of the non-zero voxels, then z-score
          with the mean and std of the voxels > 0, as SSL4MIS's (which clips within the brain's box).
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
        if self.mode == "brain_zscore":
            nonzero = x[x != 0]
            if nonzero.numel():
                step = -(-nonzero.numel() // 2**24)  # torch.quantile takes at most 2**24 values
                x = torch.minimum(x, torch.quantile(nonzero.double()[::step], 0.999).float())
            brain = x[x > 0]
            mean, std = (brain.mean(), brain.std(unbiased=False)) if brain.numel() > 1 else (x.mean(), x.std(unbiased=False))
        else:
            mean, std = x.mean(), x.std(unbiased=False)
        return (x - mean) / std.clamp_min(1e-8)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            source = str(x.meta.get("filename_or_obj", "")) if isinstance(x, MetaTensor) else ""
            if source.lower().endswith((".h5", ".hdf5")):
                continue
            d[key] = self._normalise(x)
        return d
