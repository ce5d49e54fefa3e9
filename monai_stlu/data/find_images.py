# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Inputs for inference: one file, or every image file under a folder."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

__all__ = ["find_images", "case_id"]


def case_id(path: str) -> str:
    """A case's name from its file, as the community h5 layouts name cases: the folder for LA
    (``<ID>/mri_norm2.h5``), the file name less ``_norm`` for Pancreas-CT (``Pancreas_h5/<ID>_norm.h5``), else the
    file name without its extensions (BraTS-2019 ``data/<ID>.h5``, NIfTI files)."""
    base = os.path.basename(path)
    stem = base.split(".")[0]
    if base.endswith((".h5", ".hdf5")):
        if stem.startswith("mri_norm"):
            return os.path.basename(os.path.dirname(path))
        return stem[: -len("_norm")] if stem.endswith("_norm") else stem
    return stem


def find_images(
    input_path: str, patterns: Sequence[str] = ("*.h5", "*.hdf5", "*.nii.gz", "*.nii"), recursive: bool = True
) -> list[dict]:
    """Datalist ``[{"image": path, "id": name}]`` for inference from a file or a folder.

    Args:
        input_path: an image file (h5 or NIfTI), or a folder searched for ``patterns``.
        patterns: glob patterns of image files.
        recursive: search sub-folders too.

    Raises:
        FileNotFoundError: when ``input_path`` does not exist or holds no matching file.
    """
    input_path = os.path.expanduser(str(input_path))
    if os.path.isfile(input_path):
        files = [input_path]
    elif os.path.isdir(input_path):
        files = sorted(
            {f for p in patterns for f in glob.glob(os.path.join(input_path, "**" if recursive else "", p), recursive=recursive)}
        )
        if not files:
            raise FileNotFoundError(f"{input_path}: no image file matching {list(patterns)}.")
    else:
        raise FileNotFoundError(f"{input_path}: no such file or folder to run inference on.")
    return [{"image": f, "id": case_id(f)} for f in files]
