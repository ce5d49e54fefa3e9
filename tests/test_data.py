from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_stlu.data import H5Reader, ValidateSegmentationd, find_images, json_split, h5_split, write_synthetic_la


@pytest.fixture()
def synth(tmp_path):
    return write_synthetic_la(str(tmp_path / "la"), num_train=6, num_test=2, shape=(32, 32, 16))


def case_path(root, case_id):
    return os.path.join(root, "2018LA_Seg_Training Set", case_id, "mri_norm2.h5")


def load(case, num_classes=2):
    t = Compose(
        [
            LoadImaged("image", reader=H5Reader("image", spacing=[0.625] * 3)),
            LoadImaged("label", reader=H5Reader("label"), allow_missing_keys=True),
            EnsureChannelFirstd(["image", "label"], allow_missing_keys=True),
            ValidateSegmentationd(num_classes=num_classes),
        ]
    )
    return t(case)


def root_cause(excinfo) -> BaseException:
    """MONAI's Compose wraps a transform's error in RuntimeError("applying transform ..."): the user sees both."""
    e = excinfo.value
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def raises_from_load(case, pattern, num_classes=2):
    import re

    with pytest.raises(Exception) as excinfo:
        load(case, num_classes)
    cause = root_cause(excinfo)
    assert isinstance(cause, ValueError) and re.search(pattern, str(cause)), str(cause)


def rewrite(path, **datasets):
    os.remove(path)
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)


def test_split_and_reader(synth):
    split = h5_split(synth, num_labeled=2, num_val=1)
    assert [len(split[k]) for k in ("labeled", "unlabeled", "val", "test")] == [2, 3, 1, 2]
    assert all("label" not in c for c in split["unlabeled"])
    d = load(split["labeled"][0])
    with h5py.File(split["labeled"][0]["image"]) as f:
        np.testing.assert_array_equal(d["image"][0].numpy(), f["image"][()])
        np.testing.assert_array_equal(d["label"][0].numpy(), f["label"][()])
    assert d["image"].shape == (1, 32, 32, 16)
    np.testing.assert_allclose(d["image"].pixdim, [0.625] * 3)
    u = load(split["unlabeled"][0])
    assert "label" not in u and u["image"].shape == (1, 32, 32, 16)


def test_no_data_message_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--dataset_dir") as e:
        h5_split(str(tmp_path / "nowhere"))
    assert "UA-MT" in str(e.value) and "python -m monai_stlu synth" in str(e.value)


def test_missing_listed_case(synth):
    with open(os.path.join(synth, "train.list"), "a") as f:
        f.write("NOT_THERE\n")
    with pytest.raises(FileNotFoundError, match="NOT_THERE listed in .*train.list is missing"):
        h5_split(synth, num_labeled=2, num_val=1)


def test_too_few_cases(synth):
    with pytest.raises(ValueError, match="cannot give 5 labeled \\+ 2 validation"):
        h5_split(synth, num_labeled=5, num_val=2)


def test_unreadable_h5(synth):
    path = case_path(synth, "SYNTH0001")
    with open(path, "wb") as f:
        f.write(b"this is not hdf5")
    with pytest.raises(ValueError, match="SYNTH0001.*not a readable HDF5"):
        h5_split(synth, num_labeled=2, num_val=1)
    with pytest.raises(ValueError, match="not a readable HDF5"):
        H5Reader("image").read(path)


def test_missing_label_dataset(synth):
    path = case_path(synth, "SYNTH0002")
    rewrite(path, image=np.zeros((32, 32, 16), np.float32))
    with pytest.raises(ValueError, match="SYNTH0002.*no dataset 'label'"):
        h5_split(synth, num_labeled=2, num_val=1)
    with pytest.raises(ValueError, match="no dataset 'label'"):
        H5Reader("label").read(path)


def test_shape_mismatch(synth):
    path = case_path(synth, "SYNTH0000")
    rewrite(path, image=np.zeros((32, 32, 16), np.float32), label=np.zeros((32, 30, 16), np.uint8))
    with pytest.raises(ValueError, match="SYNTH0000.*shape mismatch"):
        h5_split(synth, num_labeled=2, num_val=1)
    raises_from_load({"image": path, "label": path}, "SYNTH0000.*label shape .* does not match image shape")


