"""``monai_stlu compare``: methods x seeds under one protocol, resumed when interrupted, refused when mixed, reported
with the gain over the supervised run of each method's recipe and a paired test checked against a brute force."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from bundle_utils import last_line
from conftest import shared_la_dir
from monai_stlu.bundle.compare import paired_sign_flip_p
from monai_stlu.data import write_synthetic_la

TINY = ["--max_iterations", "4", "--val_interval", "2", "--patch_size", "[32,32,16]", "--val_stride", "[16,16,8]",
        "--eval_stride", "[16,16,8]", "--num_val", "2"]


def compare_cmd(data, out, *more):
    return [sys.executable, "-m", "monai_stlu", "compare", "--dataset_dir", str(data), "-o", str(out), *more]


def run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def brute_force_p(d):
    """The two-sided sign-flip p-value by enumerating every assignment as integers' bits (float64 sums)."""
    n, count = len(d), 0
    observed = abs(sum(d)) / n
    for bits in range(2**n):
        total = sum(-x if bits >> i & 1 else x for i, x in enumerate(d))
        count += abs(total) / n >= observed - 1e-12
    return count / 2**n


def test_paired_sign_flip_p_is_the_exact_test():
    rng = np.random.RandomState(3)
    for n in (1, 3, 8, 12):
        d = list(rng.normal(0.5, 1.0, n))
        assert paired_sign_flip_p(d) == pytest.approx(brute_force_p(d), abs=1e-12)
    assert paired_sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)  # only +++ and --- reach |mean| 2
    assert paired_sign_flip_p([0.0, 0.0]) == 1.0
    # 25 cases all better: sampled, but the exact p (2 / 2^25) is far below any draw's resolution
    assert paired_sign_flip_p([1.0] * 25) < 1e-4
    # 25 cases: sampled. With |d| = 1 everywhere the sum under random signs is 25 - 2k, k binomial(25, 1/2): 17 better
    # and 8 worse give |sum| 9, p = P(k <= 8) + P(k >= 17), exactly from the binomial
    exact = sum(math.comb(25, k) for k in range(26) if abs(25 - 2 * k) >= 9) / 2**25
    assert paired_sign_flip_p([1.0] * 17 + [-1.0] * 8) == pytest.approx(exact, abs=0.005)


@pytest.mark.integration
def test_the_verdict_names_methods_above_and_below_their_supervised_run():
    """The verdict's gain sentence sorts the semi-supervised rows into significantly above their recipe's supervised
    run, significantly below it (a negative result is named, with its gain), and no difference shown."""
    from monai_stlu.bundle.compare import _verdict

    stats = {"up": {"dice": 84.0, "seeds": [0], "gain": 10.5, "p": 0.01},
             "supervised": {"dice": 73.0, "seeds": [1]},
             "flat": {"dice": 72.0, "seeds": [2], "gain": 1.2, "p": 0.4},
             "down": {"dice": 61.0, "seeds": [3], "gain": -16.27, "p": 0.016},
             "down_unsure": {"dice": 60.0, "seeds": [4], "gain": -3.0, "p": 0.3}}
    text = " ".join(_verdict(stats, {m: {} for m in stats}))
    assert ("(against the supervised run of the same recipe, p < 0.05): up +10.50; below that run (p < 0.05): "
            "down -16.27; no difference shown: flat, down_unsure.") in text, text
    stats.pop("down")
    assert "below that run" not in " ".join(_verdict(stats, {m: {} for m in stats}))


