# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The converters' label-free geometry steps for raw scans sent to inference, invertible so that the prediction is
written back on the input's grid (preprocessed h5 files pass unchanged)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Flip, InvertibleTransform, MapTransform, Spacing
from monai.utils import TraceKeys

from monai_stlu.data.dicom_series import instance_order_reversed
from monai_stlu.data.h5_reader import is_h5_source

__all__ = ["RawGeometryd"]


def _foreground_box(x: torch.Tensor) -> list[tuple[int, int]]:
    """The box of the voxels non-zero in any channel, its upper bounds exclusive as SSL4MIS's BraTS crop (the last
    non-zero plane is left out: the converted training data were cut so)."""
    nz = torch.nonzero(torch.any(x != 0, dim=0))
    if not len(nz):
        return [(0, int(n)) for n in x.shape[1:]]
    return [(int(lo), max(int(hi), int(lo) + 1)) for lo, hi in zip(nz.min(0).values, nz.max(0).values)]


def _shift_affine(x: torch.Tensor, start: Sequence[int], sign: int) -> None:
    """Move the origin of ``x``'s affine by ``sign`` times ``start`` voxels (crop: +1, uncrop: -1)."""
    if isinstance(x, MetaTensor):
        affine = x.affine.clone()
        affine[:-1, -1] += sign * (affine[:-1, :-1] @ torch.as_tensor(start, dtype=affine.dtype))
        x.affine = affine


def _crop(x: torch.Tensor, box: Sequence[slice]) -> torch.Tensor:
    out = x[(slice(None), *box)].clone()
    _shift_affine(out, [b.start for b in box], +1)
    return out


def _uncrop(x: torch.Tensor, box: Sequence[Sequence[int]], shape: Sequence[int]) -> torch.Tensor:
    """Put a cropped prediction back in a zero volume of ``shape`` (outside the box: every class's logit 0, so
    the argmax there is the background)."""
    out = x.new_zeros((x.shape[0], *shape))
    out[(slice(None), *[slice(a, b) for a, b in box])] = x
    if isinstance(x, MetaTensor):
        out.meta = dict(x.meta)
        _shift_affine(out, [a for a, _ in box], -1)
    return out


def _reversed_series(x: torch.Tensor) -> bool:
    """Whether ``x`` was read from a DICOM series folder whose InstanceNumber order runs against ITK's."""
    source = x.meta.get("filename_or_obj", "") if isinstance(x, MetaTensor) else ""
    source = source[0] if isinstance(source, (list, tuple)) and len(source) == 1 else source
    return isinstance(source, str) and os.path.isdir(source) and instance_order_reversed(source)


def _permute(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Reorder the spatial axes of a channel-first image, and the affine's columns with them (the voxels keep their
    place in the world)."""
    out = x.permute(0, *[a + 1 for a in axes]).contiguous()
    if isinstance(out, MetaTensor):
        affine = out.affine.clone()
        affine[:, : len(axes)] = x.affine[:, list(axes)]
        out.affine = affine
    return out


class RawGeometryd(MapTransform, InvertibleTransform):
    """Bring a raw scan (NIfTI, NRRD, DICOM series) onto the grid the bundle's converter gave its training data,
    using only the steps that need no label, and undo them on the prediction (``Invertd`` with this bundle's
    preprocessing), so the segmentation is written in the input's space, shape and orientation.

    Steps, each optional, in the converters' order:
        0. for a DICOM series whose InstanceNumber order runs against ITK's slice order, flip the slice axis
           (``dicom_instance_order``; Pancreas-CT: MC-Net stacks the slices by InstanceNumber);
        1. resample to ``spacing`` mm (Pancreas-CT: 1 mm isotropic as MC-Net; LA: 0.625 mm, the LA 2018 grid);
        2. reorder the spatial axes by ``axes`` (BraTS-2019: ``[2, 1, 0]``, SSL4MIS's h5 arrays are in SimpleITK's
           (z, y, x) order while MONAI reads (x, y, z));
        3. crop to the box of the non-zero voxels (``crop_foreground``; BraTS-2019: the brain's box, as SSL4MIS,
           whose upper bounds are exclusive).

    The converters' label-based crops (LA: around the atrium, Pancreas-CT: around the pancreas) cannot be applied to
    a new scan; inference slides over the whole (resampled) volume instead. Images read from h5 files are already on
    the training grid and pass unchanged (the record of that is kept, so inverting them is a no-op too).

    Reference: the preprocessing of UA-MT (LA), MC-Net (Pancreas-CT) and SSL4MIS (BraTS-2019), see
    :py:mod:`monai_stlu.data.converters`.

    Args:
        keys: image keys.
        spacing: target voxel spacing in mm, or None to keep the scan's grid.
        axes: permutation of the spatial axes, or None.
        crop_foreground: crop to the non-zero voxels' box (after resampling and reordering).
        dicom_instance_order: put a DICOM series' slices in InstanceNumber order
            (:py:func:`monai_stlu.data.instance_order_reversed`), as the converter did.
        mode: interpolation of the image when resampling (the prediction is inverted with the same mode).
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing: Sequence[float] | None = None,
        axes: Sequence[int] | None = None,
        crop_foreground: bool = False,
        mode: str = "bilinear",
        allow_missing_keys: bool = False,
        dicom_instance_order: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if axes is not None and sorted(int(a) for a in axes) != list(range(len(axes))):
            raise ValueError(f"RawGeometryd axes {list(axes)} is not a permutation of the spatial axes.")
        self.spacing = Spacing(pixdim=[float(s) for s in spacing], mode=mode, padding_mode="border") if spacing else None
        self.axes = None if axes is None else [int(a) for a in axes]
        self.crop_foreground = crop_foreground
        self.dicom_instance_order = dicom_instance_order
        self.flip = Flip(spatial_axis=-1)  # the slice axis of a series read by ITK

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            raw = not is_h5_source(d[key])
            if raw:
                flip = self.dicom_instance_order and _reversed_series(d[key])
                x = self.flip(d[key]) if flip else d[key]
                x = x if self.spacing is None else self.spacing(x)
                x = x if self.axes is None else _permute(x, self.axes)
                box = _foreground_box(x) if self.crop_foreground else None
                d[key] = x if box is None else _crop(x, [slice(a, b) for a, b in box])
                self.push_transform(d[key], extra_info={"raw": True, "box": box, "shape": list(x.shape[1:]), "flip": flip})
            else:
                self.push_transform(d[key], extra_info={"raw": False})
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            info = self.pop_transform(d[key])[TraceKeys.EXTRA_INFO]
            if info["raw"]:
                x = d[key] if info["box"] is None else _uncrop(d[key], info["box"], info["shape"])
                x = x if self.axes is None else _permute(x, [self.axes.index(i) for i in range(len(self.axes))])
                x = x if self.spacing is None else self.spacing.inverse(x)
                d[key] = self.flip.inverse(x) if info.get("flip") else x
        return d
