"""Training on a datastore's labeled list (MONAI Label's): unlabeled images from the same datastore, epochs over the
labeled studies; the bundle's own split is left as it is."""

from __future__ import annotations

import numpy as np
import nibabel as nib

from monai_stlu.data import epoch_length, is_datastore_list, unlabeled_cases, write_synthetic_la


def _studies(root, n):
    (root / "labels" / "final").mkdir(parents=True)
    for i in range(n):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(root / f"s{i}.nii.gz"))
    for i in range(3):  # labels live in a sub-folder, as MONAI Label's local datastore keeps them
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(root / "labels" / "final" / f"s{i}.nii.gz"))


def test_datastore_unlabeled_are_the_studies_without_label(tmp_path):
    _studies(tmp_path, 6)
    labeled = [{"image": str(tmp_path / f"s{i}.nii.gz"), "label": str(tmp_path / "labels" / "final" / f"s{i}.nii.gz")}
               for i in range(2)]
    val = [{"image": str(tmp_path / "s2.nii.gz"), "label": str(tmp_path / "labels" / "final" / "s2.nii.gz")}]
    assert is_datastore_list(labeled)
    out = unlabeled_cases(labeled, val, {"dataset_dir": "/nowhere"})
    assert [c["id"] for c in out] == ["s3", "s4", "s5"] and all("label" not in c for c in out)
    # none beside them, or not wanted: the labeled images stand in, without their labels
    off = unlabeled_cases(labeled, val, {"dataset_dir": "/nowhere"}, use_unlabeled=False)
    assert [c["image"] for c in off] == [d["image"] for d in labeled] and all("label" not in c for c in off)
    # one unlabeled study for batches of 2 (MONAI Label answered HTTP 500): topped up with a labeled image
    one = unlabeled_cases(labeled, [], {"dataset_dir": "/nowhere"}, batch_size=2)
    assert [c["id"] for c in one][:3] == ["s2", "s3", "s4"] and len(one) == 4  # s2..s5: enough, nothing added
    _studies(tmp_path / "small", 3)
    small = [{"image": str(tmp_path / "small" / f"s{i}.nii.gz"), "label": "x"} for i in range(2)]
    topped = unlabeled_cases(small, [], {"dataset_dir": "/nowhere"}, batch_size=2)
    assert [c["image"] for c in topped] == [str(tmp_path / "small" / "s2.nii.gz"), small[0]["image"]]
    assert all("label" not in c for c in topped)
    assert epoch_length(labeled, 2, 500) == 1 and epoch_length(labeled * 3, 4, 500) == 2
    assert epoch_length(labeled, 2, 500, iterations_per_epoch=7) == 7


def test_the_bundle_split_is_unchanged(tmp_path):
    from monai_stlu.data import semi_supervised_split

    root = write_synthetic_la(str(tmp_path / "la"), num_train=6, num_test=1, shape=(16, 16, 16))
    args = {"dataset_dir": root, "num_labeled": 2, "num_val": 1}
    split = semi_supervised_split(**args)
    assert not is_datastore_list(split["labeled"])
    assert unlabeled_cases(split["labeled"], split["val"], args) == split["unlabeled"]
    assert epoch_length(split["labeled"], 2, 500, iterations_per_epoch=7) == 500  # an epoch is a validation interval
