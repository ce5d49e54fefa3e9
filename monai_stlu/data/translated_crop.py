# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""TraCoCo's pair of crops of one volume with different spatial context."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandTranslatedCropd"]


class RandTranslatedCropd(Randomizable, MapTransform):
    """Two crops of ``roi_size`` from the same volume: the training crop under each key, and a translated crop under
    ``<key>_translated`` that starts before it along every axis, so the two share a region seen with different
    context; ``translation`` holds the second crop's start minus the first's (one integer per spatial axis), from
    which the shared region's place in each crop follows (:py:func:`overlap_slices`).

    Drawn as the reference does, per axis of size ``s`` and crop ``p``: the crop start ``n`` uniform in
    ``[0, s - p)`` (0 when ``s == p``), the translated start uniform in ``[0, n)`` (``n`` itself when ``n == 0``),
    and, along the first two axes, moved on by ``n // 2`` when the two crops would not overlap. The volume must be at
    least ``roi_size`` (pad it first, ``SpatialPadd``).

    Reference:
        Liu Y. et al., "Translation Consistent Semi-supervised Segmentation for 3D Medical Images", IEEE TMI 2024
        (``yyliu01/TraCoCo``, ``Code/VnetLA/Dataloader/augmentation.py``, ``RandomCrop``).

    Args:
        keys: the entries cropped (an image and, for labeled cases, its label).
        roi_size: the crop size.
        translated_suffix: suffix of the translated crops' keys.
        translation_key: the entry holding the translation.
        allow_missing_keys: skip keys a case lacks (an unlabeled case's label).
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int],
        translated_suffix: str = "_translated",
        translation_key: str = "translation",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.translated_suffix, self.translation_key = translated_suffix, translation_key
        self._starts: tuple[list[int], list[int]] | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        if len(spatial_shape) != len(self.roi_size) or any(s < p for s, p in zip(spatial_shape, self.roi_size)):
            raise ValueError(f"RandTranslatedCropd needs a volume of at least {list(self.roi_size)} voxels, got "
                             f"{list(spatial_shape)}: pad it first (SpatialPadd).")
        starts = [int(self.R.randint(0, max(s - p, 1))) for s, p in zip(spatial_shape, self.roi_size)]
        moved = [int(self.R.randint(0, n)) if n != 0 else n for n in starts]
        for axis in range(min(2, len(starts))):  # the reference's "no-overlap" fix, first two axes only
            if starts[axis] - moved[axis] > self.roi_size[axis]:
                moved[axis] += starts[axis] // 2
        self._starts = (starts, moved)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        if first is None:
            return d
        self.randomize(d[first].shape[1:])
        assert self._starts is not None
        starts, moved = self._starts
        for key in self.key_iterator(d):
            img = d[key]
            d[key] = img[(slice(None), *[slice(n, n + p) for n, p in zip(starts, self.roi_size)])]
            d[f"{key}{self.translated_suffix}"] = img[(slice(None), *[slice(c, c + p) for c, p in zip(moved, self.roi_size)])]
        d[self.translation_key] = torch.as_tensor(np.subtract(moved, starts), dtype=torch.int64)
        return d


def overlap_slices(shift: Sequence[int], size: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where the region two crops share lies in each: ``shift`` is the second crop's start minus the first's per axis
    and ``size`` the crop size; returns the slices of the shared region in the first crop and in the second (empty
    along an axis where they do not overlap)."""
    first, second = [], []
    for d, p in zip((int(v) for v in shift), size):
        first.append(slice(max(d, 0), max(p + min(d, 0), max(d, 0))))
        second.append(slice(max(-d, 0), max(p - max(d, 0), max(-d, 0))))
    return tuple(first), tuple(second)
