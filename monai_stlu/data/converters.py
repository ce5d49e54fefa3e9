# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Converters from the public raw releases to the bundles' h5 layouts, and from a NIfTI folder to a datalist JSON.

Each follows the published preprocessing of the layout it writes (stated per function), reads with MONAI's ITK
reader, writes every file atomically (``.partial`` then rename) and skips cases already converted.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from collections.abc import Sequence

import numpy as np

from monai_stlu.data.dicom_series import find_dicom_series, instance_order_reversed
from monai_stlu.data.h5_files import write_h5_case

__all__ = ["cdf_clip_value", "convert_la", "convert_brats", "convert_pancreas", "nifti_datalist", "brats_normalise", "la_crop_box", "pancreas_normalise"]


def _load(path: str):
    """A channel-first float32 MetaTensor (array in (x, y, z) order and affine) of an image file or a DICOM series
    folder, read with MONAI's ITK reader, with a clear error for a bad file."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found.")
    try:
        return LoadImage(reader=ITKReader(), image_only=True, ensure_channel_first=True, dtype=np.float32)(path)
    except Exception as e:  # ITK's errors do not name the file
        raise ValueError(f"{path}: cannot be read as an image or DICOM series ({e}).") from e


def _read(path: str) -> np.ndarray:
    """The volume of :py:func:`_load` as a numpy array (x, y, z)."""
    return np.asarray(_load(path)[0])


def _write_list(path: str, ids: Sequence[str]) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    os.replace(tmp, path)


def _write_splits(out_dir: str, split_dir: str | None, names: Sequence[str], cases: Sequence[str]) -> None:
    """Copy the list files ``names`` from ``split_dir`` (a published split) into ``out_dir``; without one, list every
    converted case in the first (training) list."""
    if not split_dir:
        _write_list(os.path.join(out_dir, names[0]), cases)
        return
    for name in names:
        with open(os.path.join(split_dir, name)) as f:
            _write_list(os.path.join(out_dir, name), f.read().split())


def la_crop_box(label: np.ndarray, output_size: Sequence[int] = (112, 112, 80), rng: np.random.RandomState | None = None):
    """UA-MT's LA crop (``la_heart_processing.py``): the label's x/y box, widened to at least ``output_size`` and by a
    random 10-19 voxel margin per side; z is kept whole. Returns ``(slice_x, slice_y)``.

    It needs the label: a deployment cannot crop this way (inference crops nothing and uses sliding windows).
    """
    rng = rng or np.random.RandomState(0)
    return _label_box_xy(label, output_size, lambda: int(rng.randint(10, 20)))


def _label_box_xy(label: np.ndarray, output_size: Sequence[int], margin) -> tuple[slice, slice]:
    """The label's x/y box widened to at least ``output_size`` and by ``margin()`` voxels a side (clipped)."""
    nz = np.nonzero(label)
    if not nz[0].size:
        raise ValueError("the label is empty: the published crop is defined by the label's bounding box.")
    slices = []
    for axis in (0, 1):
        lo, hi = int(nz[axis].min()), int(nz[axis].max())
        pad = max(int(output_size[axis]) - (hi - lo), 0) // 2
        lo = max(lo - margin() - pad, 0)
        hi = min(hi + margin() + pad, label.shape[axis])
        slices.append(slice(lo, hi))
    return slices[0], slices[1]


