# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Synthetic volumes in the community h5 layouts, for demos and tests on machines without the real data."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from monai_stlu.data.datalist import LA_CASE_PATH
from monai_stlu.data.h5_files import write_h5_case

__all__ = ["synthetic_case", "write_synthetic_la", "SYNTHETIC_LAYOUTS"]

# write_synthetic_la arguments that give each bundle's h5 layout and list files (IDs in the published lists' style)
SYNTHETIC_LAYOUTS: dict[str, dict] = {
    "stlu_la": {},
    "stlu_pancreas": {"case_path": "Pancreas_h5/{id}_norm.h5", "id_format": "image{:04d}",
                      "list_names": ("train.list", "test.list")},
    "stlu_brats": {"case_path": "data/{id}.h5", "id_format": "BraTS19_SYN_{:03d}_1",
                   "list_names": ("train.txt", "test.txt", "val.txt"), "num_val": 1},
}


def synthetic_case(
    shape: Sequence[int] = (96, 96, 64), seed: int = 0, noise: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic "atrium": a noisy, z-scored image of an ellipsoid blob and its binary label.

    Args:
        shape: spatial shape (X, Y, Z).
        seed: random seed (each seed gives a different blob position, size and noise).
        noise: standard deviation of the Gaussian noise relative to the blob contrast.

    Returns:
        ``(image float32, label uint8)``, both of ``shape``.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    center = np.array([rng.uniform(0.35, 0.65) * s for s in shape], dtype=np.float32)
    radii = np.array([rng.uniform(0.15, 0.25) * s for s in shape], dtype=np.float32)
    dist = (((grid - center[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0)
    label = (dist < 1.0).astype(np.uint8)
    smooth = np.exp(-np.clip(dist - 1.0, 0, None) * 2.0) * (dist >= 1.0) + (dist < 1.0)
    image = smooth + rng.normal(0.0, noise, shape)
    image = ((image - image.mean()) / (image.std() + 1e-8)).astype(np.float32)
    return image, label


def write_synthetic_la(
    out_dir: str,
    num_train: int = 12,
    num_test: int = 4,
    shape: Sequence[int] = (96, 96, 64),
    seed: int = 0,
    overwrite: bool = False,
    case_path: str = LA_CASE_PATH,
    id_format: str = "SYNTH{:04d}",
    list_names: Sequence[str] = ("train.list", "test.list"),
    num_val: int = 0,
) -> str:
    """Write a small data set in a community h5 layout (default LA: ``2018LA_Seg_Training Set/<ID>/mri_norm2.h5``
    with ``image``/``label`` datasets, plus ``train.list`` and ``test.list``).

    Args:
        out_dir: the dataset directory to create.
        num_train: cases listed in the training list.
        num_test: cases listed in the test list.
        shape: spatial shape of every case.
        seed: base random seed.
        overwrite: replace existing files; otherwise existing cases are kept.
        case_path: where a case lies under ``out_dir``, ``{id}`` standing for the ID (Pancreas-CT:
            ``"Pancreas_h5/{id}_norm.h5"``, BraTS-2019: ``"data/{id}.h5"``).
        id_format: the case IDs, formatted with the case number.
        list_names: the training and test list files, and a validation list file as a third name (BraTS-2019:
            ``("train.txt", "test.txt", "val.txt")``).
        num_val: cases listed in the validation list (with a third list name).

    Returns:
        ``out_dir``.
    """
    ids = [id_format.format(i) for i in range(num_train + num_test + num_val)]
    for i, case_id in enumerate(ids):
        path = os.path.join(out_dir, case_path.format(id=case_id))
        if os.path.exists(path) and not overwrite:
            continue
        write_h5_case(path, *synthetic_case(shape, seed=seed + i))
    parts = [ids[:num_train], ids[num_train : num_train + num_test], ids[num_train + num_test :]]
    for name, part in zip(list_names, parts):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write("\n".join(part) + "\n")
    return out_dir
