# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A NIfTI writer for ``SaveImage(d)`` that never leaves a half-written file behind."""

from __future__ import annotations

import os

from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """``NibabelWriter`` that writes to a hidden temporary file in the target folder and renames it into place, so an
    interrupted inference leaves either the complete segmentation or nothing.

    Example::

        SaveImaged(keys="pred", output_dir="out", writer=AtomicNibabelWriter)
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        final = os.fspath(filename)
        folder, base = os.path.split(os.path.abspath(final))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{base}")  # keeps the .nii.gz suffix nibabel goes by
        try:
            super().write(tmp, verbose=verbose, **obj_kwargs)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
