# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Inputs for inference: one file, a DICOM series, or every image under a folder."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from monai_stlu.data.h5_reader import is_h5_source

__all__ = ["find_images", "case_id", "data_root"]


def case_id(path: str) -> str:
    """A case's name from its file, as the community h5 layouts name cases: the folder for LA
    (``<ID>/mri_norm2.h5``), the file name less ``_norm`` for Pancreas-CT (``Pancreas_h5/<ID>_norm.h5``), else the
    file name without its extensions (BraTS-2019 ``data/<ID>.h5``, NIfTI files)."""
    base = os.path.basename(path)
    stem = base.split(".")[0]
    if stem.startswith("mri_norm"):  # also a prediction written for it (<ID>/mri_norm2_seg.nii.gz)
        return os.path.basename(os.path.dirname(path))
    if is_h5_source(path):
        return stem[: -len("_norm")] if stem.endswith("_norm") else stem
    return stem


def data_root(input_path: str) -> str:
    """The folder outputs are laid out relative to (``SaveImage``'s ``data_root_dir``): the input folder, so that
    sub-folders are kept; none for a single file or a DICOM series folder (itself one image), whose output lies
    directly in the output folder."""
    input_path = os.path.expanduser(str(input_path))
    if os.path.isdir(input_path) and not glob.glob(os.path.join(input_path, "*.dcm")):
        return input_path
    return ""


def _group_by_modality(files: Sequence[str], modalities: Sequence[str], where: str) -> list[dict]:
    """Cases of files named ``<ID>_<modality>.nii[.gz]`` (the BraTS layout): one entry per ID with its files in the
    order of ``modalities``; other files are not images of a case (labels, other sequences) and are left out."""
    cases: dict[str, dict[str, str]] = {}
    for f in files:
        stem = os.path.basename(f).split(".")[0]
        for m in modalities:
            if stem.endswith(f"_{m}"):
                cases.setdefault(os.path.join(os.path.dirname(f), stem[: -len(m) - 1]), {})[m] = f
    if not cases and len(modalities) == 1:  # plain file names: each is a scan of the one sequence
        return [{"image": f, "id": case_id(f)} for f in files]
    if not cases:
        raise FileNotFoundError(f"{where}: no image named <ID>_<modality>.nii.gz for the modalities {list(modalities)}.")
    out = []
    for case, found in sorted(cases.items()):
        missing = [m for m in modalities if m not in found]
        if missing:
            raise FileNotFoundError(f"{case}: no {os.path.basename(case)}_{missing[0]}.nii.gz beside {sorted(found.values())[0]}.")
        out.append({"image": [found[m] for m in modalities], "id": os.path.basename(case)})
    return out


def _dicom_series(folder: str, recursive: bool) -> list[str]:
    """Folders holding ``*.dcm`` files (each read as one DICOM series)."""
    pattern = os.path.join(folder, "**" if recursive else "", "*.dcm")
    return sorted({os.path.dirname(p) for p in glob.glob(pattern, recursive=recursive)})


def find_images(
    input_path: str,
    patterns: Sequence[str] = ("*.h5", "*.hdf5", "*.nii.gz", "*.nii", "*.nrrd"),
    recursive: bool = True,
    modalities: Sequence[str] | None = None,
) -> list[dict]:
    """Datalist ``[{"image": path, "id": name}]`` for inference from a file or a folder.

    A folder is searched for ``patterns`` and for DICOM series (each folder of ``*.dcm`` files is one image, named
    after the folder). With ``modalities`` (a multi-sequence MR bundle, e.g. BraTS ``["flair", "t1ce"]``), raw files
    named ``<ID>_<modality>.nii.gz`` are grouped per case, ``"image"`` being the list of the case's files in that
    order (read as channels); h5 files are taken as they are (their datasets hold the sequences). With one
    modality, files not named so are taken as scans of it.

    Args:
        input_path: an image file (h5, NIfTI, NRRD), a DICOM series folder, or a folder searched for images.
        patterns: glob patterns of image files.
        recursive: search sub-folders too.
        modalities: MR sequences expected per case, or None for single files.

    Raises:
        FileNotFoundError: when ``input_path`` does not exist or holds no image, or a case lacks one of ``modalities``.
    """
    input_path = os.path.expanduser(str(input_path))
    if os.path.isfile(input_path):
        if modalities and len(modalities) > 1 and not is_h5_source(input_path):
            return _group_by_modality([input_path], modalities, input_path)
        return [{"image": input_path, "id": case_id(input_path)}]
    if not os.path.isdir(input_path):
        raise FileNotFoundError(f"{input_path}: no such file or folder to run inference on.")
    files = sorted(
        {f for p in patterns for f in glob.glob(os.path.join(input_path, "**" if recursive else "", p), recursive=recursive)}
    )
    h5 = [f for f in files if is_h5_source(f)]
    raw = [f for f in files if not is_h5_source(f)]
    if modalities:
        items = [{"image": f, "id": case_id(f)} for f in h5] + (_group_by_modality(raw, modalities, input_path) if raw else [])
    else:
        items = [{"image": f, "id": case_id(f)} for f in files]
    items += [{"image": d, "id": os.path.basename(d)} for d in _dicom_series(input_path, recursive)]
    if not items:
        raise FileNotFoundError(f"{input_path}: no image file matching {list(patterns)} and no DICOM series.")
    return items
