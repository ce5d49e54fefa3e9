"""Converters from raw releases to the bundles' h5 layouts, on synthetic raw files written here (NRRD with ITK, NIfTI
with nibabel); outputs checked against the published preprocessing written out in numpy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_stlu.data import convert_brats, convert_la, h5_split, json_split, la_crop_box, nifti_datalist


def write_nrrd(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(array.transpose(2, 1, 0))), str(path))  # ITK is (z, y, x)


def test_la_from_nrrd(tmp_path):
    rng = np.random.RandomState(0)
    raw = tmp_path / "raw"
    for i, case in enumerate(["CASEA", "CASEB"]):
        image = rng.uniform(0, 300, (120, 110, 40)).astype(np.float32)
        label = np.zeros(image.shape, np.uint8)
        label[40 + i:70, 30:60, 10:30] = 255
        write_nrrd(raw / case / "lgemri.nrrd", image)
        write_nrrd(raw / case / "laendo.nrrd", label)
    out = tmp_path / "LA"
    assert convert_la(str(raw), str(out), test_ids=["CASEB"]) == ["CASEA", "CASEB"]
    assert (out / "train.list").read_text().split() == ["CASEA"] and (out / "test.list").read_text().split() == ["CASEB"]
    image = itk.array_from_image(itk.imread(str(raw / "CASEA" / "lgemri.nrrd"))).transpose(2, 1, 0).astype(np.float64)
    label = (itk.array_from_image(itk.imread(str(raw / "CASEA" / "laendo.nrrd"))).transpose(2, 1, 0) == 255)
    with h5py.File(out / "2018LA_Seg_Training Set" / "CASEA" / "mri_norm2.h5") as f:
        img, lab = f["image"][...], f["label"][...]
    assert img.shape[2] == 40 and lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
    assert lab.sum() == label.sum()  # the crop keeps the whole label
    # x/y cropped to the label box widened to 112 x 112 and by 10-19 voxels a side (clipped to the volume)
    assert 110 <= img.shape[0] <= 120 and img.shape[1] == 110
    z = (image - image.mean()) / image.std()
    # find the crop offset from the label and compare the z-scored image there
    x0 = int(np.nonzero(label)[0].min() - np.nonzero(lab)[0].min())
    y0 = int(np.nonzero(label)[1].min() - np.nonzero(lab)[1].min())
    np.testing.assert_allclose(img, z[x0:x0 + img.shape[0], y0:y0 + img.shape[1]], rtol=1e-5, atol=1e-5)
    split = h5_split(str(out), num_labeled=1, num_val=0)  # the bundle reads it
    assert [c["id"] for c in split["labeled"]] == ["CASEA"] and [c["id"] for c in split["test"]] == ["CASEB"]
    with pytest.raises(ValueError, match="label is empty"):
        la_crop_box(np.zeros((4, 4, 4)))


def test_brats_from_nifti_matches_the_published_preprocessing(tmp_path):
    rng = np.random.RandomState(1)
    raw = tmp_path / "MICCAI_BraTS_2019_Data_Training" / "HGG" / "BraTS19_X_1"
    raw.mkdir(parents=True)
    flair = np.zeros((40, 44, 30), np.float32)
    flair[5:35, 6:40, 3:27] = rng.gamma(2.0, 100.0, (30, 34, 24))
    seg = np.zeros(flair.shape, np.uint8)
    seg[10:20, 10:20, 8:15], seg[12:15, 12:15, 9:12] = 2, 4
    nib.save(nib.Nifti1Image(flair, np.eye(4)), str(raw / "BraTS19_X_1_flair.nii.gz"))
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(raw / "BraTS19_X_1_seg.nii.gz"))
    out = tmp_path / "BraTS2019"
    assert convert_brats(str(tmp_path / "MICCAI_BraTS_2019_Data_Training"), str(out)) == ["BraTS19_X_1"]
    with h5py.File(out / "data" / "BraTS19_X_1.h5") as f:
        img, lab = f["image"][...], f["label"][...]
    # the published steps in numpy: (z, y, x) arrays, brain box (upper bound exclusive), 0.999 cumulative clip,
    # z-score over voxels > 0, label > 0
    vol, ref_lab = flair.transpose(2, 1, 0).astype(np.float64), seg.transpose(2, 1, 0)
    nz = np.nonzero(vol)
    box = tuple(slice(a.min(), a.max()) for a in nz)
    v = vol[box]
    counts, edges = np.histogram(v, bins=256)  # SSL4MIS: scikit-image's cumulative distribution (float image)
    v = np.minimum(v, ((edges[:-1] + edges[1:]) / 2)[np.cumsum(counts) / counts.sum() >= 0.999][0])
    ref = (v - v[v > 0].mean()) / v[v > 0].std()
    np.testing.assert_allclose(img, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(lab, (ref_lab[box] > 0).astype(np.uint8))
    assert (out / "train.txt").read_text().split() == ["BraTS19_X_1"]


def test_nifti_folder_to_datalist_and_cli(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for i in range(5):
        nib.save(nib.Nifti1Image(np.random.rand(16, 16, 16).astype(np.float32), np.eye(4)), str(images / f"c{i}.nii.gz"))
        if i < 3:
            nib.save(nib.Nifti1Image((np.random.rand(16, 16, 16) > 0.5).astype(np.uint8), np.eye(4)),
                     str(labels / f"c{i}.nii.gz"))
    out = tmp_path / "lists" / "datalist.json"
    proc = subprocess.run([sys.executable, "-m", "monai_stlu", "convert", "nifti", str(images), str(labels), str(out),
                           "--num_test", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    content = json.loads(out.read_text())
    assert [len(content[k]) for k in ("training", "test", "unlabeled")] == [2, 1, 2]
    split = json_split(str(out), num_labeled=1)  # the bundles' reader takes it, relative paths and all
    assert len(split["labeled"]) == 1 and len(split["unlabeled"]) == 3 and split["test"][0]["id"] == "c2"
    with pytest.raises(FileNotFoundError, match="no NIfTI image"):
        nifti_datalist(str(tmp_path / "empty"), None, str(tmp_path / "x.json"))
    help_text = subprocess.run([sys.executable, "-m", "monai_stlu", "convert", "la", "--help"], capture_output=True,
                               text=True, env={"PAGER": "cat", "PATH": "/usr/bin:/bin"})
    assert "lgemri.nrrd" in help_text.stdout + help_text.stderr


def write_dicom_series(folder, hu, spacing=(0.8, 0.8), thickness=2.0):
    """A CT series (one file per axial slice, stored value = HU + 1024) written with pydicom."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID = "CT", series, study, "P1"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[0]], thickness
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, k * thickness], [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber, ds.SamplesPerPixel, ds.PhotometricInterpretation = k + 1, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu[:, :, k].T + 1024).astype(np.uint16).tobytes()  # rows = y
        ds.save_as(str(folder / f"{k:03d}.dcm"), enforce_file_format=True)


