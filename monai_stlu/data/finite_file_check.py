# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Refuse NIfTI files with NaN/Inf voxels before ITK reads them (ITK's NIfTI reader turns NaN into 0 silently)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import ensure_tuple, optional_import

nib, has_nib = optional_import("nibabel")

__all__ = ["CheckFiniteFiled"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class CheckFiniteFiled(MapTransform):
    """Before loading: read each NIfTI file named under ``keys`` with nibabel and refuse one with NaN/Inf voxels.

    ITK, which the inference configs read raw scans with (one reader for NIfTI, NRRD and DICOM), replaces NaN by 0
    in NIfTI files, so a corrupt scan would otherwise be segmented as if it were valid. Other formats, and the
    already loaded images that :py:class:`ValidateSegmentationd` checks, are left alone.

    Args:
        keys: keys holding file paths (a path or a list of paths).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: naming the file and the number of NaN/Inf voxels, or a file that is not readable NIfTI.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            for path in ensure_tuple(d[key]):
                if isinstance(path, str) and path.lower().endswith(NIFTI_SUFFIXES) and has_nib:
                    try:
                        values = np.asanyarray(nib.load(path).dataobj)
                    except Exception as e:  # nibabel's errors for a file that is not NIfTI, or is cut short
                        raise ValueError(f"{path}: not a readable NIfTI file ({e}).") from e
                    if np.issubdtype(values.dtype, np.floating):
                        n_bad = int((~np.isfinite(values)).sum())
                        if n_bad:
                            raise ValueError(f"{path}: the image has {n_bad} NaN/Inf voxels.")
        return d