def convert_la(raw_dir: str, out_dir: str, seed: int = 0, test_ids: Sequence[str] | None = None) -> list[str]:
    """LA 2018 (``<raw_dir>/<ID>/lgemri.nrrd`` + ``laendo.nrrd``) to UA-MT's h5 layout
    (``<out_dir>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5``, ``train.list``, ``test.list``).

    UA-MT's preprocessing: label = (laendo == 255); image z-scored over the whole volume; x/y cropped to the label's
    box with a random margin (:py:func:`la_crop_box`, drawn from ``seed``); z kept.

    Args:
        raw_dir: folder with one sub-folder per case.
        out_dir: dataset folder to write.
        seed: seed of the crop margins (with the case ID).
        test_ids: the IDs to list in ``test.list`` (default none; the others go to ``train.list``).

    Returns:
        the converted case IDs.
    """
    cases = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(raw_dir, "*", "lgemri.nrrd")))
    if not cases:
        raise FileNotFoundError(f"{raw_dir}: no <ID>/lgemri.nrrd found (the LA 2018 training set layout).")
    for case in cases:
        out = os.path.join(out_dir, "2018LA_Seg_Training Set", case, "mri_norm2.h5")
        if os.path.isfile(out):
            continue
        image = _read(os.path.join(raw_dir, case, "lgemri.nrrd")).astype(np.float64)
        label = (_read(os.path.join(raw_dir, case, "laendo.nrrd")) == 255).astype(np.uint8)
        if image.shape != label.shape:
            raise ValueError(f"{raw_dir}/{case}: lgemri {image.shape} and laendo {label.shape} differ in shape.")
        # margins drawn per case from (seed, ID): a case converts the same whether or not others were done before
        box = la_crop_box(label, rng=np.random.RandomState((zlib.crc32(case.encode()) + seed) % 2**32))
        image = (image - image.mean()) / image.std()
        write_h5_case(out, image[box], label[box])
    test = set(test_ids or ())
    _write_list(os.path.join(out_dir, "train.list"), [c for c in cases if c not in test])
    _write_list(os.path.join(out_dir, "test.list"), [c for c in cases if c in test])
    return cases


def cdf_clip_value(values: np.ndarray, fraction: float = 0.999) -> float:
    """The upper clip of SSL4MIS's BraTS preprocessing (``MedicalImageDeal.valid_img``): the first bin centre of
    scikit-image's ``cumulative_distribution`` whose cumulative fraction reaches ``fraction``. Its histogram has one
    bin per integer value for integer images (the BraTS files: then this is ``np.percentile(..., method=
    "inverted_cdf")``, the smallest value with at least ``fraction`` of the voxels at or below it) and 256 bins
    otherwise; integer-valued arrays read as floats are binned as the integers they hold."""
    from skimage import exposure

    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
        values = values.astype(np.int64)
    cdf, centres = exposure.cumulative_distribution(values)
    return float(centres[np.asarray(cdf) >= fraction][0])


def brats_normalise(image: np.ndarray, label: np.ndarray, percentile: float = 99.9) -> tuple[np.ndarray, np.ndarray]:
    """SSL4MIS's BraTS-2019 preprocessing of one volume: crop to the brain's box (non-zero voxels, upper bound
    exclusive as published), clip at the ``percentile`` of the cropped intensities as SSL4MIS computes it
    (:py:func:`cdf_clip_value`), z-score with the mean and std of the voxels > 0, label > 0 = whole tumour.

    ``image`` may also be channel-first (C, z, y, x), several MR sequences of one case: the box is that of the voxels
    non-zero in any sequence, and each sequence is clipped and z-scored on its own."""
    channels = image if image.ndim == label.ndim + 1 else image[None]
    nz = np.nonzero(np.any(channels != 0, axis=0))
    if not nz[0].size:
        raise ValueError("the image is all zero: no brain to crop to.")
    box = tuple(slice(int(a.min()), int(a.max())) for a in nz)
    out = []
    for channel in channels:
        x = channel[box].astype(np.float64)
        x = np.clip(x, x.min(), cdf_clip_value(x, percentile / 100.0))
        brain = x[x > 0]
        out.append(((x - brain.mean()) / brain.std()).astype(np.float32))
    return (np.stack(out) if image.ndim == label.ndim + 1 else out[0]), (label[box] > 0).astype(np.uint8)


