"""The quality protocol end to end at tiny size on real LA cases (a few iterations, not the budget): run (cached),
report with its table and pictures, robustness to noise, the label-ratio sweep and an ablation switch."""

from __future__ import annotations

import csv
import json
import os
import re

import pytest

from conftest import REPO_ROOT, shared_la_dir

pytestmark = [pytest.mark.long, pytest.mark.integration, pytest.mark.slow]
def without(args: list[str], key: str) -> list[str]:
    """``args`` (``--key value`` pairs) without ``key`` and its value."""
    i = args.index(key)
    return args[:i] + args[i + 2:]


TINY = ["--max_iterations", "2", "--val_interval", "2", "--patch_size", "[64,64,48]", "--n_filters", "4",
        "--val_stride", "[64,64,48]", "--eval_stride", "[64,64,48]", "--num_labeled", "2",
        "--val_ids", "['3DA0T2V6JJ2NLUAV6FWM']", "--pseudo_quality_cases", "1", "--ramp_iterations", "1"]


def test_quality_protocol_tiny(tmp_path, capsys):
    from benchmarks import probes, quality

    la = shared_la_dir()
    test_list = tmp_path / "two_test.list"
    test_list.write_text("".join(line + "\n" for line in (la / "subset_test.list").read_text().split()[:2]))
    common = ["--protocol", "cpu", "--dataset_dir", str(la), "--train_list", "subset_train.list",
              "--test_list", str(test_list), "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "res"),
              "--archive_dir", str(tmp_path / "archive")]
    quality.main(["run", "--methods", "supervised,stlu", "--seeds", "0", *common, "--override", *TINY])
    done = json.loads((tmp_path / "work" / "stlu_seed0" / "done.json").read_text())
    assert done["method"] == "stlu" and 0 <= done["test"]["dice"] <= 1
    assert done["commits"] == [done["commit"]] and done["commit"] != "unrecorded"  # one call, one code version
    assert (tmp_path / "work" / "stlu_seed0" / "train" / "pseudo_label_quality.csv").is_file()
    kept = tmp_path / "archive" / "stlu_seed0"  # the run's record, archived as it finished
    assert json.loads((kept / "done.json").read_text()) == done
    assert (kept / "test_metrics.csv").read_text() == (tmp_path / "work" / "stlu_seed0" / "test" / "metrics.csv").read_text()
    assert [r["iteration"] for r in csv.DictReader(open(kept / "validation.csv"))] == ["2"]
    predictions = sorted(p.name for p in (tmp_path / "work" / "stlu_seed0" / "test" / "predictions").iterdir())
    assert predictions == sorted(f"{case}_seg.nii.gz" for case in test_list.read_text().split())
    assert not (tmp_path / "work" / "supervised_seed0" / "train" / "pseudo_label_quality.csv").exists()
    mtime = os.path.getmtime(tmp_path / "work" / "stlu_seed0" / "done.json")
    quality.main(["run", "--methods", "stlu", "--seeds", "0", *common, "--override", *TINY])  # cached: skipped
    assert os.path.getmtime(tmp_path / "work" / "stlu_seed0" / "done.json") == mtime

    # a training its time limit stops is left to resume, not evaluated; a probe (--evaluate_stopped) is evaluated
    # and says where it stopped, read from the newest checkpoint's trainer state (4 iterations planned here)
    timed = ["run", "--methods", "supervised", "--seeds", "0", "--tag", "_timed", *common]
    four = [*without(TINY, "--max_iterations"), "--max_iterations", "4", "--max_train_seconds", "0.001"]
    capsys.readouterr()
    quality.main([*timed, "--override", *four])  # over budget after iteration 1
    timed_dir = tmp_path / "work" / "supervised_timed_seed0"
    assert f"{timed_dir}: stopped by its time limit at iteration 1 of 4, not evaluated" in capsys.readouterr().out
    assert not (timed_dir / "done.json").exists() and not (timed_dir / "test").exists()
    quality.main([*timed, "--evaluate_stopped", "--override", *four])
    assert json.loads((timed_dir / "done.json").read_text())["stopped_at_iteration"] == 2  # resumed at 1, stopped at 2
    assert "at iteration 1." in (timed_dir / "train.log").read_text()  # "resumed from ... at iteration 1."

    # an ablation switch and the label-ratio sweep are runs of their own, tagged
    quality.main(["run", "--methods", "stlu", "--seeds", "0", "--tag", "_decoder", *common, "--override", *TINY,
                  "--dropout_placement", "decoder"])
    quality.main(["run", "--methods", "supervised", "--seeds", "0", "--labeled", "2,3", *common, "--override",
                  *without(TINY, "--num_labeled")])
    assert {p.name for p in (tmp_path / "work").iterdir()} >= {"stlu_decoder_seed0", "supervised_l2_seed0",
                                                                "supervised_l3_seed0"}

    probes.main(["robustness", "--methods", "supervised,stlu", "--seeds", "0", "--sigmas", "0.3", *common,
                  "--override", *TINY])
    robust = (tmp_path / "res" / "robustness.md").read_text()
    assert "| supervised |" in robust and "σ 0.3" in robust

    # the BatchNorm diagnostic: the model as trained scores on the validation cases what training logged for it
    probes.main(["bn_check", "--methods", "supervised,stlu", "--seeds", "0", "--bn_batches", "1", *common,
                  "--override", *TINY])
    rows = [line.split("|") for line in (tmp_path / "res" / "bn_check.md").read_text().splitlines()
            if line.startswith("| s")]
    assert [r[1].strip() for r in rows] == ["supervised", "stlu"]
    for r in rows:
        logged = re.findall(r"val_mean_dice: ([0-9.]+)", (tmp_path / "work" / f"{r[1].strip()}_seed0" / "train.log").read_text())
        assert float(r[3]) == pytest.approx(100 * max(map(float, logged)), abs=0.5) and 0 <= float(r[4]) <= 100

    # the threshold diagnostic: the same validation Dice as above, the probabilities inside the label in range
    probes.main(["margin", "--methods", "supervised,stlu", "--seeds", "0", *common, "--override", *TINY])
    margins = [line.split("|") for line in (tmp_path / "res" / "margin.md").read_text().splitlines()
               if line.startswith("| s")]
    assert [r[1].strip() for r in margins] == ["supervised", "stlu"]
    for r, b in zip(margins, rows):
        assert float(r[3]) == pytest.approx(float(b[3]), abs=0.01)
        assert 0 <= float(r[4]) <= 1 and r[7].strip() in ("yes", "no")
        near, above = (float(c.strip().rstrip("%")) for c in r[5:7])
        assert 0 <= near and 0 <= above and near + above <= 100.05

    quality.main(["report", *common])
    summary = (tmp_path / "res" / "summary.md").read_text()
    for name in ("supervised", "stlu", "stlu_decoder", "supervised_l2", "supervised_l3", "supervised_timed"):
        assert f"| {name} | 1 |" in summary
    # variants are compared on what model selection saw: the best validation Dice, from the run's own log
    stlu_row = next(line for line in summary.splitlines() if line.startswith("| stlu | "))
    logged = [float(v) for v in re.findall(r"val_mean_dice: ([0-9.]+)",
                                           (tmp_path / "work" / "stlu_seed0" / "train.log").read_text())]
    assert logged and float(stlu_row.split("|")[-3]) == pytest.approx(100 * max(logged), abs=0.006)
    assert stlu_row.split("|")[-2].strip() == "(not post-processed)"  # STLU-Net's evaluation keeps every component
    with open(tmp_path / "res" / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 2 and {r["case"] for r in rows} == set(test_list.read_text().split())
    for png in ("learning_curves.png", "overlay.png", "label_sweep.png"):
        assert (tmp_path / "res" / png).stat().st_size > 10_000
    assert (REPO_ROOT / "bundles" / "stlu_la" / "configs" / "gpu_protocol.json").is_file()
