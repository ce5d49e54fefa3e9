"""The Pancreas-CT and BraTS-2019 bundles: generated from the LA bundle's wiring (and kept so), shipped with the
published splits, and every method trains, evaluates and exports through each of them on synthetic volumes in the
bundle's own h5 layout (no Pancreas or BraTS data on the test machines)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil

import h5py
import numpy as np
import pytest
import torch

from bundle_utils import config_list, method_args, run_bundle
from conftest import REPO_ROOT
from monai_stlu.bundle import generate_bundle, generate_bundles
from monai_stlu.data import SYNTHETIC_LAYOUTS, h5_split, write_synthetic_la

BUNDLES = REPO_ROOT / "bundles"
METHODS = [
    "supervised", "mean_teacher", "ua_mt", "cps", "mcnet_plus", "bcp", "dtc", "sassnet", "ssnet", "dan", "urpc",
    "cct", "ict", "mcnet", "ml", "mcf", "tracoco", "stlu",
]
LAYOUTS = {b: SYNTHETIC_LAYOUTS[b] for b in ("stlu_pancreas", "stlu_brats")}  # the generated bundles' layouts


def test_generated_configs_are_up_to_date():
    assert generate_bundles(check=True) == [], "run: python -m monai_stlu generate_bundles"
    for name in LAYOUTS:
        for rel in ("configs/train.json", "configs/methods/stlu.json", "configs/metadata.json", "docs/README.md", "LICENSE"):
            assert (BUNDLES / name / rel).is_file(), rel


def test_generator_applies_the_delta_and_refuses_unknown_items(tmp_path):
    shutil.copytree(BUNDLES / "stlu_la", tmp_path / "stlu_la")
    (tmp_path / "stlu_x" / "configs").mkdir(parents=True)
    delta = {"train.json": {"bundle_name": "stlu_x", "train#random_transforms#0#spatial_size": [8, 8, 8]}}
    (tmp_path / "stlu_x" / "configs" / "bundle_delta.json").write_text(json.dumps(delta))
    written = generate_bundle("stlu_x", str(tmp_path))
    assert str(tmp_path / "stlu_x" / "configs" / "methods" / "bcp.json") in written
    train = json.loads((tmp_path / "stlu_x" / "configs" / "train.json").read_text())
    la = json.loads((BUNDLES / "stlu_la" / "configs" / "train.json").read_text())
    assert train["bundle_name"] == "stlu_x" and train["train"]["random_transforms"][0]["spatial_size"] == [8, 8, 8]
    la["bundle_name"], la["train"]["random_transforms"][0]["spatial_size"] = "stlu_x", [8, 8, 8]
    assert train == la  # nothing else changed
    assert generate_bundle("stlu_x", str(tmp_path), check=True) == []
    (tmp_path / "stlu_x" / "configs" / "train.json").write_text("{}")  # a hand edit is reported
    assert generate_bundle("stlu_x", str(tmp_path), check=True) == [str(tmp_path / "stlu_x" / "configs" / "train.json")]
    delta["train.json"]["train#no_such_block#x"] = 1
    (tmp_path / "stlu_x" / "configs" / "bundle_delta.json").write_text(json.dumps(delta))
    with pytest.raises(KeyError, match="no_such_block"):
        generate_bundle("stlu_x", str(tmp_path))


@pytest.mark.parametrize("bundle, lists, sizes", [
    ("stlu_pancreas", ("train.list", "test.list", None), {"labeled": 6, "unlabeled": 52, "val": 4, "test": 20}),
    ("stlu_brats", ("train.txt", "test.txt", "val.txt"), {"labeled": 25, "unlabeled": 225, "val": 25, "test": 60}),
])
def test_published_splits(bundle, lists, sizes):
    splits = BUNDLES / bundle / "configs" / "splits"
    ids = [set((splits / n).read_text().split()) for n in lists if n]
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1:])
    train = json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())
    split = h5_split("/nowhere", str(splits / lists[0]), str(splits / lists[1]), num_labeled=train["num_labeled"],
                     num_val=train["num_val"], case_path=train["case_path"], check=False,
                     val_list=str(splits / lists[2]) if lists[2] else None)
    assert {k: len(v) for k, v in split.items() if k != "test"} == {k: v for k, v in sizes.items() if k != "test"}
    assert len((splits / lists[1]).read_text().split()) == sizes["test"]


def synthetic_layout(bundle: str, root) -> list[str]:
    names = LAYOUTS[bundle]["list_names"]
    write_synthetic_la(str(root), num_train=10, num_test=1, shape=(64, 64, 64), **LAYOUTS[bundle])
    if bundle == "stlu_brats":  # BraTS labels {0, 2, 4} (edema, enhancing tumour): whole tumour = every label > 0
        for path in root.glob("data/*.h5"):
            with h5py.File(path, "r+") as f:
                lab = f["label"][...]
                f["label"][...] = np.where(lab > 0, np.where(np.indices(lab.shape)[0] % 2 == 0, 2, 4), 0)
    args = ["--dataset_dir", str(root)] + [a for flag, name in zip(("--train_list", "--test_list", "--val_list"), names)
                                           for a in (flag, name)]
    return args


# the quick suite runs STLU-Net through the BraTS bundle (its layout differs most from LA's: a validation list,
# labels {0, 2, 4}); Pancreas-CT's layout is read in its quick bad-data test below, and every other pair runs in the
# long suite
@pytest.mark.parametrize("bundle, method", [
    pytest.param(b, m, marks=() if (b, m) == ("stlu_brats", "stlu") else pytest.mark.long)
    for m in METHODS for b in LAYOUTS
])
def test_method_trains_evaluates_exports(bundle, method, tmp_path):
    common = synthetic_layout(bundle, tmp_path / "data") + [
        "--bundle_root", str(tmp_path), "--num_labeled", "4" if method == "bcp" else "2",  # BCP: batches of 4 + 4
        "--num_val", "1", "--max_iterations", "2",
        "--val_interval", "2", "--progress", "false", "--n_filters", "4", "--log_interval", "1", *method_args(method),
    ]
    files = ["train.json", "quick.json", f"methods/{method}.json"]
    proc = run_bundle("run", "training", "--config_file", config_list(bundle, *files), *common)
    log = proc.stdout + proc.stderr
    losses = [float(x.split("loss: ")[1].split()[0]) for x in log.splitlines() if " loss: " in x]
    assert len(losses) == 2 + (2 if method == "bcp" else 0) and all(math.isfinite(v) for v in losses), log[-2000:]
    sub = "" if method == "stlu" else method
    ckpt = torch.load(next((tmp_path / "models" / sub).glob("checkpoint_*.pt")), weights_only=True)
    assert ckpt["run_info"]["bundle"] == bundle

    run_bundle("run", "--config_file", config_list(bundle, *files, "evaluate.json"), *common, "--save_predictions", "true")
    with open(tmp_path / "eval" / sub / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("class", "1") == "1"]
    id_format = LAYOUTS[bundle]["id_format"]
    assert [r["case"] for r in rows] == [id_format.format(10)] and math.isfinite(float(rows[0]["dice"]))
    assert (tmp_path / "eval" / sub / "predictions" / f"{id_format.format(10)}_seg.nii.gz").is_file()

    ts = tmp_path / "model.ts"
    run_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(tmp_path / "models" / sub / "model.pt"),
               "--meta_file", str(BUNDLES / bundle / "configs" / "metadata.json"),
               "--config_file", config_list(bundle, "inference.json", f"methods/{method}.json"), "--n_filters", "4")
    out = torch.jit.load(str(ts))(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 2, 32, 32, 32)


@pytest.mark.parametrize("bundle, break_it, message", [
    ("stlu_pancreas", lambda root, args: (root / "Pancreas_h5" / "image0003_norm.h5").unlink(),
     r"case image0003 listed in .*train.list is missing: .*Pancreas_h5/image0003_norm.h5"),
    ("stlu_brats", lambda root, args: args.extend(["--modalities", "['flair', 't2']"]),
     r"data/BraTS19_SYN_000_1.h5: has no dataset 'flair'.*--modalities flair,t2"),
    pytest.param("stlu_brats",
                 lambda root, args: _relabel(root / "data" / "BraTS19_SYN_004_1.h5", np.zeros((64, 64, 60), np.uint8)),
                 r"data/BraTS19_SYN_004_1.h5: shape mismatch",
                 marks=pytest.mark.long),  # the shape check's quick test: test_data.py
])
def test_bad_data_in_the_new_layouts_is_named_before_training(bundle, break_it, message, tmp_path):
    """A missing case, a sequence the files lack, an image/label shape mismatch: the error names the file and the
    problem, and no training step ran (no checkpoint)."""
    args = synthetic_layout(bundle, tmp_path / "data")
    break_it(tmp_path / "data", args)
    proc = run_bundle("run", "training", "--config_file", config_list(bundle, "train.json", "quick.json"), *args,
                      "--bundle_root", str(tmp_path), "--num_labeled", "2", "--num_val", "1", "--n_filters", "4",
                      "--max_iterations", "2", check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
    assert not list(tmp_path.glob("models/**/*.pt"))


def _relabel(path, label):
    with h5py.File(path, "r+") as f:
        del f["label"]
        f.create_dataset("label", data=label)
