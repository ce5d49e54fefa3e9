"""Nothing lost, nothing hangs, and the last line says what is wrong (issue: killed saves, bad cases found while
caching, two runs in one folder, buried messages). Every case runs the user's own command in a subprocess and checks
the exit status, the last line of the output and what is on disk afterwards. The table of these cases is in
bundles/stlu_la/docs/README.md ("When something is wrong")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_utils import KILLING_SAVE, config_list, last_line, run_bundle
from conftest import REPO_ROOT
from monai_stlu.data import write_synthetic_la
from monai_stlu.utils import RunLock, RunLockedError, explain

QUICK = config_list("stlu_la", "train.json", "quick.json")


def last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_la(str(tmp_path_factory.mktemp("la") / "la"), num_train=8, num_test=2, shape=(48, 48, 32))


def case_file(root, case_id):
    return os.path.join(root, "2018LA_Seg_Training Set", case_id, "mri_norm2.h5")


def train_args(synth, root, *extra):
    return ("run", "training", "--config_file", QUICK, "--dataset_dir", str(synth), "--bundle_root", str(root),
            "--num_val", "1", "--num_labeled", "2", "--progress", "false", *extra)


def test_explain_finds_the_project_sentence_under_wrappers():
    from monai_stlu.data import ValidateSegmentationd

    try:
        try:
            try:
                ValidateSegmentationd()({"image": torch.full((1, 4, 4, 4), 3.0)})
            except ValueError as e:
                raise RuntimeError("applying transform <monai.transforms.compose.Compose object at 0x7f>") from e
        except RuntimeError as e:
            raise RuntimeError("Failed to instantiate component 'monai.data.dataset.CacheDataset'") from e
    except RuntimeError as outer:
        assert explain(outer) == "image: the image is blank (every voxel is 3): a failed export or conversion?"
    # a foreign error keeps its type; a full disk is said in words
    assert explain(KeyError("x")) == "KeyError: x"
    assert explain(OSError(28, "No space left on device", "/d/model.pt")).startswith(
        "No space left on the device while writing /d/model.pt")


def test_run_lock_names_the_holder_and_takes_over_a_dead_one(tmp_path, caplog):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = RunLock(str(tmp_path / "models"))
        with open(_mk(lock.path), "x") as f:
            json.dump({"pid": sleeper.pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00",
                       "command": "python -m monai.bundle run training"}, f)
        with pytest.raises(RunLockedError, match=rf"models is in use by another run \(PID {sleeper.pid} on .*delete"):
            lock.acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.acquire()  # the holder is gone: taken over
    assert "taking over the lock of a run that is gone" in caplog.text
    assert json.load(open(lock.path))["pid"] == os.getpid()
    assert RunLock(str(tmp_path / "models")).acquire().held  # the same process may take it again
    lock.release()
    assert not os.path.exists(lock.path)


def _mk(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


@pytest.mark.slow
def test_a_second_run_into_a_locked_folder_refuses_and_a_stale_lock_is_taken_over(synth, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lock = _mk(str(tmp_path / "models" / ".run.lock"))
    with open(lock, "w") as f:
        json.dump({"pid": sleeper.pid, "host": socket.gethostname(), "started": "now", "command": "another run"}, f)
    try:
        proc = run_bundle(*train_args(synth, tmp_path, "--max_iterations", "2", "--val_interval", "2"), check=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"{tmp_path / 'models'} is in use by another run (PID {sleeper.pid}"), last_line(proc)
    assert sorted(os.listdir(tmp_path / "models")) == [".run.lock"]  # nothing cached, trained or written
    # the holder is gone now: the same command takes the lock over, trains, and gives it back. The test list names a
    # missing case, which training does not read
    with open(os.path.join(synth, "test.list"), "a") as f:
        f.write("MISSING0001\n")
    try:
        proc = run_bundle(*train_args(synth, tmp_path, "--max_iterations", "2", "--val_interval", "2"), check=False)
    finally:
        lines = open(os.path.join(synth, "test.list")).read().splitlines()
        open(os.path.join(synth, "test.list"), "w").write("\n".join(lines[:-1]) + "\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "taking over the lock of a run that is gone" in proc.stdout + proc.stderr
    assert (tmp_path / "models" / "model.pt").is_file() and not (tmp_path / "models" / ".run.lock").exists()


KILL_WRAPPER = KILLING_SAVE + textwrap.dedent(
    """
    # runs `python -m monai.bundle ...` with every validation counted as a new best (so model.pt is written at each
    # one) and a SIGKILL in the middle of the n-th write of model.pt
    import runpy, sys
    from ignite.handlers import Checkpoint

    Checkpoint._compare_fn = lambda self, new: True
    patch_torch_save(int(os.environ["KILL_AT_MODEL_WRITE"]), lambda path: path.endswith(".model.pt.partial"),
                     os.environ.get("SAVE_ERROR"))
    sys.argv = [os.path.join(os.path.dirname(__import__("monai.bundle").bundle.__file__), "__main__.py")] + sys.argv[1:]
    runpy.run_module("monai.bundle", run_name="__main__")
    """
)


@pytest.mark.slow
def test_a_kill_while_the_best_model_is_saved_keeps_model_pt_and_the_run_resumes(synth, tmp_path):
    wrapper = tmp_path / "kill_in_save.py"
    wrapper.write_text(KILL_WRAPPER)
    args = train_args(synth, tmp_path, "--max_iterations", "6", "--val_interval", "2")
    env = dict(os.environ, KILL_AT_MODEL_WRITE="2", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(wrapper), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed inside the second write of model.pt
    models = tmp_path / "models"
    assert ".model.pt.partial" in os.listdir(models)
    first_best = torch.load(models / "model.pt", weights_only=True)  # the first best model is still there, whole
    assert "backbone.head.weight" in first_best
    # a full disk at the next best-model save: said as such, naming the file, and the model on disk stays whole
    full = dict(env, SAVE_ERROR="[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                                "data/0: file write failed", KILL_AT_MODEL_WRITE="1")
    proc = subprocess.run([sys.executable, str(wrapper), *args], cwd=REPO_ROOT, env=full, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"{models / 'model.pt'} could not be written: no space left on the device ("), \
        last_line(proc)
    assert torch.load(models / "model.pt", weights_only=True).keys() == first_best.keys()
    # the same command again resumes (the restored best-model record names model.pt) and finishes
    proc = run_bundle(*args, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr and ".model.pt.partial" not in os.listdir(models)
    assert torch.load(models / "model.pt", weights_only=True).keys() == first_best.keys()


@pytest.mark.slow
def test_a_bad_case_found_while_caching_exits_promptly(synth, tmp_path):
    bad = tmp_path / "la"
    write_synthetic_la(str(bad), num_train=8, num_test=2, shape=(48, 48, 32))
    with h5py.File(case_file(bad, "SYNTH0001"), "r+") as f:  # a labeled case
        label = f["label"][...]
        label[0, 0, 0] = 255
        f["label"][...] = label
    # the old code hung for good here: the subprocess timeout (TimeoutExpired fails the test) is the bound, not a
    # wall-clock figure that a loaded CI runner's 10 s of imports could cross
    proc = run_bundle(*train_args(bad, tmp_path / "b", "--num_workers", "2"), check=False, timeout=180)
    assert proc.returncode == 1
    assert last_line(proc) == f"{case_file(bad, 'SYNTH0001')}: label values [255] are outside the classes 0..1."
    assert not list((tmp_path / "b" / "models").glob("*.pt")) and not (tmp_path / "b" / "models" / ".run.lock").exists()
    # not cached: found in the training loader's thread, which would otherwise die and leave the trainer waiting
    proc = run_bundle(*train_args(bad, tmp_path / "c", "--cache_rate", "0.0"), check=False, timeout=180)
    assert proc.returncode == 1
    assert last_line(proc).startswith("(in thread ") and last_line(proc).endswith(
        f") {case_file(bad, 'SYNTH0001')}: label values [255] are outside the classes 0..1.")


def refused_in_one_sentence(cases, tmp_path, missing=None):
    """Run each (bundle arguments, expected last line) at once; each must end with that sentence and status 1, before
    any case is cached, trained or written. ``missing``: arguments naming a config file that does not exist (MONAI
    reads the files before monai_stlu is imported, so its own message ends the output: documented; monai_stlu train
    --config checks the files first)."""
    runs = [a for a, _ in cases] + ([missing] if missing else [])
    procs = [subprocess.Popen([sys.executable, "-m", "monai.bundle", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
             for args in runs]
    for proc, (_, expected) in zip(procs, cases):
        out, err = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.returncode == 1 and last_line(done).startswith(expected), last_line(done)
    if missing:
        out, err = procs[-1].communicate(timeout=300)
        assert procs[-1].returncode != 0 and "Cannot find the config file" in err and "stlu_net.json" in err
    assert not list(tmp_path.glob("*/models/*")) and not list(tmp_path.glob("*/models/.run.lock"))
    assert not list(tmp_path.glob("*/eval/*"))  # nothing cached, trained or written


@pytest.mark.slow
def test_bad_settings_and_splits_end_with_one_sentence(synth, tmp_path):
    """A mistyped key, a stride or patch that does not suit, no unlabeled case left, a test case that is also
    unlabeled, a config file that is not there: each refused before any case is cached, with the project's sentence
    last and status 1."""
    overlap = tmp_path / "overlap"
    write_synthetic_la(str(overlap), num_train=8, num_test=2, shape=(48, 48, 32))
    with open(overlap / "test.list", "a") as f:
        f.write("SYNTH0005\n")
    refused_in_one_sentence([
        (train_args(synth, tmp_path / "1", "--max_iteration", "5"),
         "--max_iteration is not a key of the bundle's configs (did you mean --max_iterations?)"),
        (train_args(synth, tmp_path / "3", "--val_stride", "[48,48,64]"),
         "val_stride [48, 48, 64] does not suit patch_size [64, 64, 48]"),
        (train_args(synth, tmp_path / "4", "--num_labeled", "7"),
         f"{os.path.join(synth, 'train.list')}: 0 unlabeled case(s) are left"),
        (train_args(overlap, tmp_path / "5"),
         f"{overlap / 'test.list'}: 1 test case(s) are also unlabeled cases (SYNTH0005)"),
        (train_args(synth, tmp_path / "6", "--patch_size", "[60,64,48]"),
         "patch_size [60, 64, 48] does not suit STLUNet: every size must be a positive multiple of 16"),
    ], tmp_path, missing=["run", "training", "--dataset_dir", str(synth), "--bundle_root", str(tmp_path / "8"),
                          "--config_file", config_list("stlu_la", "train.json", "methods/stlu_net.json")])


@pytest.mark.slow
@pytest.mark.long  # the quick suite refuses a stride through the same check as val_interval's (above), and a split
# too small for its labeled cases in process (test_bad_input.py, test_data.py)
def test_more_bad_settings_end_with_one_sentence(synth, tmp_path):
    refused_in_one_sentence([
        (train_args(synth, tmp_path / "2", "--val_interval", "0"),
         "val_interval must be a whole number of iterations between validations, 1 or more"),
        (train_args(synth, tmp_path / "7", "--num_labeled", "20"),
         f"{os.path.join(synth, 'train.list')}: 8 training cases cannot give 20 labeled + 1 validation cases."),
    ], tmp_path)


@pytest.mark.slow
def test_inference_refuses_nan_and_a_truncated_model_with_one_sentence(tmp_path):
    from monai_stlu.networks import STLUNet

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.save(STLUNet(n_filters=8).eval().state_dict(), root / "models" / "model.pt")
    scans = tmp_path / "in"
    scans.mkdir()
    image = np.random.RandomState(0).rand(32, 32, 32).astype(np.float32)
    image[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(scans / "nan.nii.gz"))
    args = ["run", "--config_file", str(REPO_ROOT / "bundles/stlu_la/configs/inference.json"), "--bundle_root", str(root),
            "--n_filters", "8", "--patch_size", "[32,32,32]", "--eval_stride", "[16,16,16]", "--progress", "false",
            "--dataset_dir", str(scans)]
    proc = run_bundle(*args, check=False)
    assert proc.returncode == 1 and last_line(proc) == f"{scans / 'nan.nii.gz'}: the image has 1 NaN/Inf voxels."
    assert not (root / "eval").exists() or not list((root / "eval").rglob("*.nii.gz"))
    data = (root / "models" / "model.pt").read_bytes()
    (root / "models" / "model.pt").write_bytes(data[: len(data) // 2])
    (scans / "nan.nii.gz").unlink()
    nib.save(nib.Nifti1Image(np.nan_to_num(image), np.eye(4)), str(scans / "ok.nii.gz"))
    # through the command line: its exit status is the failed child's, and nothing is printed after the sentence
    proc = subprocess.run([sys.executable, "-m", "monai_stlu", "predict", "-i", str(scans), "-o", str(tmp_path / "out"),
                           "--model", str(root / "models" / "model.pt"), "--n_filters", "8", "--patch_size", "[32,32,32]",
                           "--eval_stride", "[16,16,16]", "--progress", "false"], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"{root / 'models' / 'model.pt'}: cannot be read as a model ("), last_line(proc)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))


def test_metrics_csv_is_readable_by_others(tmp_path):
    from monai_stlu.handlers import write_csv_atomic

    old = os.umask(0o022)
    try:
        write_csv_atomic(str(tmp_path / "metrics.csv"), ["case", "dice"], [["a", 0.5]])
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "metrics.csv").st_mode & 0o777 == 0o644
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["case,dice", "a,0.5"]


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    from monai_stlu.handlers import AtomicCheckpointSaver

    net = torch.nn.Linear(4, 4)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="model.pt")
    handler = saver._final_checkpoint.save_handler
    handler({"model": net.state_dict()}, "model.pt")
    before = (tmp_path / "model.pt").read_bytes()

    def full_disk(obj, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: "
                           "file write failed")

    with pytest.raises(OSError, match=rf"{tmp_path / 'model.pt'} could not be written: no space left on the device"):
        handler._save_func({"model": net.state_dict()}, tmp_path / "model.pt", full_disk)
    assert (tmp_path / "model.pt").read_bytes() == before and sorted(os.listdir(tmp_path)) == ["model.pt"]


def test_a_resumed_periodic_saver_keeps_rotating_n_saved(tmp_path):
    from ignite.engine import Engine

    from monai_stlu.handlers import AtomicCheckpointSaver, ResumeCheckpointLoader

    net = torch.nn.Linear(4, 4)

    def run(max_epochs):
        engine = Engine(lambda e, b: None)
        ResumeCheckpointLoader(str(tmp_path), {"network": net, "trainer": engine}).attach(engine)
        AtomicCheckpointSaver(str(tmp_path), {"network": net, "trainer": engine}, save_interval=1, n_saved=2).attach(engine)
        engine.run(range(2), max_epochs=max_epochs)

    run(3)
    run(6)  # resumes at epoch 3
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_epoch=5.pt", "checkpoint_epoch=6.pt"]
    # asked for fewer iterations than it reached: a sentence, not ignite's "Epoch count (6) in checkpoint is larger"
    with pytest.raises(ValueError, match=r"checkpoint_epoch=6.pt: this run already reached iteration 12, beyond the 4 "):
        run(2)


def test_convert_nifti_and_check_refuse_4d_and_blank_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 16, 3).astype(np.float32), np.eye(4)), str(images / "cine.nii.gz"))
    proc = subprocess.run([sys.executable, "-m", "monai_stlu", "convert", "nifti", str(images), "None",
                           str(tmp_path / "datalist.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert last_line(proc).startswith(f"{images / 'cine.nii.gz'}: a 4-D image (shape [16, 16, 16, 3])")
    assert not (tmp_path / "datalist.json").exists()
    # check reads every case, lists each problem, and ends with one sentence
    data = write_synthetic_la(str(tmp_path / "la"), num_train=6, num_test=2, shape=(24, 24, 16))
    for case_id in ("SYNTH0001", "SYNTH0003"):
        with h5py.File(case_file(data, case_id), "r+") as f:
            f["image"][...] = 0.0
    proc = subprocess.run([sys.executable, "-m", "monai_stlu", "check", data, "--num_labeled", "2", "--num_val", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"labeled SYNTH0001: {case_file(data, 'SYNTH0001')}: the image is blank (every voxel is 0)" in proc.stdout
    assert "unlabeled SYNTH0003:" in proc.stdout
    assert last_stderr_line(proc).startswith("2 of 8 cases have a problem (listed above); the first: ")


@pytest.mark.slow
@pytest.mark.long  # torchrun: with the other multi-process tests
def test_under_torchrun_and_with_a_broken_override_file_the_sentence_is_last(synth, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")

    def torchrun_train(*extra):
        return subprocess.run([sys.executable, "-m", "monai_stlu", "train", "--quick", "--nproc_per_node", "2",
                               "--dataset_dir", synth, "--output", str(tmp_path), "--num_val", "1", "--num_labeled", "2",
                               "--progress", "false", *extra], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)

    proc = torchrun_train("--max_iteration", "3")  # refused before torchrun starts
    sentence = "--max_iteration is not a key of the bundle's configs (did you mean --max_iterations?)"
    assert proc.returncode == 1 and last_line(proc).startswith(sentence), proc.stderr[-3000:]
    assert "traceback :" not in proc.stderr and "torch.distributed" not in proc.stderr
    proc = torchrun_train("--val_stride", "[48,48,64]")  # what only the ranks find
    sentence = "val_stride [48, 48, 64] does not suit patch_size [64, 64, 48]"
    assert proc.returncode == 1 and last_line(proc).startswith(sentence), proc.stderr[-3000:]
    assert f"traceback : {sentence}" in proc.stderr  # torchrun's own failure summary shows it too
    broken = tmp_path / "mine.json"
    broken.write_text('{"max_iterations": 3,}')
    proc = subprocess.run([sys.executable, "-m", "monai_stlu", "train", "--quick", "--config", str(broken),
                           "--dataset_dir", synth], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 1 and last_line(proc) == (
        f"{broken}: not valid JSON (line 1, column 22: Expecting property name enclosed in double quotes).")


def test_a_missing_optional_package_is_named_before_any_work(monkeypatch):
    import importlib.util

    from monai_stlu.utils import check_optional_packages

    main = os.path.join("site-packages", "monai", "bundle", "__main__.py")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("onnxscript", "mlflow") else real(name, *a))
    with pytest.raises(ModuleNotFoundError) as err:
        check_optional_packages([main, "onnx_export", "network_def", "--filepath", "m.onnx"])
    assert explain(err.value) == ("onnx_export needs onnxscript, which is not installed here: pip install "
                                  "'monai_stlu[onnx]' (or pip install 'monai_stlu[all]' for every optional part).")
    with pytest.raises(ModuleNotFoundError, match=r"--tracking mlflow needs mlflow, .*monai_stlu\[mlflow\]"):
        check_optional_packages([main, "run", "training", "--tracking", "mlflow"])
    check_optional_packages([main, "run", "training"])  # nothing optional asked for
    check_optional_packages(["train.py", "onnx_export"])  # not a monai.bundle command: not checked


def test_a_model_file_records_its_network_and_a_mismatch_names_the_settings(tmp_path):
    from monai_stlu.handlers import (
        AtomicCheckpointSaver,
        CheckpointMismatchError,
        ModelCheckpointLoader,
    )
    from monai_stlu.networks import STLUNet
    from monai_stlu.utils import read_model_record

    trained = STLUNet(n_filters=4)
    record = {"bundle": "stlu_la", "method": "STLUMethod", "settings": {"n_filters": 4, "patch_size": [32, 32, 32]}}
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": trained}, model_record=record, save_final=True,
                                  final_filename="model.pt")
    saver._final_checkpoint.save_handler(trained.state_dict(), "model.pt")
    assert read_model_record(str(tmp_path / "model.pt")) == record
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    STLUNet(n_filters=4).load_state_dict(state)  # still a plain state dict for MONAI's loaders and MONAI Label
    with pytest.raises(CheckpointMismatchError) as err:
        ModelCheckpointLoader(str(tmp_path / "model.pt"), {"model": STLUNet(n_filters=8)}).check()
    assert str(err.value).endswith("build the network it records (the STLUMethod method's file, and --n_filters 4 "
                                   "--patch_size [32, 32, 32]), or let monai_stlu predict/export --model read the "
                                   "record for you.")


@pytest.mark.slow
@pytest.mark.long  # two bundle runs; the handler itself is tested in the quick suite (test_time_limit.py)
def test_a_time_limited_bundle_run_resumes_at_the_iteration_it_stopped(synth, tmp_path):
    args = train_args(synth, tmp_path, "--max_iterations", "6", "--val_interval", "3")
    proc = run_bundle(*args, "--max_train_seconds", "0.001")  # over budget after its first iteration
    assert "time limit of 0.001 s reached at iteration 1" in proc.stdout + proc.stderr
    models = tmp_path / "models"
    stopped = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)  # mid-epoch: named for its epoch
    assert stopped["trainer"]["iteration"] == 1
    proc = run_bundle(*args)
    out = proc.stdout + proc.stderr
    assert f"resumed from {models / 'checkpoint_epoch=1.pt'} at iteration 1." in out
    assert "Epoch: 1/2, Iter: 2/3 " in out and "Epoch: 1/2, Iter: 1/3 " not in out  # iteration 1 not trained again
    assert torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)["trainer"]["iteration"] == 6


def test_a_model_file_is_written_with_its_tensors_on_the_cpu(tmp_path):
    """model.pt holds CPU tensors whatever device trained it (MONAI's ckpt_export and MONAI Label load it without a
    map_location, which fails on a host without the GPU); BatchNorm's version metadata and the record are kept. The
    network here lives on the 'meta' device, which no file can be read back onto, standing in for a GPU."""
    from monai_stlu.handlers import AtomicCheckpointSaver
    from monai_stlu.utils import model_record_of

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    state = net.state_dict()
    on_meta = type(state)((k, v.to("meta")) for k, v in state.items())
    on_meta._metadata = state._metadata
    record = {"bundle": "stlu_la", "method": "SupervisedMethod", "settings": {"n_filters": 4}}
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, model_record=record, save_final=True,
                                  final_filename="model.pt")
    handler = saver._final_checkpoint.save_handler
    cpu_copy = type(state)((k, torch.zeros_like(v)) for k, v in state.items())  # what .cpu() of the meta tensors gives
    real_cpu = torch.Tensor.cpu
    torch.Tensor.cpu = lambda t: torch.zeros(t.shape, dtype=t.dtype) if t.device.type == "meta" else real_cpu(t)
    try:
        handler(on_meta, "model.pt")
    finally:
        torch.Tensor.cpu = real_cpu
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)  # no map_location
    assert all(v.device.type == "cpu" for v in loaded.values()) and loaded.keys() == cpu_copy.keys()
    assert loaded._metadata["1"]["version"] == state._metadata["1"]["version"]  # BatchNorm's version kept
    assert model_record_of(loaded) == record
