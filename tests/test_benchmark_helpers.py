"""``benchmarks/speed.py --ckpt``: the V-Net weights are taken from a trained V-Net / STLU-Net / bundle checkpoint."""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.speed import _vnet_weights_from
from monai_stlu.networks import STLUNet, VNet


@pytest.mark.parametrize("form", ["vnet", "stlu", "bundle_checkpoint"])
def test_vnet_weights_from_checkpoints(tmp_path, form):
    torch.manual_seed(0)
    net = STLUNet(n_filters=4) if form != "vnet" else VNet(n_filters=4)
    state = net.state_dict()
    src = tmp_path / "in.pt"
    torch.save({"model": state, "optimizer": {}} if form == "bundle_checkpoint" else state, src)
    out = tmp_path / "vnet.pt"
    assert _vnet_weights_from(str(src), str(out)) == 4
    vnet = VNet(n_filters=4)
    vnet.load_state_dict(torch.load(out, weights_only=True))  # strict: every key matches
    backbone = net.backbone if form != "vnet" else net
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(vnet.eval()(x), backbone.eval()(x))


def test_vnet_weights_from_rejects_other_networks(tmp_path):
    src = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), src)
    with pytest.raises(ValueError, match="other.pt.*not a V-Net"):
        _vnet_weights_from(str(src), str(tmp_path / "vnet.pt"))


def test_training_minutes_sum_the_epochs_of_every_segment(tmp_path):
    """A run interrupted in epoch 3 and resumed from epoch 2's checkpoint: epochs 1, 2 from the first segment, 3 (the
    last one logged) and 4 from the second; the evaluator's own epoch lines are not counted."""
    from monai_stlu.bundle.compare import training_minutes

    log = tmp_path / "train.log"
    trainer, evaluator = "ignite.engine.engine.SemiSupervisedTrainer", "ignite.engine.engine.SupervisedEvaluator"
    log.write_text("\n".join([
        f"2026-11-30 11:39:09,880 INFO {evaluator}: Epoch[1] Complete. Time taken: 00:00:11.987",
        f"2026-11-30 11:39:18,605 INFO {trainer}: Epoch[1] Complete. Time taken: 00:13:46.746",
        f"2026-11-30 11:48:30,472 INFO {trainer}: Epoch[2] Complete. Time taken: 01:09:11.867",
        f"2026-11-30 11:58:30,472 INFO {trainer}: Epoch[3] Complete. Time taken: 00:05:00.000",
        f"2026-11-30 13:37:05,600 INFO {trainer}: resumed from models/checkpoint_epoch=2.pt at iteration 400.",
        f"2026-11-30 13:45:34,930 INFO {trainer}: Epoch[3] Complete. Time taken: 00:08:29.371",
        f"2026-11-30 13:51:47,702 INFO {trainer}: Epoch[4] Complete. Time taken: 00:06:12.772",
    ]))
    seconds = (13 * 60 + 46.746) + (3600 + 9 * 60 + 11.867) + (8 * 60 + 29.371) + (6 * 60 + 12.772)
    minutes, segments = training_minutes(str(log))
    assert minutes == pytest.approx(seconds / 60) and segments == 2
    assert training_minutes(str(tmp_path / "absent.log")) is None


def test_record_segment_keeps_every_calls_commit_and_machine(tmp_path):
    """A protocol run resumed from another work tree names both versions of the code, in order, once each; a segment
    names the machine and precision it trained in, so a run resumed on a CPU without native bf16 (where ``amp``
    trains in float32) says so."""
    import json

    from monai_stlu.bundle.compare import distinct, record_segment

    record_segment(str(tmp_path), "aaa1111", {"cpu": "Xeon", "precision": "bfloat16"})
    record_segment(str(tmp_path), "aaa1111", {"cpu": "Xeon", "precision": "bfloat16"})
    segments = record_segment(str(tmp_path), "bbb2222+dirty", {"cpu": "EPYC", "precision": "float32"})
    assert distinct(segments, "commit") == ["aaa1111", "bbb2222+dirty"]
    assert distinct(segments, "precision") == ["bfloat16", "float32"] and distinct(segments, "cpu") == ["Xeon", "EPYC"]
    assert json.loads((tmp_path / "segments.json").read_text()) == segments
    assert [s["commit"] for s in segments] == ["aaa1111", "aaa1111", "bbb2222+dirty"]
    assert all(len(s["started"]) == 19 for s in segments) and not list(tmp_path.glob("*.partial"))
    older = tmp_path / "older"  # a run begun by a quality.py without segments.json, resumed by this one
    older.mkdir()
    (older / "train.log").write_text("epoch 1\n")
    segments = record_segment(str(older), "ccc3333")
    assert distinct(segments, "commit") == ["unrecorded", "ccc3333"] and distinct(segments, "precision") == []


