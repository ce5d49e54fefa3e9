# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""DICOM series as the published preprocessing reads them: found whatever their file names, slices in InstanceNumber
order (MC-Net's Pancreas-CT ``load_scan`` sorts by InstanceNumber; ITK sorts by position along the slice normal,
which reverses the usual head-to-feet numbering)."""

from __future__ import annotations

import os

from monai.utils import optional_import

itk, has_itk = optional_import("itk")

__all__ = ["find_dicom_series", "dicom_series_files", "instance_order_reversed"]


def dicom_series_files(folder: str) -> list[str]:
    """The files of the first DICOM series in ``folder`` (not recursive), in ITK's order (by position along the
    slice normal); empty when the folder holds no DICOM series."""
    names = itk.GDCMSeriesFileNames.New()
    names.SetDirectory(str(folder))
    uids = names.GetSeriesUIDs()
    return [str(f) for f in names.GetFileNames(uids[0])] if uids else []


def find_dicom_series(root: str) -> list[str]:
    """The folders under ``root`` (itself included, recursive) that hold a DICOM series, whatever the files are
    called (the NIH release names them ``1-001.dcm``; other exports use no extension at all)."""
    found = []
    for folder, _, files in sorted(os.walk(root)):
        if files and dicom_series_files(folder):
            found.append(folder)
    return found


def _instance_number(path: str) -> int | None:
    io = itk.GDCMImageIO.New()
    io.SetFileName(path)
    io.ReadImageInformation()
    ok, value = io.GetValueFromTag("0020|0013", "")
    try:
        return int(str(value).strip()) if ok else None
    except ValueError:
        return None


def instance_order_reversed(folder: str) -> bool:
    """Whether the InstanceNumber order of the series in ``folder`` runs against ITK's slice order (True for the
    usual head-to-feet numbering), so that an ITK-read volume must be flipped along its slice axis to follow the
    InstanceNumber order of MC-Net's preprocessing. False when the numbers are missing or the series has one slice."""
    files = dicom_series_files(folder)
    if len(files) < 2:
        return False
    first, last = _instance_number(files[0]), _instance_number(files[-1])
    return first is not None and last is not None and first > last
