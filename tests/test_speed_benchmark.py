"""The speed benchmark's small variant: a test of the fast path's numerics (bf16 + channels_last, batched windows)
against plain fp32 on the real LA cases, not of its timing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, shared_la_dir

pytestmark = [pytest.mark.long, pytest.mark.integration, pytest.mark.slow]


def run_speed(tmp_path, *args):
    la = shared_la_dir()
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "speed.py"), "--small", "--json", str(out),
         "--data_dir", str(la), *args],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_fast_path_numerics(tmp_path):
    r = run_speed(tmp_path, "--repeats", "1")
    for key in ("stlu_speedup_vs_fp32", "stlu_vs_supervised_step", "eval_speedup_vs_window_loop",
                "eval_dice_agreement", "device", "stlu_fp32_iteration_s", "stlu_fast_iteration_s",
                "supervised_fast_iteration_s", "eval_loop_s", "eval_fast_s", "data_per_iteration_s"):
        assert key in r, key
    # the same weights and crops: the first loss of the fast path is the fp32 loss within bf16 precision
    assert r["stlu_first_loss_abs_diff"] < 0.02 * abs(r["stlu_fp32_first_loss"])
    assert abs(r["supervised_fast_first_loss"] - r["supervised_fp32_first_loss"]) < 0.02
    # batched bf16 windows and the one-window fp32 loop predict (nearly) the same voxels
    assert r["eval_foreground_voxels_loop"] > 0
    assert r["eval_dice_agreement"] >= 0.98
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("stlu_fast_iteration_s", "eval_fast_s", "data_per_iteration_s"))


def test_fast_path_loss_curve_follows_fp32(tmp_path):
    r = run_speed(tmp_path, "--loss_curve", "12")
    assert len(r["loss_fp32"]) == len(r["loss_fast"]) == 12
    assert r["loss_first_abs_diff"] < 0.02
    assert r["loss_moving_avg_max_abs_diff"] < 0.05