def test_compare_resumes_reports_and_refuses_mixed_settings(tmp_path):
    """Asked for STLU-Net, the comparison adds the supervised run of its recipe; a run its time limit stops is
    resumed by the same command; the table pairs the two runs case by case; other settings in the same folder are
    refused in one sentence."""
    data, out = tmp_path / "data", tmp_path / "cmp"
    write_synthetic_la(str(data), num_train=10, num_test=2, shape=(40, 40, 24))
    base = compare_cmd(data, out, "--methods", "stlu", "--seeds", "0", "--num_labeled", "4", *TINY)
    first = run(base + ["--max_train_seconds", "0.001"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "no run has finished yet" in first.stdout and "resumes them" in first.stdout
    assert not (out / "runs" / "stlu_seed0" / "done.json").exists()
    assert list((out / "runs" / "stlu_seed0" / "models").glob("checkpoint_*.pt"))

    second = run(base, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    done = json.loads((out / "runs" / "stlu_seed0" / "done.json").read_text())
    assert done["train_segments"] == 2 and done["max_iterations"] == 4 and done["matched_supervised"] == "supervised"
    assert done["precisions"] == ["float32"]  # the CPU preset trains in float32 on every CPU
    assert "resumed from" in (out / "runs" / "stlu_seed0" / "train.log").read_text()
    assert json.loads((out / "runs" / "supervised_seed0" / "done.json").read_text())["method"] == "supervised"

    table = (out / "comparison.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert {"supervised", "stlu"} <= set(rows)
    with open(out / "per_case.csv") as f:
        cases = list(csv.DictReader(f))
    assert len(cases) == 4  # 2 methods x 2 test cases
    dice = {(r["method"], r["case"]): 100 * float(r["dice"]) for r in cases}
    diff = [dice["stlu", c] - dice["supervised", c] for c in sorted({r["case"] for r in cases})]
    expected = f"{sum(diff) / 2:+.2f} (p {brute_force_p(diff):.3f}, 2 cases, seeds 0)"
    assert expected in rows["stlu"], (expected, rows["stlu"])
    assert "**Which method.**" in table and (out / "learning_curves.png").stat().st_size > 1000

    mixed = run(compare_cmd(data, out, "--methods", "stlu", "--seeds", "0", "--num_labeled", "4",
                            *[v if v != "4" else "6" for v in TINY]), tmp_path)
    assert mixed.returncode != 0
    assert last_line(mixed).startswith(f"{out / 'compare.json'}: its runs were made otherwise (max_iterations 4 there, "
                                       "6 now)"), last_line(mixed)


def test_compare_refuses_bad_requests_in_one_sentence(tmp_path):
    data = tmp_path / "data"
    write_synthetic_la(str(data), num_train=4, num_test=1, shape=(16, 16, 8))
    for more, start in ((["--methods", "stlu,mean_techer"], "--methods mean_techer: not a method of "),
                        (["--seeds", "0,x"], "--seeds 'x': seeds are whole numbers"),
                        (["--seeds", ""], "--seeds (none): give at least one seed"),
                        (["--max_iterations", "abc"], "--max_iterations must be a whole number of iterations"),
                        (["--max_iteration", "4"], "--max_iteration is not a key of the bundle's configs (did you "
                                                   "mean --max_iterations?)"),
                        (["--preset", "fast"], "--preset 'fast' is not one of"),
                        (["--test_list", "nope.list"], f"{data / 'nope.list'}: no such test list")):
        proc = run(compare_cmd(data, tmp_path / "out", *more), tmp_path)
        assert proc.returncode != 0 and last_line(proc).startswith(start), (more, last_line(proc))
        if more[0] == "--methods":  # each method named once
            named = last_line(proc).split("the methods are ")[1].rstrip(".").split(", ")
            assert "stlu" in named and len(named) == len(set(named)), named
    proc = run(compare_cmd(tmp_path / "no_data", tmp_path / "out"), tmp_path)
    assert proc.returncode != 0 and last_line(proc) == f"{tmp_path / 'no_data'}: no such folder (--dataset_dir).", \
        last_line(proc)
    (tmp_path / "a_file").write_text("keep")
    proc = run(compare_cmd(data, tmp_path / "a_file"), tmp_path)
    assert proc.returncode != 0 and last_line(proc).startswith(f"{tmp_path / 'a_file'}: -o names a file"), last_line(proc)
    assert (tmp_path / "a_file").read_text() == "keep"
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.long
def test_compare_on_real_la_keeps_the_presets_validation_cases(tmp_path):
    """On the real LA cases the CPU preset's named validation cases are used; a semi-supervised method's table row
    carries its gain over the supervised run of its recipe (SSL4MIS's, for Mean Teacher)."""
    la = shared_la_dir()
    out = tmp_path / "cmp"
    proc = run(compare_cmd(la, out, "--methods", "mean_teacher", "--seeds", "0", "--train_list", "train.list",
                           "--test_list", "subset_test.list", "--max_iterations", "4", "--val_interval", "2",
                           "--patch_size", "[48,48,32]", "--val_stride", "[48,48,32]", "--eval_stride",
                           "[48,48,32]"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (out / "runs" / "mean_teacher_seed0" / "train.log").read_text()
    assert "--val_ids" not in log  # the preset's own four named cases
    rows = [line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| mean_teacher ")]
    assert rows and "`supervised_ssl4mis`" in rows[0] and "8 cases, seeds 0" in rows[0]
