# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Reading and writing h5 cases of the community layout with errors that name the file; without MONAI, so that
``monai_stlu synth`` starts in a fraction of a second."""

from __future__ import annotations

import os
from collections.abc import Sequence

import h5py
import numpy as np

__all__ = ["open_h5", "read_h5_dataset", "write_h5_case"]


def open_h5(path: str, datasets: Sequence[str] = ()):
    """Open an h5 file for reading, with errors that name the file and the problem: a missing file
    (``FileNotFoundError``), a file that is not HDF5, or one without all of ``datasets`` (``ValueError``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}).") from e
    missing = [k for k in datasets if k not in f]
    if missing:
        keys = sorted(f.keys())
        f.close()
        raise ValueError(f"{path}: has no dataset {missing[0]!r} (it has {keys}).")
    return f


def read_h5_dataset(path: str, dataset: str) -> np.ndarray:
    """Read one dataset of an h5 file with errors that name the file and the problem."""
    with open_h5(path, [dataset]) as f:
        try:
            return np.asarray(f[dataset][()])
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path}: dataset {dataset!r} cannot be decoded ({e}).") from e


def write_h5_case(path: str, image: np.ndarray, label: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write one case in the community h5 layout (``image`` float32, ``label`` uint8, gzip; ``extra`` float32
    datasets beside them, e.g. more MR sequences), atomically: a ``.partial`` file renamed into place, so an
    interrupted write leaves no half-written case."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".partial"
    with h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=np.asarray(image, dtype=np.float32), compression="gzip")
        f.create_dataset("label", data=np.asarray(label, dtype=np.uint8), compression="gzip")
        for name, array in (extra or {}).items():
            f.create_dataset(name, data=np.asarray(array, dtype=np.float32), compression="gzip")
    os.replace(tmp, path)