def test_label_values_outside_classes(synth):
    path = case_path(synth, "SYNTH0000")
    label = np.zeros((32, 32, 16), np.uint8)
    label[3, 3, 3] = 2
    rewrite(path, image=np.random.rand(32, 32, 16).astype(np.float32), label=label)  # (a blank image is refused)
    raises_from_load({"image": path, "label": path}, r"SYNTH0000.*label values \[2\] are outside the classes 0..1")
    assert load({"image": path, "label": path}, num_classes=3)["label"].max() == 2


def test_nan_image(synth):
    path = case_path(synth, "SYNTH0000")
    image = np.zeros((32, 32, 16), np.float32)
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = np.inf
    rewrite(path, image=image, label=np.zeros((32, 32, 16), np.uint8))
    raises_from_load({"image": path, "label": path}, "SYNTH0000.*4 NaN/Inf voxels")


def test_missing_file_reader():
    with pytest.raises(FileNotFoundError, match="nope.h5: no such file"):
        H5Reader().read("/nonexistent/nope.h5")


def test_json_split_nifti(tmp_path):
    import nibabel as nib

    entries = []
    for i in range(5):
        img = nib.Nifti1Image(np.random.rand(16, 16, 8).astype(np.float32), np.diag([1.5, 1.5, 2.0, 1]))
        lab = nib.Nifti1Image((np.random.rand(16, 16, 8) > 0.5).astype(np.uint8), np.diag([1.5, 1.5, 2.0, 1]))
        nib.save(img, tmp_path / f"img{i}.nii.gz")
        nib.save(lab, tmp_path / f"lab{i}.nii.gz")
        entries.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    test = [entries.pop()]
    entries.append({"image": "img0.nii.gz"})  # unlabeled
    (tmp_path / "datalist.json").write_text(json.dumps({"training": entries, "test": test}))
    split = json_split(str(tmp_path / "datalist.json"), num_labeled=2, num_val=1)
    assert [len(split[k]) for k in ("labeled", "unlabeled", "val", "test")] == [2, 2, 1, 1]
    (tmp_path / "overlap.json").write_text(json.dumps({"training": entries, "test": [entries[3]]}))
    with pytest.raises(ValueError, match=r"overlap.json \('test'\): 1 test case\(s\) are also val cases .*img3.nii.gz"):
        json_split(str(tmp_path / "overlap.json"), num_labeled=2, num_val=1)
    d = load(split["labeled"][0])  # the h5 reader falls back to NIfTI readers
    assert d["image"].shape == (1, 16, 16, 8)
    np.testing.assert_allclose(d["image"].pixdim, [1.5, 1.5, 2.0])
    entries[1]["label"] = "missing.nii.gz"
    (tmp_path / "bad.json").write_text(json.dumps({"training": entries}))
    with pytest.raises(FileNotFoundError, match="entry 1 of 'training'.*missing.nii.gz does not exist"):
        json_split(str(tmp_path / "bad.json"))


def test_find_images(synth, tmp_path):
    found = find_images(synth)
    assert len(found) == 8 and found[0]["id"].startswith("SYNTH")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no image file"):
        find_images(str(empty))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images(str(tmp_path / "none"))


def test_atomic_nifti_writer_leaves_nothing_half_written(tmp_path, monkeypatch):
    import nibabel as nib

    from monai_stlu.data import AtomicNibabelWriter

    w = AtomicNibabelWriter()
    w.set_data_array(torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4), channel_dim=0)
    w.set_metadata({"affine": np.diag([2.0, 2.0, 2.0, 1.0])})
    w.write(tmp_path / "seg.nii.gz")
    assert os.listdir(tmp_path) == ["seg.nii.gz"]
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj), np.arange(24).reshape(2, 3, 4))

    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    w2 = AtomicNibabelWriter()
    w2.set_data_array(torch.zeros(1, 2, 3, 4), channel_dim=0)
    w2.set_metadata({"affine": np.eye(4)})
    with pytest.raises(OSError, match="disk full"):
        w2.write(tmp_path / "other.nii.gz")
    assert os.listdir(tmp_path) == ["seg.nii.gz"]  # neither the target nor a temporary file is left