def test_training_precision_is_the_trainers_own():
    """The precision a protocol run records is the one the bundle resolves from the same configs and overrides (its
    parsed ``amp``/``amp_dtype``, the trainer's ``autocast_dtype``): float32 for amp on a CPU without native bf16."""
    from monai.bundle import ConfigParser

    from benchmarks.quality import CONFIGS, config_paths
    from monai_stlu.bundle.compare import machine_facts, method_files, training_precision
    from monai_stlu.utils import cpu_supports_bf16

    native = "bfloat16" if cpu_supports_bf16() else "float32"
    expected = {(): "float32", ("--amp", "true"): native, ("--amp", "false"): "float32",  # the protocol: float32
                ("--amp", "true", "--amp_dtype", "bf16"): "bfloat16",
                ("--amp", "false", "--amp_dtype", "bf16"): "float32",
                ("--amp", "true", "--amp_dtype", "float32"): "float32"}
    for override, precision in expected.items():
        parser = ConfigParser()
        parser.read_config(config_paths("cpu", "mean_teacher"))
        parser.update({k.lstrip("-"): v for k, v in zip(override[::2], override[1::2])})
        parsed = {k: str(parser.get_parsed_content(k)).lower() for k in ("amp", "amp_dtype")}
        assert parsed["amp"] == ("true" if "true" in override else "false"), (override, parsed)
        files = method_files(CONFIGS, "mean_teacher", "cpu")
        assert training_precision(files, list(override)) == precision, override
    facts = machine_facts("float32")
    assert facts["precision"] == "float32" and facts["threads"] == torch.get_num_threads() and facts["cpu"]


def test_cpu_name_tells_cpu_generations_apart():
    """Two machines this project ran on both call themselves ``AMD EPYC``: one AVX2-only, one with AVX-512 BF16, at
    speeds 2-4x apart. The name next to a speed figure carries the model name from ``/proc/cpuinfo``, the family and
    model numbers, the instruction set torch dispatches to and whether bf16 is native, each read independently here."""
    from monai_stlu.utils import cpu_name, cpu_supports_bf16

    name = cpu_name()
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability in name and name.endswith(("with native bf16)" if cpu_supports_bf16() else f"{capability})"))
    if os.path.isfile("/proc/cpuinfo"):
        block = open("/proc/cpuinfo").read().split("\n\n")[0]
        info = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()))
        assert name.startswith(info.get("model name", "")), name
        if "cpu family" in info:
            assert f"family {info['cpu family']} model {info['model']}" in name, name


def test_report_figures_tell_every_run_apart(tmp_path):
    """More runs than a colour cycle has colours: every run keeps a style of its own, and the overlay draws a row for
    every method (it used to zip the methods with seven colours and drop the rest without a word)."""
    import argparse

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    from benchmarks.quality import METHODS, line_styles, overlay
    from monai_stlu.data.synthetic import write_synthetic_la

    styles = line_styles(25)
    assert len(set(styles)) == 25 and styles[0] != styles[10] and styles[0][0] == styles[10][0]

    data = write_synthetic_la(str(tmp_path / "la"), num_train=0, num_test=2, shape=(32, 32, 16))
    cases = (tmp_path / "la" / "test.list").read_text().split()
    methods = list(METHODS[:12])
    runs = {}
    for i, method in enumerate(methods):
        kept = tmp_path / "archive" / f"{method}_seed0"  # the record; predictions stay in the work folder
        kept.mkdir(parents=True)
        rows = ["case,class,dice"] + [f"{case},1,{0.5 + i / 100}" for case in cases]
        (kept / "test_metrics.csv").write_text("\n".join(rows) + "\n")
        predictions = tmp_path / "work" / f"{method}_seed0" / "test" / "predictions"
        predictions.mkdir(parents=True)
        for case in cases:
            pred = np.zeros((32, 32, 16), np.uint8)
            pred[8:24, 8:24, 4:12] = 1
            nib.save(nib.Nifti1Image(pred, np.eye(4)), str(predictions / f"{case}_seg.nii.gz"))
        runs[method] = {0: str(kept)}
    runs["stlu_decoder"] = {0: runs["supervised"][0]}  # a tagged variant: not a row of its own
    (tmp_path / "archive" / "stlu_seed0").mkdir()  # an archived record whose work folder is gone: no row
    (tmp_path / "archive" / "stlu_seed0" / "test_metrics.csv").write_text("case,class,dice\n")
    runs["stlu"] = {0: str(tmp_path / "archive" / "stlu_seed0")}
    opts = argparse.Namespace(dataset_dir=data, test_list="test.list", work_dir=str(tmp_path / "work"))
    drawn = overlay(opts, runs, str(tmp_path), plt)
    assert drawn == sorted(methods) and (tmp_path / "overlay.png").stat().st_size > 0


