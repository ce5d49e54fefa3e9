"""The LA bundle end to end on the real shared LA cases: train (quick), resume, evaluate, infer, export, verify."""

from __future__ import annotations

import csv
import math
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_utils import config_list, run_bundle
from conftest import REPO_ROOT, shared_la_dir
from monai_stlu.handlers import latest_checkpoint

BUNDLE = REPO_ROOT / "bundles" / "stlu_la"
CONFIGS = BUNDLE / "configs"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train with the user's command + quick.json on the shared cases, into a temporary bundle root."""
    la = shared_la_dir()
    root = tmp_path_factory.mktemp("stlu_la_run")
    common = [
        "--dataset_dir", str(la), "--train_list", "subset_train.list", "--test_list", "subset_test.list",
        "--bundle_root", str(root), "--progress", "false",
    ]
    proc = run_bundle("run", "training", "--config_file", config_list("stlu_la", "train.json", "quick.json"), *common)
    return {"root": root, "common": common, "log": proc.stdout + proc.stderr}


def test_training_writes_model_and_checkpoint(trained):
    models = trained["root"] / "models"
    sd = torch.load(models / "model.pt", weights_only=True)
    assert "backbone.head.weight" in sd  # a flat state_dict of the eval network
    # two epochs of 4 iterations: both periodic checkpoints kept (n_saved 2), nothing half-written left behind
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt", "model.pt"]
    ckpt = torch.load(latest_checkpoint(str(models)), weights_only=True)
    assert set(ckpt) == {"network", "optimizer", "method", "trainer", "best_model", "run_info"}
    assert ckpt["run_info"] == {"bundle": "stlu_la", "method": "STLUMethod",
                                "network": "STLUNet (n_filters 8, 1 input channel, 2 classes)"}
    assert ckpt["trainer"]["iteration"] == 8
    # the best-model record: one (score, ignite's name) pair; the file itself is the fixed name model.pt
    (score, name), = ckpt["best_model"]["key_metric_saved"]
    assert 0.0 <= score <= 1.0 and name.startswith("model_key_metric=")
    assert "val_mean_dice" in trained["log"] and "sup:" in trained["log"]


@pytest.mark.long  # the quick suite resumes a run in test_reliability.py (after a kill while saving)
def test_resume_continues_from_checkpoint(trained, tmp_path):
    root = tmp_path / "resume"
    shutil.copytree(trained["root"] / "models", root / "models")
    common = [a if a != str(trained["root"]) else str(root) for a in trained["common"]]
    proc = run_bundle(
        "run", "training", "--config_file", config_list("stlu_la", "train.json", "quick.json"), *common,
        "--max_iterations", "12",
    )
    log = proc.stdout + proc.stderr
    assert "resumed from" in log and "at iteration 8" in log
    assert "Epoch: 3/3" in log and "Epoch: 1/3" not in log
    ckpt = torch.load(latest_checkpoint(str(root / "models")), weights_only=True)
    assert ckpt["trainer"]["iteration"] == 12


def test_evaluate_two_cases(trained):
    out = trained["root"] / "eval"
    run_bundle(
        "run", "--config_file", config_list("stlu_la", "train.json", "quick.json", "evaluate.json"),
        *trained["common"], "--num_eval_cases", "2",
    )
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for r in rows:
        for k in ("dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm"):
            assert math.isfinite(float(r[k])), (k, r)
        assert float(r["hd95_mm"]) == pytest.approx(0.625 * float(r["hd95_vox"]), rel=1e-4)
    with open(out / "metrics_summary.csv") as f:
        summary = {r["metric"]: r for r in csv.DictReader(f)}
    dice = [float(r["dice"]) for r in rows]
    assert float(summary["dice"]["mean"]) == pytest.approx(np.mean(dice))
    assert float(summary["dice"]["std"]) == pytest.approx(np.std(dice))


def test_inference_writes_nifti(trained, tmp_path):
    la = shared_la_dir()
    case = la / "2018LA_Seg_Training Set" / "UPT6DX9IQY9JAZ7HJKA7" / "mri_norm2.h5"
    out = tmp_path / "pred"
    run_bundle(
        "run", "--config_file", str(CONFIGS / "inference.json"), "--bundle_root", str(trained["root"]),
        "--input_dir", str(case), "--output_dir", str(out), "--n_filters", "8", "--patch_size", "[64,64,48]",
        "--eval_stride", "[32,32,24]",
    )
    files = list(out.rglob("*.nii.gz"))
    assert len(files) == 1
    img = nib.load(files[0])
    import h5py

    with h5py.File(case) as f:
        assert img.shape == f["image"].shape
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1}
    np.testing.assert_allclose(img.header.get_zooms(), [0.625] * 3)


def test_torchscript_and_onnx_export_parity(trained, tmp_path):
    import onnxruntime as ort

    from monai_stlu.networks import STLUNet

    ckpt = trained["root"] / "models" / "model.pt"
    meta = str(CONFIGS / "metadata.json")
    infer = str(CONFIGS / "inference.json")
    ts_path, onnx_path = tmp_path / "model.ts", tmp_path / "model.onnx"
    run_bundle("ckpt_export", "network_def", "--filepath", str(ts_path), "--ckpt_file", str(ckpt),
               "--meta_file", meta, "--config_file", infer, "--n_filters", "8")
    run_bundle("onnx_export", "network_def", "--filepath", str(onnx_path), "--ckpt_file", str(ckpt),
               "--meta_file", meta, "--config_file", infer, "--n_filters", "8", "--input_shape", "[1,1,64,64,48]",
               "--converter_kwargs",
               "{'input_names': ['image'], 'output_names': ['pred'], 'dynamic_axes': {'image': {0: 'batch'}, 'pred': {0: 'batch'}}}")
    net = STLUNet(n_filters=8).eval()
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.randn(2, 1, 64, 64, 48)
    with torch.no_grad():
        ref = net(x)
        ts_out = torch.jit.load(str(ts_path))(x)
    torch.testing.assert_close(ts_out, ref, rtol=1e-5, atol=1e-5)  # stated tolerance: 1e-5
    sess = ort.InferenceSession(str(onnx_path))
    onnx_out = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, ref.numpy(), rtol=1e-4, atol=1e-4)  # stated tolerance: 1e-4
    assert (onnx_out.argmax(1) == ref.numpy().argmax(1)).mean() > 0.999


def test_verify_metadata_and_net_in_out():
    schema = REPO_ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
    if not schema.is_file():
        shared_la_dir()  # skips (or fails under CI) with the shared-folder message
    # MONAI's own functions, which its command line calls, in this process (two commands' imports saved): each raises
    # on a failed check
    from monai.bundle import verify_metadata, verify_net_in_out

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    verify_net_in_out("network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.json"))