def test_pancreas_from_dicom_series(tmp_path):
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    from monai_stlu.data import convert_pancreas

    hu = np.full((64, 64, 20), -500.0)  # background below the window
    hu[20:40, 24:44, 6:14] = 100.0  # "pancreas" inside the window
    hu[44:60, 4:20, 4:16] = 400.0  # "bone" above the window: clipped to 275 HU
    series = tmp_path / "Pancreas-CT" / "PANCREAS_0007" / "study" / "series"
    write_dicom_series(series, hu)
    loaded = LoadImage(reader=ITKReader(), image_only=True, ensure_channel_first=True)(str(series))
    np.testing.assert_allclose(np.asarray(loaded[0]), hu)  # the series reads back in HU, (x, y, z) order
    labels = tmp_path / "labels"
    labels.mkdir()
    nib.save(nib.Nifti1Image((hu == 100).astype(np.uint8), np.asarray(loaded.affine)), str(labels / "label0007.nii.gz"))
    out = tmp_path / "Pancreas"
    assert convert_pancreas(str(tmp_path / "Pancreas-CT"), str(labels), str(out)) == ["image0007"]
    with h5py.File(out / "Pancreas_h5" / "image0007_norm.h5") as f:
        img, lab = f["image"][...], f["label"][...]
    # 1 mm: 64 x 0.8 = 51.2 mm in x/y (the whole width: label box + 25 voxels reaches the border), 20 x 2 mm in z
    assert all(abs(a - b) <= 1 for a, b in zip(img.shape, (51, 51, 40))) and img.shape == lab.shape
    assert abs(int(lab.sum()) - 16 * 16 * 16) <= 0.2 * 16 ** 3  # 16 x 16 x 16 mm of label after resampling
    assert abs(img.mean()) < 1e-4 and abs(img.std() - 1) < 1e-3  # z-scored over the crop
    # the window maps background (-500 HU) to 0, organ (100 HU) to 225/400 and bone (400 HU, clipped) to 1; the
    # z-score is affine, so (bone - background) / (organ - background) must stay 400/225 (plateaus read away from
    # the edges, where the cubic B-spline rings)
    from scipy.ndimage import binary_erosion

    organ = np.median(img[binary_erosion(lab > 0, iterations=2)])
    background = np.median(img[:, :, :4])
    bone = np.median(img[38:46, 6:12, 14:20])
    np.testing.assert_allclose((bone - background) / (organ - background), 400 / 225, rtol=1e-3)
    assert (out / "train.list").read_text().split() == ["image0007"]