def test_report_from_the_archive_outlives_the_work_folder(tmp_path):
    """A finished run is archived (per-case metrics, the validation curve read from its log, pseudo-label quality,
    segments, done.json); the report reads the archive, so it gives the same table once the work folder is gone; a
    record rebuilt from an earlier report (no log, its best validation in done.json) is a row like the others."""
    import json
    import shutil

    from benchmarks import quality
    from monai_stlu.data.synthetic import write_synthetic_la

    data = write_synthetic_la(str(tmp_path / "la"), num_train=0, num_test=2, shape=(32, 32, 16))
    cases = (tmp_path / "la" / "test.list").read_text().split()
    work, archive, res = tmp_path / "work", tmp_path / "archive", tmp_path / "res"
    run = work / "dtc_seed0"
    (run / "test").mkdir(parents=True)
    (run / "train").mkdir()
    (run / "test" / "metrics.csv").write_text("case,class,dice,jaccard,hd95_vox,asd_vox,hd95_mm,asd_mm\n" + "".join(
        f"{c},1,{d},0.5,3.0,1.0,2.0,0.5\n" for c, d in zip(cases, (0.6, 0.8))))
    (run / "test_without_largest_component").mkdir()  # DTC's reference keeps the largest component; without it:
    (run / "test_without_largest_component" / "metrics.csv").write_text(
        "case,class,dice,jaccard,hd95_vox,asd_vox,hd95_mm,asd_mm\n" + "".join(
            f"{c},1,{d},0.5,3.0,1.0,2.0,0.5\n" for c, d in zip(cases, (0.5, 0.7))))
    (run / "train.log").write_text(  # the evaluator's lines, every val_interval (5) epochs of 1 iteration each
        "x Epoch[1] Metrics -- val_mean_dice: 0.2500\nx Epoch[2] Metrics -- val_mean_dice: 0.4375\n"
        "x Epoch[3] Metrics -- val_mean_dice: 0.3125\n")
    (run / "train" / "pseudo_label_quality.csv").write_text("iteration,dice\n5,0.1\n10,0.2\n")
    (run / "segments.json").write_text('[{"commit": "abc1234", "started": null}]')
    (run / "done.json").write_text(json.dumps({"method": "dtc", "seed": 0, "override": ["--val_interval", "5"]}))
    lost = archive / "urpc_seed1"  # rebuilt from an earlier report's per-case table
    lost.mkdir(parents=True)
    (lost / "test_metrics.csv").write_text("case,dice,jaccard,hd95_vox,asd_vox,hd95_mm,asd_mm\n" + "".join(
        f"{c},0.7,0.5,3.0,1.0,2.0,0.5\n" for c in cases))
    (lost / "done.json").write_text(json.dumps({"method": "urpc", "seed": 1, "best_val_dice": 0.7463,
                                                "reconstructed": "from an earlier report"}))
    common = ["report", "--protocol", "cpu", "--dataset_dir", data, "--test_list", "test.list", "--work_dir", str(work),
              "--archive_dir", str(archive), "--results_dir", str(res)]
    quality.main(common)
    kept = archive / "dtc_seed0"
    assert (kept / "validation.csv").read_text().split() == ["iteration,dice", "5,0.25", "10,0.4375", "15,0.3125"]
    for src, name in (("test/metrics.csv", "test_metrics.csv"), ("train/pseudo_label_quality.csv",
                      "pseudo_label_quality.csv"), ("segments.json", "segments.json"), ("done.json", "done.json"),
                      ("test_without_largest_component/metrics.csv", "test_metrics_without_largest_component.csv")):
        assert (kept / name).read_text() == (run / src).read_text()
    assert not list(archive.rglob("*.partial"))
    summary = (res / "summary.md").read_text()
    assert "| dtc | 1 | 70.00 ± 10.00 |" in summary
    assert summary.splitlines()[2].endswith("| 70.00 | 43.75 | 60.00 ± 10.00 |")  # also without the post-processing
    assert "| urpc | 1 | 70.00 ± 0.00 |" in summary and "| 74.63 | (not post-processed) |" in summary
    assert not (res / "overlay.png").exists()  # no run has predictions in a work folder: no picture
    shutil.rmtree(work)
    (res / "summary.md").unlink()
    quality.main(common)
    assert (res / "summary.md").read_text() == summary


