"""Raw scans at inference are normalised as the converters normalised the training data; h5 inputs pass unchanged."""

from __future__ import annotations

import shutil

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle_utils import config_list, run_bundle
from monai_stlu.data import RawIntensityd, write_synthetic_la


def test_modes_against_numpy():
    rng = np.random.RandomState(0)
    raw = rng.gamma(2.0, 300.0, (20, 20, 12)) - 400.0
    raw[:3] = 0.0
    x = MetaTensor(torch.as_tensor(raw[None], dtype=torch.float32), meta={"filename_or_obj": "/data/scan.nii.gz"})
    out = {m: RawIntensityd("image", m)({"image": x})["image"].numpy()[0] for m in ("zscore", "brain_zscore", "ct_window")}
    v = raw.astype(np.float64)
    np.testing.assert_allclose(out["zscore"], (v - v.mean()) / v.std(), atol=1e-4)
    w = (np.clip(v, -125, 275) + 125) / 400
    np.testing.assert_allclose(out["ct_window"], (w - w.mean()) / w.std(), atol=1e-4)
    counts, edges = np.histogram(raw.astype(np.float32), bins=256)  # SSL4MIS's clip: scikit-image's cumulative
    c = np.minimum(v, ((edges[:-1] + edges[1:]) / 2)[np.cumsum(counts) / counts.sum() >= 0.999][0])  # distribution
    np.testing.assert_allclose(out["brain_zscore"], (c - c[c > 0].mean()) / c[c > 0].std(), atol=1e-4)
    h5 = MetaTensor(torch.as_tensor(raw[None], dtype=torch.float32), meta={"filename_or_obj": "/d/case/mri_norm2.h5"})
    assert torch.equal(RawIntensityd("image")({"image": h5})["image"], h5)  # preprocessed data pass unchanged
    with pytest.raises(ValueError, match="not one of"):
        RawIntensityd("image", "minmax")


def test_raw_nifti_gets_the_prediction_of_its_preprocessed_h5(tmp_path):
    """A raw scan (the z-scored h5 image x 150 + 600, as an MR scanner's arbitrary units) written as NIfTI and as
    NRRD: the LA bundle's inference predicts the same labels for each as for the h5 file."""
    data = write_synthetic_la(str(tmp_path / "data"), num_train=0, num_test=1, shape=(64, 64, 48))
    h5_path = next((tmp_path / "data").rglob("*.h5"))
    with h5py.File(h5_path) as f:
        image = f["image"][...]
    # the three forms of the scan side by side in one input folder, predicted in one run: the h5 file in its layout
    # folder, the NIfTI file, and the NRRD file in its own folder as the LA 2018 release has it
    source = tmp_path / "inputs"
    shutil.copytree(h5_path.parent, source / "h5case")
    affine = np.diag([0.625, 0.625, 0.625, 1.0])
    nib.save(nib.Nifti1Image((image * 150.0 + 600.0).astype(np.float32), affine), str(source / "scan.nii.gz"))
    import itk  # the LA 2018 release's format: NRRD (lgemri.nrrd), read through ITK

    nrrd = itk.image_from_array(np.ascontiguousarray((image * 150.0 + 600.0).astype(np.float32).transpose(2, 1, 0)))
    nrrd.SetSpacing([0.625] * 3)
    (source / "nrrdcase").mkdir()
    itk.imwrite(nrrd, str(source / "nrrdcase" / "lgemri.nrrd"))
    common = ["--bundle_root", str(tmp_path), "--load_pretrain", "false", "--n_filters", "4", "--progress", "false",
              "--patch_size", "[32, 32, 32]", "--eval_stride", "[16, 16, 16]", "--amp", "false"]
    run_bundle("run", "--config_file", config_list("stlu_la", "inference.json"), *common, "--input_dir", str(source),
               "--output_dir", str(tmp_path / "pred"))
    outputs = ["h5case/mri_norm2_seg.nii.gz", "scan_seg.nii.gz", "nrrdcase/lgemri_seg.nii.gz"]  # the inputs' folders
    written = (tmp_path / "pred").rglob("*.nii.gz")
    assert sorted(str(p.relative_to(tmp_path / "pred")) for p in written) == sorted(outputs)
    preds = [np.asanyarray(nib.load(str(tmp_path / "pred" / name)).dataobj) for name in outputs]
    assert preds[0].shape == preds[1].shape == preds[2].shape == image.shape
    assert 0 < preds[0].sum() < preds[0].size  # a random network still marks some voxels, not all
    assert (preds[0] != preds[1]).mean() < 1e-3 and (preds[0] != preds[2]).mean() < 1e-3
