"""Bad input stops with an error that names the file (or key) and the problem, before training where possible, and a
run killed while saving leaves the previous checkpoint intact and resumes. (More data errors: tests/test_data.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_utils import KILLING_SAVE, config_list, run_bundle
from conftest import REPO_ROOT
from monai_stlu.data import ValidateSegmentationd, json_split, h5_split, write_synthetic_la
from monai_stlu.utils import check_settings

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"


@pytest.fixture()
def synth(tmp_path):
    return write_synthetic_la(str(tmp_path / "la"), num_train=8, num_test=2, shape=(48, 48, 32))


def case_path(root, case_id):
    return os.path.join(root, "2018LA_Seg_Training Set", case_id, "mri_norm2.h5")


def test_empty_dataset_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No LA data at '.*empty' \(no train.list there\).*--dataset_dir"):
        h5_split(str(tmp_path / "empty"))


def test_truncated_h5(synth):
    path = case_path(synth, "SYNTH0003")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(ValueError, match="SYNTH0003.*not a readable HDF5"):
        h5_split(synth, num_labeled=2, num_val=1)


def test_labeled_count_out_of_range(synth):
    with pytest.raises(ValueError, match="num_labeled must be a whole number of labeled cases, 1 or more, got 0"):
        h5_split(synth, num_labeled=0, num_val=1)
    with pytest.raises(ValueError, match=r"train.list: 8 training cases cannot give 9 labeled \+ 0 validation"):
        h5_split(synth, num_labeled=9, num_val=0)
    # a command line's text: digits count, anything else is named (was int()'s "invalid literal ...")
    assert len(h5_split(synth, num_labeled="3", num_val=np.int64(1))["labeled"]) == 3
    for kwargs, message in (({"num_labeled": "abc"}, "num_labeled must be a whole number of labeled cases, 1 or more, "
                                                     "got 'abc'."),
                            ({"num_val": -1}, "num_val must be a whole number of validation cases, 0 or more, got -1."),
                            ({"num_labeled": 2.5}, "num_labeled must be a whole number of labeled cases, 1 or more, "
                                                   "got 2.5.")):
        with pytest.raises(ValueError, match=re.escape(message)):
            h5_split(synth, **{"num_labeled": 2, "num_val": 1, **kwargs})


def test_settings_refuse_a_learning_rate_that_cannot_train():
    check_settings([16, 16, 8], learning_rate=1e-4)
    check_settings([16, 16, 8], learning_rate=1)
    for value in (0, -1, float("nan"), float("inf"), "abc", True):
        with pytest.raises(ValueError, match=re.escape(f"learning_rate must be a number above 0, got {value!r}.")):
            check_settings([16, 16, 8], learning_rate=value)
    with pytest.raises(ValueError, match="val_interval must be a whole number of iterations between validations"):
        check_settings([16, 16, 8], val_interval="x")


def test_datalist_json_problems(tmp_path):
    img = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), str(img))
    cases = {
        "no_training.json": ({"validation": []}, "needs a 'training' list"),
        "no_image.json": ({"training": [{"label": "a.nii.gz"}]}, "entry 0 of 'training' has no 'image'"),
        "missing_file.json": ({"training": [{"image": "b.nii.gz", "label": "a.nii.gz"}]}, "b.nii.gz does not exist"),
        "no_labeled.json": ({"training": [{"image": "a.nii.gz"}]}, "no labeled training case"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(content))
        with pytest.raises((ValueError, FileNotFoundError), match=f"{name}.*{message}"):
            json_split(str(path))
    broken = tmp_path / "broken.json"
    broken.write_text("{'training': ")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        json_split(str(broken))


def test_image_of_other_dimensions_or_channels():
    from monai.data import MetaTensor

    four_d = MetaTensor(torch.zeros(4, 8, 8, 8), meta={"filename_or_obj": "/data/cine.nii.gz"})
    with pytest.raises(ValueError, match="cine.nii.gz: the image has 4 channels .* takes 1"):
        ValidateSegmentationd(in_channels=1)({"image": four_d})
    two_d = MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "/data/slice.nii.gz"})
    with pytest.raises(ValueError, match="slice.nii.gz: .* has 2 spatial dimensions; this network takes 3-D"):
        ValidateSegmentationd(in_channels=1)({"image": two_d})


def test_inf_in_image_is_named():
    from monai.data import MetaTensor

    img = torch.zeros(1, 4, 4, 4)
    img[0, 1, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="case7.h5: the image has 1 NaN/Inf voxels"):
        ValidateSegmentationd()({"image": MetaTensor(img, meta={"filename_or_obj": "case7.h5"})})


@pytest.mark.slow
@pytest.mark.long  # the quick suite trains, validates and resumes on such volumes in test_reliability.py (48x48x32
# cases, the same crops and windows)
def test_volumes_smaller_than_the_patch_are_padded(synth, tmp_path):
    """48x48x32 volumes with 64x64x48 crops and windows: padded, trained, validated."""
    run_bundle("run", "training", "--config_file", config_list("stlu_la", "train.json", "quick.json"),
               "--dataset_dir", synth, "--bundle_root", str(tmp_path), "--num_val", "1", "--num_labeled", "4", "--progress", "false",
               "--max_iterations", "2", "--val_interval", "2")
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.slow
@pytest.mark.long  # the quick suite: `check` refuses a 4-D file, inference refuses NaN and a truncated model
def test_inference_refuses_a_4d_file_and_a_non_image(tmp_path):
    from monai_stlu.networks import STLUNet

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.save(STLUNet(n_filters=8).eval().state_dict(), root / "models" / "model.pt")
    cine = tmp_path / "in" / "cine.nii.gz"
    cine.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32, 5), np.float32), np.eye(4)), str(cine))
    args = ["run", "--config_file", str(CONFIGS / "inference.json"), "--bundle_root", str(root), "--n_filters", "8",
            "--patch_size", "[32,32,32]", "--eval_stride", "[16,16,16]", "--progress", "false"]
    proc = run_bundle(*args, "--dataset_dir", str(cine), check=False)
    assert proc.returncode != 0 and "cine.nii.gz: the image has 5 channels" in proc.stderr
    text = tmp_path / "in2" / "notes.nii.gz"
    text.parent.mkdir()
    text.write_text("not an image")
    proc = run_bundle(*args, "--dataset_dir", str(text), check=False)
    assert proc.returncode != 0 and proc.stderr.splitlines()[-1].startswith(f"{text}: not a readable NIfTI file (")
    assert not (root / "eval").exists() or not list((root / "eval").rglob("*.nii.gz"))


KILL_SCRIPT = KILLING_SAVE + textwrap.dedent(
    """
    import sys
    from ignite.engine import Engine
    from monai_stlu.handlers import AtomicCheckpointSaver

    folder, kill_at = sys.argv[1], int(sys.argv[2])
    net = torch.nn.Linear(64, 64)
    engine = Engine(lambda e, b: torch.nn.init.normal_(net.weight))
    saver = AtomicCheckpointSaver(folder, {"network": net, "trainer": engine}, save_interval=1, n_saved=2)
    saver.attach(engine)
    patch_torch_save(kill_at)
    engine.run(range(2), max_epochs=4)
    """
)


def test_killed_while_saving_leaves_the_previous_checkpoint_and_resumes(tmp_path):
    from ignite.engine import Engine

    from monai_stlu.handlers import ResumeCheckpointLoader

    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    folder = tmp_path / "models"
    proc = subprocess.run([sys.executable, str(script), str(folder), "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # SIGKILL while writing the third checkpoint
    names = sorted(os.listdir(folder))
    # ignite drops the oldest of the n_saved=2 files before writing the next: the newest complete one is intact
    assert names == [".checkpoint_epoch=3.pt.partial", "checkpoint_epoch=2.pt"], names
    good = torch.load(folder / "checkpoint_epoch=2.pt", weights_only=True)
    net = torch.nn.Linear(64, 64)
    engine = Engine(lambda e, b: None)
    ResumeCheckpointLoader(str(folder), {"network": net, "trainer": engine}).attach(engine)
    engine.run(range(2), max_epochs=3)  # resumes at epoch 2 of 3
    assert engine.state.epoch == 3 and engine.state.iteration == 6
    torch.testing.assert_close(net.weight, good["network"]["weight"])  # the no-op steps kept the resumed weights
    assert ".checkpoint_epoch=3.pt.partial" not in os.listdir(folder)  # the half-written file was cleaned up


def test_fewer_labeled_cases_than_a_batch_is_named():
    from monai.data import DataLoader, Dataset

    from conftest import sphere_cases
    from monai_stlu.engines import SemiSupervisedTrainer, SupervisedMethod
    from monai_stlu.networks import VNet

    net = VNet(n_filters=2)
    loader = DataLoader(Dataset(sphere_cases(1, size=16)), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="1 labeled cases for batches of 2"):
        SemiSupervisedTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), lr=0.1), SupervisedMethod())