@pytest.mark.parametrize("net_cls", ["vnet", "cct", "sdf"])
def test_head_can_score_foreground_tells_a_head_that_never_predicts_foreground(net_cls):
    from benchmarks.probes import head_can_score_foreground
    from monai_stlu.networks.nets import CCTVNet, SDFVNet

    torch.manual_seed(0)
    net = {"vnet": VNet, "cct": CCTVNet, "sdf": SDFVNet}[net_cls](n_filters=4)
    head = net.head if net_cls == "vnet" else net.backbone.head
    # the background row: SDFVNet's one-channel head scores the foreground against a background fixed at 0
    w0, b0 = (torch.zeros_like(head.weight[0]), torch.zeros(())) if net_cls == "sdf" else (head.weight[0], head.bias[0])
    fg = head.weight.shape[0] - 1
    x = torch.randn(3, 1, 32, 32, 16) * 3
    with torch.no_grad():
        head.weight[fg] = w0 - torch.rand_like(w0) - 0.01  # every foreground weight lower
        head.bias[fg] = b0 - 0.1
        assert head_can_score_foreground(net) is False
        assert not (net.eval()(x).argmax(1) > 0).any()  # checked on the network itself: no foreground anywhere
        head.bias[fg] = b0 + 0.1  # a higher foreground bias wins where the features vanish
        assert head_can_score_foreground(net) is True
        head.bias[fg] = b0 - 0.1
        head.weight[fg, 2] = w0[2] + 50.0  # one channel favouring the foreground
        assert head_can_score_foreground(net) is True
        assert (net.eval()(x).argmax(1) > 0).any()
    assert head_can_score_foreground(torch.nn.Sequential(torch.nn.ReLU())) is None


def test_protocol_runs_know_which_evaluations_keep_the_largest_component():
    """The runs whose reference evaluates with the largest connected component (BCP, DTC, SS-Net) are evaluated a
    second time without it; an override turns it off for a run."""
    from benchmarks.quality import CONFIGS
    from monai_stlu.bundle.compare import method_files, resolved
    from monai_stlu.utils import as_bool

    def keeps_largest_component(method, args):
        return as_bool(resolved(method_files(CONFIGS, method, "cpu"), args, "largest_component")[0])

    methods = ("bcp", "dtc", "ssnet", "sassnet", "mean_teacher", "stlu")
    kept = {m for m in methods if keeps_largest_component(m, [])}
    assert kept == {"bcp", "dtc", "ssnet"}
    assert not keeps_largest_component("dtc", ["--largest_component", "false"])


