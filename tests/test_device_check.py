"""The GPU slot's one command (benchmarks/device_check.py) runs end to end in its --tiny mode on the CPU, so the GPU
minutes of a session that gets a machine go to measuring: all four parts write their results, the quality probe
trains three methods side by side under the time limit and evaluates them, and the output stays small."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.long  # the long suite (CI runs it after the README's quick test command)


def test_device_check_tiny_runs_every_part(tmp_path):
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import device_check

    out = tmp_path / "out"
    res = device_check.main(["--out", str(out), "--tiny", "--stage", str(tmp_path / "no_stage")])
    saved = json.loads((out / "device_check.json").read_text())
    # the command's contract is its own budget (a 10-minute device call), not a wall-clock figure for this machine:
    # a loaded CI runner took 223 s here, an idle one under 120 s (speed goals live in the benchmarks)
    assert saved["total_s"] == res["total_s"] and 0 < res["total_s"] <= res["budget_s"] == 540.0
    assert res["cuda_tests"]["rc"] in (0, 5) and "cuda_tests.log" in os.listdir(out)  # skipped without a GPU
    assert {r["method"] for r in res["speed"]["methods"]} == {"supervised", "stlu"}
    timed = res["stlu_timed"]
    assert timed["iterations"] == 4 and timed["validations"] == 2 and timed["extrapolated_15000_min"] > 0
    assert timed["extrapolated_15000_min"] == pytest.approx(
        (15000 * timed["s_per_iteration"] + 30 * timed["s_per_validation"]) / 60, abs=0.1)
    compiled = res["compiled_speed"]
    assert compiled["rc"] == 0 and compiled["compile_kwargs"] == {"backend": "aot_eager"}, compiled
    assert [(r["method"], r["compiled"]) for r in compiled["methods"]] == [("supervised", True), ("stlu", True)]
    for method in ("supervised", "mean_teacher", "stlu"):
        probe = res["probe"][method]
        assert probe["rc"] == 0 and 0 <= probe["test"]["dice"] <= 1, probe
    md = (out / "device_check.md").read_text()
    assert "quality probe" in md and "| stlu |" in md and "e. compiled" in md
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 16 * 2**20


def test_a_timed_out_part_leaves_no_child_behind(tmp_path):
    """A part that outlives its share of the budget is stopped with its whole process group: the child it started
    (pytest's workers, torchrun's ranks on a GPU) is gone too, not orphaned."""
    import subprocess
    import time

    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import device_check

    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
              f" open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    start = time.perf_counter()
    res = device_check.run_logged([sys.executable, "-c", script], str(tmp_path / "part.log"), timeout=3)
    assert res["rc"] == "timeout" and time.perf_counter() - start < 30
    child = int(pid_file.read_text())
    for _ in range(50):  # reaped by init once killed
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if subprocess.run(["ps", "-o", "stat=", "-p", str(child)], capture_output=True, text=True).stdout.strip() in ("Z", ""):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the part's child {child} survived its time-out")