def convert_brats(
    raw_dir: str, out_dir: str, modalities: Sequence[str] | str = ("flair",), split_dir: str | None = None
) -> list[str]:
    """BraTS-2019 (``<raw_dir>/**/<ID>/<ID>_<modality>.nii.gz`` + ``<ID>_seg.nii.gz``, HGG and LGG folders alike)
    to SSL4MIS's h5 layout (``<out_dir>/data/<ID>.h5``; arrays in (z, y, x) order as SimpleITK gives them).

    Preprocessing (:py:func:`brats_normalise`): brain box, clip at the 99.9th percentile, z-score over the brain,
    label > 0. ``image`` holds the first of ``modalities`` (FLAIR by default: SSL4MIS's files exactly); with any
    other choice every sequence is also written as a dataset of its own name (``flair``, ``t1``, ``t1ce``, ``t2``),
    which the bundle stacks as input channels (its ``modalities`` key). The split lists (``train.txt``,
    ``val.txt``, ``test.txt``) are copied from ``split_dir`` when given (the bundle ships SSL4MIS's), else every
    converted case is listed in ``train.txt``.

    Args:
        raw_dir: the BraTS-2019 training release (``MICCAI_BraTS_2019_Data_Training``).
        out_dir: dataset folder to write.
        modalities: MR sequences, one name or several (``"flair,t1ce"`` on the command line).
        split_dir: folder with the published split lists.

    Returns:
        the converted case IDs.
    """
    modalities = [m.strip() for m in modalities.split(",")] if isinstance(modalities, str) else [str(m) for m in modalities]
    first = modalities[0]
    images = sorted(glob.glob(os.path.join(raw_dir, "**", f"*_{first}.nii*"), recursive=True))
    if not images:
        raise FileNotFoundError(f"{raw_dir}: no <ID>/<ID>_{first}.nii.gz found (the BraTS-2019 training layout).")
    cases = []
    for path in images:
        case = os.path.basename(path).split(f"_{first}.nii")[0]
        sources = {}
        for name in modalities + ["seg"]:
            found = glob.glob(os.path.join(os.path.dirname(path), f"{case}_{name}.nii*"))
            if not found:
                raise FileNotFoundError(f"{path}: no {case}_{name}.nii.gz beside it.")
            sources[name] = found[0]
        cases.append(case)
        out = os.path.join(out_dir, "data", f"{case}.h5")
        if os.path.isfile(out):
            continue
        volumes = {name: _read(source).transpose(2, 1, 0) for name, source in sources.items()}
        for name in modalities:
            if volumes[name].shape != volumes["seg"].shape:
                raise ValueError(f"{sources[name]}: shape {volumes[name].shape} differs from {sources['seg']} {volumes['seg'].shape}.")
        image, label = brats_normalise(np.stack([volumes[m] for m in modalities]), volumes["seg"])
        extra = {} if modalities == ["flair"] else dict(zip(modalities, image))
        write_h5_case(out, image[0], label, extra)
    _write_splits(out_dir, split_dir, ("train.txt", "val.txt", "test.txt"), cases)
    return cases


def pancreas_normalise(image: np.ndarray, label: np.ndarray, output_size: Sequence[int] = (96, 96, 96)):
    """MC-Net's Pancreas-CT steps after resampling to 1 mm (``data/Pancreas/Pre-processing``): HU window
    [-125, 275] (level 75, width 400) scaled to [0, 1]; x/y cropped to the label's box, widened to at least
    ``output_size`` and by 25 voxels a side; z-scored over the crop. Arrays in (x, y, z) order."""
    image = (np.clip(image.astype(np.float64), -125.0, 275.0) + 125.0) / 400.0
    box = _label_box_xy(label, output_size, lambda: 25)
    image, label = image[box], label[box]
    return ((image - image.mean()) / image.std()).astype(np.float32), (label > 0).astype(np.uint8)


