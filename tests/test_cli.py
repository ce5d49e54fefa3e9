"""The command line users bring from nnU-Net: ``train`` (printing the bundle call it makes), ``predict -i -o`` and
``evaluate -p -l``, run as users run them (``python -m monai_stlu``, and the ``monai_stlu`` console script)."""

from __future__ import annotations

import ast
import csv
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest

from monai_stlu.data import write_synthetic_la

SMALL = ["--n_filters", "4", "--patch_size", "[32,32,32]", "--eval_stride", "[16,16,16]", "--progress", "false",
         "--amp", "false"]  # the inference keys; training takes a validation stride too
TRAIN_SMALL = SMALL + ["--val_stride", "[16,16,16]"]


def cli(*args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("STLU_LA_DATA", None)
    proc = subprocess.run([sys.executable, "-m", "monai_stlu", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=env)
    if check and proc.returncode:
        raise AssertionError(f"monai_stlu {' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return proc


def cli_importing(args, modules) -> subprocess.CompletedProcess:
    """``monai_stlu ARGS`` in a fresh interpreter that prints, last, which of ``modules`` the command imported."""
    script = ("import sys\nfrom monai_stlu.cli import main\nsys.argv = ['monai_stlu', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              f"print('imported:', sorted(m for m in {tuple(modules)!r} if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_command_list_answers_without_importing_monai():
    """``monai_stlu --help`` (and no command, and a mistyped one) lists every command and the ``convert`` group without
    importing MONAI, torch or ITK: a first look at the tool costs no 10 s of imports."""
    for args in (["--help"], [], ["nope"]):
        proc = cli_importing(args, ("monai", "torch", "itk"))
        out = proc.stdout + proc.stderr
        assert "imported: []" in proc.stdout.splitlines(), (args, out[-2000:])
        for name in ("convert", "synth", "check", "train", "predict", "export", "evaluate", "plot"):
            assert name in out, (args, name)
    # the group itself still lists and documents its converters
    listed = cli("convert", "--help")
    assert all(f"     {k}\n" in listed.stdout + listed.stderr for k in ("la", "pancreas", "brats", "nifti"))


def test_synth_writes_its_cases_without_importing_monai(tmp_path):
    """``monai_stlu synth``, the README demo's first step, writes h5 cases with h5py and numpy alone (no MONAI, torch
    or ITK: about 2 s, not 10 s of imports), and what it wrote is what the bundles' reader reads."""
    from monai_stlu.data import H5Reader, read_h5_dataset

    out = tmp_path / "la"
    proc = cli_importing(["synth", out, "--num_train", 2, "--num_test", 1, "--shape", "[24,20,16]"],
                         ("monai", "torch", "itk"))
    assert "imported: []" in proc.stdout.splitlines(), (proc.stdout + proc.stderr)[-2000:]
    ids = (out / "train.list").read_text().split()
    assert len(ids) == 2 and len((out / "test.list").read_text().split()) == 1
    case = out / "2018LA_Seg_Training Set" / ids[0] / "mri_norm2.h5"
    reader = H5Reader("image")
    image, _ = reader.get_data(reader.read(str(case)))
    assert image.shape == (24, 20, 16) and image.dtype == np.float32
    label = read_h5_dataset(str(case), "label")
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1} and label.any()


def test_predict_and_export_dry_runs_read_the_model_record_without_importing_monai(tmp_path):
    """``predict``/``export --dry_run`` rebuild the network's settings from the model file's record (the method's
    override file, its filters and patch) and answer after importing torch alone, not MONAI's 10 s of imports. The
    model file is written from a plain ``dict``, which cannot carry metadata itself."""
    import torch

    from monai_stlu.utils import attach_model_record, read_model_record

    record = {"method": "MeanTeacherMethod", "settings": {"n_filters": 8, "patch_size": [64, 64, 48]}}
    torch.save(attach_model_record({"w": torch.zeros(2)}, record), tmp_path / "model.pt")
    assert read_model_record(str(tmp_path / "model.pt")) == record
    (tmp_path / "case.h5").write_bytes(b"")
    for args in (["predict", "-i", tmp_path / "case.h5", "-o", tmp_path / "out"], ["export", "-o", tmp_path / "m.ts"]):
        proc = cli_importing([*args, "--model", tmp_path / "model.pt", "--dry_run"], ("monai", "ignite", "itk"))
        out = proc.stdout + proc.stderr
        assert "imported: []" in proc.stdout.splitlines(), (args, out[-2000:])
        argv = shlex.split(proc.stdout.replace("\\\n", " "))
        configs = ast.literal_eval(argv[argv.index("--config_file") + 1])
        assert configs[-1].endswith("methods/mean_teacher.json"), (args, configs)
        assert argv[argv.index("--n_filters") + 1] == "8" and argv[argv.index("--patch_size") + 1] == "[64, 64, 48]"


def test_train_prints_its_bundle_call_and_refuses_unknown_methods(tmp_path):
    out = cli("train", "--bundle", "stlu_brats", "--method", "cps", "--num_labeled", "50", "--dataset_dir", tmp_path,
              "--max_iterations", "300", "--dry_run").stdout
    lines = out.strip().splitlines()
    assert lines[0].endswith("-m monai.bundle run training \\") and all(line.endswith(" \\") for line in lines[:-1])
    assert "    --num_labeled 50 \\" in lines and f"    --dataset_dir {tmp_path} \\" in lines
    argv = shlex.split(out.replace("\\\n", " "))  # what the shell makes of the printed command
    configs = ast.literal_eval(argv[argv.index("--config_file") + 1])
    assert [c.split("configs/")[1] for c in configs] == ["train.json", "methods/cps.json"]
    assert argv[argv.index("--max_iterations") + 1] == "300" and argv[1:5] == ["-m", "monai.bundle", "run", "training"]
    bad = cli("train", "--method", "nope", "--dry_run", check=False)
    assert bad.returncode != 0 and "method 'nope' is not one of" in bad.stderr + bad.stdout
    assert "Train one method of a bundle" in cli("train", "--help").stdout + cli("train", "--help").stderr


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """nnU-Net's workflow once per module: ``train`` a small supervised model, ``predict`` the test cases from their
    layout folders, ``evaluate`` the predictions; the tests below read what each step wrote."""
    tmp_path = tmp_path_factory.mktemp("cli")
    data = write_synthetic_la(str(tmp_path / "la"), num_train=6, num_test=2, shape=(48, 48, 40))
    trained = cli("train", "--method", "supervised", "--quick", "--dataset_dir", data, "--output", tmp_path / "run",
                  "--num_labeled", "2", "--num_val", "1", "--max_iterations", "2", "--val_interval", "2",
                  "--plot_progress", "true", "--output_subdir", "sup_a", *TRAIN_SMALL).stdout
    cases = (Path(data) / "test.list").read_text().split()
    inputs = tmp_path / "inputs"
    for case in cases:  # the test cases' h5 files, in their layout folders
        shutil.copytree(Path(data) / "2018LA_Seg_Training Set" / case, inputs / case)
    # the model file records its network (supervised's VNet, 4 filters, 32^3 windows): no training flags needed
    model = tmp_path / "run" / "models" / "sup_a" / "model.pt"  # the summary follows an output_subdir override
    predicted = cli("predict", "-i", inputs, "-o", tmp_path / "pred", "--model", model, "--eval_stride", "[16,16,16]",
                    "--progress", "false", "--amp", "false").stdout
    scored = cli("evaluate", "-p", tmp_path / "pred", "-l", data, "-o", tmp_path / "scores").stdout
    return SimpleNamespace(tmp=tmp_path, data=data, cases=cases, model=model, run_dir=tmp_path / "run" / "eval" / "sup_a",
                           trained=trained, predicted=predicted, scored=scored)


def test_train_predict_evaluate(cli_run):
    tmp_path, data, cases, model = cli_run.tmp, cli_run.data, cli_run.cases, cli_run.model
    assert model.is_file() and f"model: {model}" in cli_run.trained, cli_run.trained[-2000:]
    assert "best validation Dice: " in cli_run.trained
    assert "--n_filters 4" in cli_run.predicted and "methods/supervised.json" in cli_run.predicted
    preds = sorted((tmp_path / "pred").rglob("*_seg.nii.gz"))
    assert len(preds) == len(cases)
    assert cli_run.predicted.splitlines()[-1] == f"segmentations: {len(cases)} in {tmp_path / 'pred'}"
    assert "class 1 dice:" in cli_run.scored
    assert cli_run.scored.splitlines()[-1] == (f"metrics: {tmp_path / 'scores' / 'metrics.csv'} and "
                                               f"{tmp_path / 'scores' / 'metrics_summary.csv'} ({len(cases)} cases)")
    with open(tmp_path / "scores" / "metrics.csv") as f:
        rows = {r["case"]: float(r["dice"]) for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(cases)
    for case in cases:  # Dice against an independent computation from the files
        pred = np.asanyarray(nib.load(str(tmp_path / "pred" / case / "mri_norm2_seg.nii.gz")).dataobj) > 0
        with h5py.File(Path(data) / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as f:
            label = f["label"][...] > 0
        expected = 2 * (pred & label).sum() / (pred.sum() + label.sum()) if pred.sum() + label.sum() else 1.0
        assert rows[case] == pytest.approx(expected, abs=1e-6)
    # pictures of the run: curves from its TensorBoard events (the learning rate logged each iteration), and the
    # per-case chart of an evaluation written into it
    from monai_stlu.utils import read_scalars

    assert (cli_run.run_dir / "progress.png").read_bytes()[:4] == b"\x89PNG"  # redrawn during training
    scalars = read_scalars(str(cli_run.run_dir))
    assert [s for s, _ in scalars["lr"]] == [1, 2] and all(v > 0 for _, v in scalars["lr"])
    assert [s for s, _ in scalars["val_mean_dice"]] == [2]  # at the iteration it was measured, as the losses
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = set()
    for events in cli_run.run_dir.glob("runs/events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        images |= set(acc.Tags()["images"])
    assert len(images) >= 3, images  # the validation overlay: image, label and prediction
    assert (tmp_path / "scores" / "per_case_dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # evaluate draws it
    missing = cli("evaluate", "-p", tmp_path / "pred", "-l", tmp_path / "inputs" / cases[0], check=False)
    assert missing.returncode != 0 and "no label for the predictions" in missing.stderr + missing.stdout
    wrong = cli("evaluate", "-p", tmp_path / "pred", "-l", tmp_path / "no_labels", check=False)  # a mistyped path
    assert wrong.returncode != 0
    assert wrong.stderr.strip().splitlines()[-1] == f"{tmp_path / 'no_labels'}: no such folder of labels to evaluate."


@pytest.mark.long  # four more commands; the bundle's own export parity is in the quick suite (test_bundle_la.py)
def test_plot_and_export_the_trained_run(cli_run):
    tmp_path, model = cli_run.tmp, cli_run.model
    cli("plot", cli_run.run_dir, "-o", tmp_path / "pics", "--metrics", tmp_path / "scores" / "metrics.csv")
    for name in ("progress.png", "per_case_dice.png"):
        assert (tmp_path / "pics" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cli("plot", tmp_path / "scores", "-o", tmp_path / "pics2")  # the folder evaluate wrote: no events, a chart
    assert sorted(p.name for p in (tmp_path / "pics2").iterdir()) == ["per_case_dice.png"]
    # export from the record too: TorchScript and ONNX (any batch) equal the eager network
    import onnxruntime
    import torch

    from monai_stlu.networks import VNet

    net = VNet(n_filters=4, dropout=True).eval()
    net.load_state_dict(torch.load(model, weights_only=True))
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        expected = net(x).numpy()
    cli("export", "--model", model, "-o", tmp_path / "new_folder" / "m.ts")  # the folder is made
    np.testing.assert_allclose(torch.jit.load(str(tmp_path / "new_folder" / "m.ts"))(x).detach().numpy(), expected,
                               atol=1e-5)
    cli("export", "--model", model, "-o", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4)


def test_console_script():
    script = shutil.which("monai_stlu") or str(Path(sys.executable).with_name("monai_stlu"))
    proc = subprocess.run([script, "predict", "--help"], capture_output=True, text=True, timeout=120)
    assert "Segment a file or a folder" in proc.stdout + proc.stderr


def test_synth_then_check(tmp_path):
    out = cli("synth", tmp_path / "la", "--num_train", "6", "--num_test", "2", "--shape", "[32,32,24]").stdout
    assert "wrote 6 training and 2 test cases in the stlu_la layout" in out
    checked = cli("check", tmp_path / "la", "--num_labeled", "2", "--num_val", "1").stdout
    assert "labeled: 2 of 2 cases OK" in checked and "test: 2 of 2 cases OK" in checked
    broken = next((tmp_path / "la").rglob("*.h5"))
    broken.write_bytes(b"not an h5 file")
    bad = cli("check", tmp_path / "la", "--num_labeled", "2", "--num_val", "1", check=False)
    assert bad.returncode != 0 and str(broken) in bad.stdout + bad.stderr


@pytest.mark.long  # the BraTS layout itself is written and trained on in the quick suite (test_bundle_datasets.py)
def test_synth_writes_another_bundles_layout(tmp_path):
    cli("synth", tmp_path / "brats", "--num_train", "3", "--num_test", "1", "--shape", "[16,16,16]",
        "--bundle", "stlu_brats")
    assert sorted(p.name for p in (tmp_path / "brats").iterdir()) == ["data", "test.txt", "train.txt", "val.txt"]
