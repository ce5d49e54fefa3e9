# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A transform that rejects bad cases with an error naming the file, before training starts (during caching)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["ValidateSegmentationd"]


def _source(x, fallback: str) -> str:
    if isinstance(x, MetaTensor):
        return str(x.meta.get("filename_or_obj", fallback))
    return fallback


class ValidateSegmentationd(MapTransform):
    """Check a loaded case: an image of ``spatial_dims`` spatial dimensions and ``in_channels`` channels (when given),
    finite and not blank, and a label of the image's spatial shape with values in ``[0, num_classes)``.

    Put it right after loading in the deterministic (cached) part of a pipeline, so a bad case stops the run
    while the dataset is cached, with a message that names the file and the problem.

    Args:
        keys: ``(image_key, label_key)``; the label key may be absent from unlabeled cases.
        num_classes: number of classes (label values must be integers in ``[0, num_classes)``).
        allow_missing_keys: accept cases without a label.
        spatial_dims: the number of spatial dimensions every image must have (channel-first), or None.
        in_channels: the number of image channels the network takes, or None.
        refuse_constant: refuse an image (or a channel of it) whose voxels are all equal: a blank volume.
        merge_labels: the label's classes are merged into foreground afterwards (BraTS whole tumour): its values
            must be whole numbers >= 0, of any class number.

    Raises:
        ValueError: on an image of other dimensions or channels (a 4-D time series sent to a 3-D network, say),
            NaN/Inf in the image, a blank (constant) image, an image/label shape mismatch, or label values outside
            the classes.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        num_classes: int = 2,
        allow_missing_keys: bool = True,
        spatial_dims: int | None = 3,
        in_channels: int | None = None,
        refuse_constant: bool = True,
        merge_labels: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, label_key), got {self.keys}.")
        self.num_classes = int(num_classes)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.refuse_constant = refuse_constant
        self.merge_labels = merge_labels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        image_key, label_key = self.keys
        image = d[image_key]
        name = _source(image, str(image_key))
        arr = torch.as_tensor(image)
        if self.spatial_dims is not None and arr.dim() != self.spatial_dims + 1:
            raise ValueError(
                f"{name}: an image of shape {list(arr.shape)} (channel first) has {arr.dim() - 1} spatial dimensions; "
                f"this network takes {self.spatial_dims}-D images."
            )
        if self.in_channels is not None and arr.shape[0] != self.in_channels:
            raise ValueError(
                f"{name}: the image has {arr.shape[0]} channels (shape {list(arr.shape)}, channel first) and the network "
                f"takes {self.in_channels}; a 4-D file (a time series or stacked sequences) needs one volume per file."
            )
        if not torch.isfinite(arr).all():
            n_bad = int((~torch.isfinite(arr)).sum())
            raise ValueError(f"{name}: the image has {n_bad} NaN/Inf voxels.")
        if label_key in d:
            self._check_label(d[label_key], arr)
        elif not self.allow_missing_keys:
            raise ValueError(f"{name}: the case has no {label_key!r}.")
        if self.refuse_constant and arr.numel():
            flat = arr.reshape(arr.shape[0], -1)
            constant = (flat.amax(dim=1) == flat.amin(dim=1)).nonzero().flatten().tolist()
            if constant:
                c = constant[0]
                where = f"channel {c} of the image" if arr.shape[0] > 1 else "the image"
                raise ValueError(
                    f"{name}: {where} is blank (every voxel is {float(flat[c, 0]):g}): a failed export or conversion?"
                )
        return d

    def _check_label(self, label_data: torch.Tensor, arr: torch.Tensor) -> None:
        label_key = self.keys[1]
        label = torch.as_tensor(label_data)
        lname = _source(label_data, str(label_key))
        if tuple(label.shape[1:]) != tuple(arr.shape[1:]):
            raise ValueError(
                f"{lname}: label shape {list(label.shape[1:])} does not match image shape {list(arr.shape[1:])}."
            )
        values = torch.unique(label)
        top = float("inf") if self.merge_labels else self.num_classes
        bad = [v for v in values.tolist() if v != int(v) or not 0 <= v < top]
        if bad:
            shown = [int(v) if v == int(v) else round(float(v), 4) for v in bad[:5]]
            classes = "whole numbers 0 or more" if self.merge_labels else f"the classes 0..{self.num_classes - 1}"
            raise ValueError(f"{lname}: label values {shown} are outside {classes}.")