def convert_pancreas(image_dir: str, label_dir: str, out_dir: str, split_dir: str | None = None) -> list[str]:
    """NIH Pancreas-CT (``<image_dir>/PANCREAS_<NNNN>/``: the case's DICOM series, in any sub-folder, or
    ``PANCREAS_<NNNN>.nii.gz``; ``<label_dir>/label<NNNN>.nii.gz``) to MC-Net's h5 layout
    (``<out_dir>/Pancreas_h5/image<NNNN>_norm.h5``).

    Steps: read with ITK (HU from the DICOM rescale slope and intercept; the series folder found whatever its files
    are called), slices in InstanceNumber order as MC-Net's ``load_scan`` stacks them (ITK orders them by position,
    which reverses the usual head-to-feet numbering and would z-mirror the arrays against the community h5 files);
    the label is resampled onto the image grid
    (nearest) when their geometry differs; both resampled to 1 mm isotropic (cubic B-spline image, nearest label;
    axes kept in the image's own order); then :py:func:`pancreas_normalise`. The split lists (``train.list``,
    ``test.list``) are copied from ``split_dir`` when given (the bundle ships MC-Net's), else every case goes to
    ``train.list``.

    Returns:
        the converted case IDs (``image<NNNN>``).
    """
    import re

    from monai.transforms import Flip, ResampleToMatch, Spacing

    entries = sorted(p for p in glob.glob(os.path.join(image_dir, "PANCREAS_*")) if re.search(r"PANCREAS_(\d+)", p))
    if not entries:
        raise FileNotFoundError(f"{image_dir}: no PANCREAS_<NNNN> folder or NIfTI file (the NIH Pancreas-CT layout).")
    cases = []
    for entry in entries:
        number = re.search(r"PANCREAS_(\d+)", os.path.basename(entry)).group(1)
        case = f"image{int(number):04d}"
        cases.append(case)
        out = os.path.join(out_dir, "Pancreas_h5", f"{case}_norm.h5")
        if os.path.isfile(out):
            continue
        source = entry
        if os.path.isdir(entry):  # the series lies some folders down (study / series), files named anyhow
            folders = find_dicom_series(entry)
            if len(folders) != 1:
                raise ValueError(f"{entry}: expected one DICOM series folder, found {len(folders)}: {folders[:3]}.")
            source = folders[0]
        label_path = os.path.join(label_dir, f"label{int(number):04d}.nii.gz")
        image, label = _load(source), _load(label_path)
        if os.path.isdir(source) and instance_order_reversed(source):  # MC-Net stacks slices by InstanceNumber
            image = Flip(spatial_axis=2)(image)  # the affine follows: every voxel keeps its place in the world
        if label.shape != image.shape or not np.allclose(np.asarray(label.affine), np.asarray(image.affine), atol=1e-3):
            label = ResampleToMatch(mode="nearest")(label, image)
        image = Spacing(pixdim=(1.0, 1.0, 1.0), mode=3, padding_mode="border")(image)
        label = Spacing(pixdim=(1.0, 1.0, 1.0), mode="nearest")(label)
        img, lab = pancreas_normalise(np.asarray(image[0]), np.asarray(label[0]) > 0.5)
        write_h5_case(out, img, lab)
    _write_splits(out_dir, split_dir, ("train.list", "test.list"), cases)
    return cases


def nifti_datalist(
    image_dir: str,
    label_dir: str | None,
    out_file: str,
    num_test: int = 0,
    patterns: Sequence[str] = ("*.nii.gz", "*.nii"),
) -> dict:
    """Your own data: a folder of NIfTI images (and a folder of labels named like their images, for some of them)
    to an MSD-style datalist JSON that the bundles take with ``--datalist_file``: images with a label go to
    ``training`` (the last ``num_test`` of them to ``test``), the others to ``unlabeled``. Paths are written
    relative to the JSON's folder. Intensity normalisation happens in the bundle (z-score for MR by default).

    Returns:
        the datalist.

    Raises:
        FileNotFoundError: no NIfTI image in ``image_dir``.
        ValueError: a 4-D image (the bundles take one 3-D volume per file), or too few labeled images.
    """
    images = sorted({p for pat in patterns for p in glob.glob(os.path.join(image_dir, pat))})
    if not images:
        raise FileNotFoundError(f"{image_dir}: no NIfTI image ({', '.join(patterns)}).")
    import nibabel as nib

    for path in images:
        shape = tuple(nib.load(path).header.get_data_shape())
        if len(shape) > 3 and any(s > 1 for s in shape[3:]):
            raise ValueError(
                f"{path}: a 4-D image (shape {list(shape)}); the bundles take one 3-D volume per file: write each "
                "volume (time point, sequence) to a file of its own."
            )
    base = os.path.dirname(os.path.abspath(out_file))
    labeled, unlabeled = [], []
    for path in images:
        label = os.path.join(label_dir, os.path.basename(path)) if label_dir else None
        entry = {"image": os.path.relpath(os.path.abspath(path), base)}
        if label and os.path.isfile(label):
            entry["label"] = os.path.relpath(os.path.abspath(label), base)
            labeled.append(entry)
        else:
            unlabeled.append(entry)
    if num_test >= len(labeled) and num_test:
        raise ValueError(f"{image_dir}: {len(labeled)} labeled images cannot give {num_test} test cases and training.")
    cut = len(labeled) - num_test
    datalist = {"training": labeled[:cut], "test": labeled[cut:], "unlabeled": unlabeled}
    os.makedirs(base, exist_ok=True)
    tmp = out_file + ".partial"
    with open(tmp, "w") as f:
        json.dump(datalist, f, indent=2)
    os.replace(tmp, out_file)
    return datalist
