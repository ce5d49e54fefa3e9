# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""An ``ImageReader`` for HDF5 volumes (the community LA/Pancreas h5 layout) usable by ``LoadImage(d)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from monai_stlu.data.h5_files import read_h5_dataset

__all__ = ["H5Reader", "is_h5_source"]

H5_SUFFIXES = ("h5", "hdf5")


def is_h5_source(source: Any) -> bool:
    """Whether an image (a path, or a MetaTensor read from one) comes from an HDF5 file: those hold the converters'
    preprocessed volumes, which the raw-scan steps of inference leave as they are."""
    meta = getattr(source, "meta", None)
    if meta is not None:
        source = meta.get("filename_or_obj", "")
    names = [str(s) for s in ensure_tuple(source)] if not isinstance(source, str) else [source]
    return bool(names) and all(n.lower().endswith(tuple("." + s for s in H5_SUFFIXES)) for n in names)


class H5Reader(ImageReader):
    """Read a dataset (``image`` or ``label``) from HDF5 files, for ``LoadImage(reader=H5Reader(...))``.

    The community h5 files store no geometry, so the affine is ``diag(spacing)`` (identity by default). One 3-D
    array is returned without a channel dimension (``original_channel_dim`` is ``nan``), so
    ``EnsureChannelFirst`` adds one. Several datasets (e.g. the MR sequences ``["flair", "t1ce"]`` a BraTS
    converter wrote), or several files, are stacked as channels (datasets within a file, files after each other).

    Args:
        dataset: name of the h5 dataset to read, e.g. ``"image"`` or ``"label"``, or a list of names.
        spacing: voxel spacing in mm (e.g. ``[0.625, 0.625, 0.625]`` for LA); None means unknown (1.0, voxels).
        dtype: optional numpy dtype to cast to.

    Raises:
        FileNotFoundError: the file does not exist (raised by :py:meth:`read`).
        ValueError: the file is not readable as HDF5, or has no such dataset (raised by :py:meth:`read`).

    Example::

        LoadImaged(keys="label", reader=H5Reader(dataset="label", spacing=[0.625] * 3))
    """

    suffixes = H5_SUFFIXES

    def __init__(self, dataset: str | Sequence[str] = "image", spacing: Sequence[float] | None = None, dtype: Any = None) -> None:
        super().__init__()
        self.dataset = dataset if isinstance(dataset, str) else list(dataset)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.dtype = dtype

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return is_supported_format(filename, list(self.suffixes))

    def read(self, data: Sequence[str] | str, **kwargs) -> list[np.ndarray] | np.ndarray:
        """Read ``self.dataset`` (each of them) from each file; returns one array or a list of arrays."""
        arrays = [read_h5_dataset(str(name), ds) for name in ensure_tuple(data) for ds in ensure_tuple(self.dataset)]
        return arrays if len(arrays) > 1 else arrays[0]

    def get_data(self, img: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, dict]:
        arrays = [np.asarray(a) for a in (img if isinstance(img, list) else [img])]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"H5Reader cannot stack arrays of different shapes {sorted(shapes)}.")
        data = np.stack(arrays, axis=0) if len(arrays) > 1 else arrays[0]
        if self.dtype is not None:
            data = data.astype(self.dtype)
        ndim = arrays[0].ndim
        spacing = self.spacing if self.spacing is not None else [1.0] * ndim
        if len(spacing) != ndim:
            raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {ndim}-D volume.")
        affine = np.eye(ndim + 1)
        affine[:ndim, :ndim] = np.diag(spacing)
        meta = {
            MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape),
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: 0 if len(arrays) > 1 else float("nan"),
            "spacing_known": self.spacing is not None,
        }
        return data, meta