def test_protocol_runs_start_only_if_they_can_finish_by_the_deadline(tmp_path, capsys):
    """``quality.py run --finish_by``: a run expected (from the longest archived run of its method and tag, or from
    ``--minutes``) to end after the deadline is not started, so no session leaves a half-trained run behind; bad
    deadlines and estimates are refused in one sentence."""
    import datetime
    import json

    from benchmarks import quality
    from monai_stlu.data.synthetic import write_synthetic_la

    data = write_synthetic_la(str(tmp_path / "la"), num_train=2, num_test=1, shape=(16, 16, 8))
    archive, work = tmp_path / "archive", tmp_path / "work"
    for seed, minutes in ((0, 41.5), (1, 50.0)):
        (archive / f"dtc_x_seed{seed}").mkdir(parents=True)
        (archive / f"dtc_x_seed{seed}" / "done.json").write_text(
            json.dumps({"method": "dtc", "train_minutes_all_segments": minutes, "eval_minutes": 1.0}))
    opts = quality.arguments(["run"]).parse_args(["run", "--tag", "_x", "--work_dir", str(work), "--archive_dir",
                                                  str(archive)])
    opts.num_labeled = None
    assert quality.expected_minutes(opts, "dtc", {}) == 51.0  # the longest, with its evaluation
    assert quality.expected_minutes(opts, "dtc", {"dtc": 7.0}) == 7.0
    assert quality.expected_minutes(opts, "urpc", {}) is None

    soon = (datetime.datetime.now() + datetime.timedelta(minutes=20)).isoformat(timespec="minutes")
    common = ["run", "--seeds", "2", "--tag", "_x", "--dataset_dir", data, "--train_list", "train.list",
              "--work_dir", str(work), "--archive_dir", str(archive), "--finish_by", soon]
    quality.main([*common, "--methods", "dtc"])
    assert f"dtc_x seed 2: expected to take 51 min, would end after {soon}; not started" in capsys.readouterr().out
    quality.main([*common, "--methods", "urpc", "--minutes", "urpc=90"])
    assert "urpc_x seed 2: expected to take 90 min" in capsys.readouterr().out
    assert not work.exists()  # nothing started

    assert quality.deadline("10:30", now=datetime.datetime(2026, 12, 7, 9, 0).timestamp()) == \
        datetime.datetime(2026, 12, 7, 10, 30).timestamp()
    assert quality.deadline("2026-12-08T01:15") == datetime.datetime(2026, 12, 8, 1, 15).timestamp()
    with pytest.raises(SystemExit, match="--finish_by 'tonight': give a time as HH:MM"):
        quality.main([*common[:-1], "tonight", "--methods", "dtc"])
    with pytest.raises(SystemExit, match="--minutes 'dtc=long': give method=minutes pairs"):
        quality.main([*common, "--methods", "dtc", "--minutes", "dtc=long"])


def test_the_archive_table_pairs_runs_by_the_current_method_files(tmp_path):
    """Which supervised run shares a method's recipe is a label, not a training setting: a run archived when SS-Net was
    paired with UA-MT's recipe is paired with its own (``supervised_ssnet``, added since) by the table, and its gain
    is taken against that run's cases."""
    import json

    from benchmarks import quality

    archive, res = tmp_path / "archive", tmp_path / "res"
    cases = ["A", "B", "C"]
    for method, dice, matched in (("supervised_uamt", (0.5, 0.5, 0.5), "supervised_uamt"),
                                  ("supervised_ssnet", (0.7, 0.7, 0.7), "supervised_ssnet"),
                                  ("ssnet", (0.8, 0.8, 0.8), "supervised_uamt")):
        run = archive / f"{method}_half_seed0"
        run.mkdir(parents=True)
        (run / "test_metrics.csv").write_text("case,class,dice,jaccard,hd95_vox,asd_vox,hd95_mm,asd_mm\n" + "".join(
            f"{c},1,{d},0.5,3.0,1.0,2.0,0.5\n" for c, d in zip(cases, dice)))
        (run / "validation.csv").write_text("iteration,dice\n2,0.5\n4,0.6\n")
        metrics = {"dice": sum(dice) / 3, "jaccard": 0.5, "hd95_vox": 3.0, "asd_vox": 1.0, "hd95_mm": 2.0,
                   "asd_mm": 0.5}
        (run / "done.json").write_text(json.dumps({
            "method": method, "seed": 0, "matched_supervised": matched, "commit": "abc", "precisions": ["float32"],
            "train_minutes": 1.0, "val_interval": 2, "max_iterations": 4, "largest_component": False,
            "test": metrics}))
    quality.main(["table", "--archive_dir", str(archive), "--tag", "_half", "--results_dir", str(res)])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in (res / "comparison.md").read_text().splitlines()
            if line.startswith("| ")}
    assert "| `supervised_ssnet` |" in rows["ssnet"] and "+10.00" in rows["ssnet"], rows["ssnet"]
    assert "| `supervised_uamt` |" in rows["supervised_uamt"]
