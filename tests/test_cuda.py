"""The CUDA path, for a GPU machine: ``python -m pytest -m cuda tests`` runs these (and they skip without a GPU).

FeatureMix under fp16 and bf16 autocast against the paper's formula in float64, every method's training steps with
the fast path (bf16 where the GPU has it, forced fp16 with its gradient scaler), and the export of a network on the
GPU against eager execution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bundle_utils import config_list, method_args, run_bundle
from monai_stlu.data import write_synthetic_la
from monai_stlu.networks import STLUNet
from monai_stlu.networks.layers import FeatureMix
from test_feature_mix import reference_mix

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
METHODS = [
    "supervised", "mean_teacher", "ua_mt", "cps", "mcnet_plus", "bcp", "dtc", "sassnet", "ssnet", "dan", "urpc",
    "cct", "ict", "mcnet", "ml", "mcf", "tracoco", "stlu",
]


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_feature_mix_under_autocast_matches_the_formula(dtype, tol):
    rng = np.random.default_rng(0)
    xl, xu = rng.normal(size=(2, 8, 12, 12, 8)) + 0.3, rng.normal(size=(2, 8, 12, 12, 8)) + 0.3
    tl, tu = torch.tensor(xl, dtype=dtype, device="cuda"), torch.tensor(xu, dtype=dtype, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        ml, mu = FeatureMix()(tl, tu)
    rl, ru = reference_mix(tl.double().cpu().numpy(), tu.double().cpu().numpy())  # the formula on the rounded inputs
    assert ml.dtype == dtype
    np.testing.assert_allclose(ml.float().cpu().numpy(), rl, rtol=tol, atol=tol * 4)
    np.testing.assert_allclose(mu.float().cpu().numpy(), ru, rtol=tol, atol=tol * 4)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_la(str(tmp_path_factory.mktemp("cuda")), num_train=10, num_test=1, shape=(64, 64, 48))


@pytest.mark.parametrize("amp_dtype", ["auto", "float16"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_the_gpu(synth, method, amp_dtype, tmp_path):
    proc = run_bundle("run", "training", "--config_file", config_list("stlu_la", "train.json", "quick.json", f"methods/{method}.json"),
                      "--dataset_dir", synth, "--bundle_root", str(tmp_path), "--num_labeled", "4" if method == "bcp" else "2",
                      "--num_val", "1", "--max_iterations", "4", "--val_interval", "2", *method_args(method),
                      "--amp", "true", "--amp_dtype", amp_dtype, "--progress", "false", "--log_interval", "1")
    log = proc.stdout + proc.stderr
    losses = [float(x.split("loss: ")[1].split()[0]) for x in log.splitlines() if " loss: " in x]
    assert losses and all(math.isfinite(v) for v in losses), log[-2000:]


def test_torchscript_on_the_gpu_matches_eager(tmp_path):
    net = STLUNet(n_filters=8).cuda().eval()
    x = torch.randn(1, 1, 64, 64, 48, device="cuda")
    with torch.no_grad():
        ref = net(x)
        ts = torch.jit.trace(net, x)
        torch.testing.assert_close(ts(x), ref, rtol=1e-4, atol=1e-4)