PYDICOM_CT = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"


def instance_ordered_hu(folder):
    """An independent read of a CT series as MC-Net's load_scan/get_pixels_hu does it (pydicom, slices sorted by
    InstanceNumber, HU from the rescale slope and intercept), as an (x, y, z) array."""
    slices = sorted((pydicom.dcmread(str(f)) for f in Path(folder).iterdir()), key=lambda ds: int(ds.InstanceNumber))
    hu = np.stack([ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                   for ds in slices])
    return hu.transpose(2, 1, 0)  # (slice, row, column) -> (x, y, z)


def test_pancreas_series_follow_the_instance_numbers_and_need_no_dcm_suffix(tmp_path):
    """pydicom's 5-slice CT series (files without a suffix) numbers its slices head to feet: ITK reads them the other
    way round; the converter and raw inference stack them by InstanceNumber, as MC-Net's preprocessing."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    from monai_stlu.data import RawGeometryd, convert_pancreas, find_dicom_series, instance_order_reversed

    series = tmp_path / "Pancreas-CT" / "PANCREAS_0003" / "study" / "series"
    shutil.copytree(PYDICOM_CT, series)
    assert find_dicom_series(str(tmp_path / "Pancreas-CT" / "PANCREAS_0003")) == [str(series)]
    assert instance_order_reversed(str(series))
    expected = instance_ordered_hu(series)
    loaded = LoadImage(reader=ITKReader(), image_only=True, ensure_channel_first=True)(str(series))
    np.testing.assert_array_equal(np.asarray(loaded[0]), expected[:, :, ::-1])  # ITK: by position
    # raw inference: the slices in InstanceNumber order, and back onto the input's grid for the prediction
    step = RawGeometryd("image", dicom_instance_order=True)
    moved = step({"image": loaded})["image"]
    np.testing.assert_array_equal(np.asarray(moved[0]), expected)
    np.testing.assert_allclose(np.asarray(moved.affine) @ [0, 0, 0, 1], np.asarray(loaded.affine) @ [0, 0, 4, 1])
    back = step.inverse({"image": moved})["image"]
    np.testing.assert_array_equal(np.asarray(back[0]), np.asarray(loaded[0]))
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(loaded.affine))
    # the converter: a label on the two slices numbered first (the head end) lands at the start of the h5 z axis
    label = np.zeros(loaded.shape[1:], np.uint8)
    label[4:12, 4:12, 3:] = 1  # ITK's last two slices = InstanceNumbers 7 and 6 (10 mm of z at 1 mm: 11 planes)
    (tmp_path / "labels").mkdir()
    nib.save(nib.Nifti1Image(label, np.asarray(loaded.affine)), str(tmp_path / "labels" / "label0003.nii.gz"))
    assert convert_pancreas(str(tmp_path / "Pancreas-CT"), str(tmp_path / "labels"), str(tmp_path / "out")) == ["image0003"]
    with h5py.File(tmp_path / "out" / "Pancreas_h5" / "image0003_norm.h5") as f:
        lab = f["label"][...]
    z = np.nonzero(lab.any(axis=(0, 1)))[0]
    assert lab.shape[2] == 11 and z.min() == 0 and z.max() < lab.shape[2] // 2, (lab.shape, z)


def test_brats_clip_is_ssl4mis_cdf_rule():
    """SSL4MIS clips at the first bin centre of scikit-image's cumulative distribution reaching 0.999: one bin per
    integer for integer images (then numpy's inverted_cdf percentile), 256 bins otherwise."""
    from monai_stlu.data import cdf_clip_value

    rng = np.random.RandomState(0)
    ints = rng.poisson(300, 50000).astype(np.int16)
    assert cdf_clip_value(ints) == np.percentile(ints, 99.9, method="inverted_cdf")
    assert cdf_clip_value(ints.astype(np.float32)) == cdf_clip_value(ints)  # integer values read as floats
    floats = rng.gamma(2.0, 100.0, 50000)
    counts, edges = np.histogram(floats, bins=256)
    cdf = np.cumsum(counts) / counts.sum()
    assert cdf_clip_value(floats) == pytest.approx(((edges[:-1] + edges[1:]) / 2)[cdf >= 0.999][0])
