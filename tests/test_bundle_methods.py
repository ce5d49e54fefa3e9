"""Every method trains a few iterations through the LA bundle on the real cases, then its checkpoint evaluates and
exports through the same evaluate/inference configs (the exported network is always a single-output network)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from bundle_utils import config_list, method_args, quick_subset, run_bundle
from conftest import REPO_ROOT, shared_la_dir

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"
METHODS = [
    "supervised", "supervised_ssl4mis", "supervised_uamt", "supervised_ssnet", "mean_teacher", "ua_mt", "cps", "mcnet_plus", "bcp", "dtc", "sassnet", "ssnet", "dan", "urpc",
    "cct", "ict", "mcnet", "ml", "mcf", "tracoco", "stlu",
]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_every_method_has_an_override_file():
    assert sorted(p.stem for p in (CONFIGS / "methods").glob("*.json")) == sorted(METHODS)


# every method in the long suite: the quick suite trains, evaluates and exports the LA bundle's STLU-Net in
# test_bundle_la.py, and every method once through a MONAI backbone in-process (test_backbones.py)
@pytest.mark.parametrize("method", quick_subset(METHODS, set()))
def test_method_trains_evaluates_exports(method, tmp_path):
    la = shared_la_dir()
    common = [
        "--dataset_dir", str(la), "--train_list", "subset_train.list", "--test_list", "subset_test.list",
        "--bundle_root", str(tmp_path), "--num_val", "1", "--max_iterations", "4", "--val_interval", "2",
        "--progress", "false", *method_args(method),
    ]
    files = ["train.json", "quick.json", f"methods/{method}.json"]
    proc = run_bundle("run", "training", "--config_file", config_list("stlu_la", *files), *common, "--log_interval", "1")
    log = proc.stdout + proc.stderr
    losses = [float(x.split("loss: ")[1].split()[0]) for x in log.splitlines() if " loss: " in x]
    expected = 4 + (2 if method == "bcp" else 0)  # BCP: its pre-training iterations come before the budget
    assert len(losses) == expected and all(math.isfinite(v) for v in losses), log[-2000:]
    if method == "bcp":
        assert "stage: 0.0000" in log and "stage: 1.0000" in log  # both BCP stages ran
    sub = "" if method == "stlu" else method  # each baseline in its own folder; STLU-Net is the bundle's own model
    models, evals = tmp_path / "models" / sub, tmp_path / "eval" / sub
    ckpt = torch.load(next(models.glob("checkpoint_*.pt")), weights_only=True)
    target = json.loads((CONFIGS / "methods" / f"{method}.json").read_text())["method"]["_target_"]
    assert ckpt["run_info"]["method"] == target.rsplit(".", 1)[-1]  # the class the method file builds
    if method in ("mean_teacher", "ua_mt", "bcp", "ict"):
        assert any(k.startswith("teacher.") for k in ckpt["method"])
    if method == "cps":
        assert any(k.startswith("network_b.") for k in ckpt["method"])
    if method in ("sassnet", "dan"):  # the discriminator and its Adam state resume with the run
        assert any(k.startswith("discriminator.") for k in ckpt["method"]) and "_extra_state" in ckpt["method"]

    run_bundle("run", "--config_file", config_list("stlu_la", "train.json", "quick.json", f"methods/{method}.json",
                                                    "evaluate.json"), *common, "--num_eval_cases", "1")
    with open(evals / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["dice"]))

    ts = tmp_path / "model.ts"
    run_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(models / "model.pt"),
               "--meta_file", str(CONFIGS / "metadata.json"),
               "--config_file", config_list("stlu_la", "inference.json", f"methods/{method}.json"), "--n_filters", "8")
    out = torch.jit.load(str(ts))(torch.randn(1, 1, 32, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 32, 32, 32)
