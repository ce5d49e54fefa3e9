"""The hostile-input sweep as tests: each bad input or fault of the last sweep that ended in a traceback or passed
unnoticed, with the sentence it must now end in (the last line the user sees, non-zero status), and the faults a
run must survive (a full disk, a stale lock, a stop by SIGTERM) with nothing lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bundle_utils import config_list, last_line
from monai_stlu.data import write_synthetic_la
from monai_stlu.utils import RunLock, attach_model_record, explain

QUICK = config_list("stlu_la", "train.json", "quick.json")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _env() -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("STLU_LA_DATA", None)
    return env


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 600) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def sweep(cases, cwd) -> None:
    """Start every (arguments, expected start of the last line) at once; each must end with that line, non-zero."""
    procs = [start(args, cwd) for args, _ in cases]
    failures = []
    for proc, (args, expected) in zip(procs, cases):
        done = finish(proc)
        if done.returncode == 0 or not last_line(done).startswith(str(expected)):
            failures.append(f"{args[2:4]} -> {done.returncode}: {last_line(done)!r}\n   expected {expected!r}\n"
                            f"{done.stderr[-1500:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Tiny LA-layout data (12 training cases of 48x48x32) and model files of several kinds."""
    from monai_stlu.networks.nets import VNet

    root = tmp_path_factory.mktemp("sweep")
    write_synthetic_la(str(root / "la"), num_train=12, num_test=2, shape=(48, 48, 32))
    vnet = VNet(in_channels=1, out_channels=2, n_filters=8).state_dict()
    torch.save(attach_model_record(vnet, {"bundle": "stlu_la", "method": "MeanTeacherMethod",
                                          "settings": {"n_filters": 8}}), root / "mean_teacher.pt")
    torch.save(dict(vnet), root / "no_record.pt")  # a plain dict: no record
    torch.save({"network": dict(vnet), "optimizer": {"state": {}, "param_groups": []}}, root / "checkpoint.pt")
    data = (root / "mean_teacher.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    (root / "random.pt").write_bytes(np.random.RandomState(0).bytes(4096))
    (root / "text.pt").write_text("these are not weights\n" * 20)
    torch.save(torch.nn.Linear(2, 2), root / "pickled.pt")  # a whole module: code that weights_only refuses
    return root


def test_model_files_and_commands_refused_before_anything_runs(site):
    """``monai_stlu export`` on files that are no model (truncated, random, text, pickled code, a training checkpoint),
    out-of-range ``--max_iterations``, a misspelled key under ``--dry_run``, a mistyped command: one sentence each."""
    la = site / "la"
    cannot = "cannot be read as a model ("

    def export(name, suffix=".ts"):
        return ["-m", "monai_stlu", "export", "--model", site / name, "-o", site / f"a{suffix}"]

    sweep([
        *[(export(name), f"{site / name}: {cannot}")
          for name in ("truncated.pt", "random.pt", "text.pt", "pickled.pt")],
        (export("checkpoint.pt", ".onnx"),
         f"{site / 'checkpoint.pt'}: not a model file but a training checkpoint (it holds network, optimizer)"),
        *[(["-m", "monai_stlu", "train", "--quick", "--dataset_dir", la, "--output", site / "o1", "--max_iterations",
            value], f"--max_iterations must be a whole number of iterations, 1 or more, got '{value}'.")
          for value in ("abc", "-5")],
        (["-m", "monai_stlu", "train", "--dry_run", "--max_iteration", "5"],
         "--max_iteration is not a key of the bundle's configs (did you mean --max_iterations?)"),
        (["-m", "monai_stlu", "trian"], "monai_stlu: 'trian' is not a command (did you mean 'train'?)"),
    ], site)
    assert not (site / "o1").exists() and not (site / "a.ts").exists()


@pytest.mark.slow
@pytest.mark.long  # bundle start-ups (10-15 s of imports each); the quick suite has the wrapper-level refusals above
def test_bad_runs_end_with_one_sentence(site, tmp_path):
    """Through the bundle itself: ``--max_iterations abc``, ``--num_labeled abc``, ``--learning_rate -1``, too few unlabeled cases for one batch, labels of 0/0.5
    (``monai_stlu check`` refuses them; training must too), and exports of weights that do not fit the network
    (a Mean Teacher model exported as STLU-Net, a model file without a record)."""
    la, odd = site / "la", tmp_path / "odd"
    shutil.copytree(la, odd)
    first = (odd / "train.list").read_text().split()[0]
    case = odd / "2018LA_Seg_Training Set" / first / "mri_norm2.h5"
    with h5py.File(case, "r+") as f:
        label = f["label"][()].astype(np.float32) * 0.5
        del f["label"]
        f["label"] = label
    sweep([
        (["-m", "monai.bundle", "run", "training", "--config_file", QUICK, "--dataset_dir", la,
          "--bundle_root", tmp_path / "r1", "--max_iterations", "abc"],
         "max_iterations must be a whole number of iterations, 1 or more, got 'abc'."),
        (["-m", "monai.bundle", "run", "training", "--config_file", QUICK, "--dataset_dir", la,
          "--bundle_root", tmp_path / "r1", "--num_labeled", "abc"],
         "num_labeled must be a whole number of labeled cases, 1 or more, got 'abc'."),
        (["-m", "monai.bundle", "run", "training", "--config_file", QUICK, "--dataset_dir", la,
          "--bundle_root", tmp_path / "r1", "--learning_rate", "-1"], "learning_rate must be a number above 0, got -1."),
        (["-m", "monai_stlu", "train", "--quick", "--dataset_dir", la, "--output", tmp_path / "r2", "--num_labeled",
          "8", "--num_val", "3"],
         f"{la / 'train.list'}: 1 unlabeled case(s) are left for this semi-supervised method, fewer than one batch "
         "of 2"),
        (["-m", "monai_stlu", "train", "--quick", "--dataset_dir", odd, "--output", tmp_path / "r3", "--num_labeled",
          "11", "--num_val", "1", "--method", "supervised", "--max_iterations", "2"],
         f"{case}: label values [0.5] are outside the classes 0..1."),
        (["-m", "monai_stlu", "export", "--model", site / "mean_teacher.pt", "--method", "stlu", "-o",
          tmp_path / "m.ts"],
         f"{site / 'mean_teacher.pt'}: holds VNet (n_filters 8, 1 input channel, 2 classes), which does not fit"),
        (["-m", "monai_stlu", "export", "--model", site / "no_record.pt", "-o", tmp_path / "m.onnx"],
         f"{site / 'no_record.pt'}: holds VNet (n_filters 8, 1 input channel, 2 classes), which does not fit"),
    ], tmp_path)
    assert not (tmp_path / "r3" / "models" / "supervised" / "model.pt").exists()
    assert not (tmp_path / "m.ts").exists() and not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "r2").exists()  # a failed training leaves no empty folders behind


@pytest.mark.long  # one training start-up
def test_a_missing_extra_ends_with_the_install_line(site, tmp_path):
    """``--tracking mlflow`` without MLflow installed (here: a package of that name that cannot be imported, first on
    the path): the last line names the handler and a pip line with the extra's requirements from the installed
    package's metadata, instead of MONAI's 1,000-character OptionalImportError."""
    fake = tmp_path / "site" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named mlflow")\n')
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *map(str, train_cmd(site / "la", tmp_path / "out", "--tracking", "mlflow",
                                                               "--max_iterations", "1"))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert last_line(proc) == ("MLFlowHandler needs the mlflow package, which is not installed: pip install "
                               "mlflow-skinny sqlalchemy alembic."), last_line(proc)


def train_cmd(data, out, *extra) -> list:
    return ["-m", "monai_stlu", "train", "--quick", "--dataset_dir", data, "--output", out, "--progress", "false",
            "--val_interval", "2", *extra]


@pytest.mark.slow
@pytest.mark.long  # two short trainings; the quick suite has the resume refusal on an ignite engine (test_reliability)
def test_sigterm_stops_the_training_and_the_same_command_resumes(site, tmp_path):
    """SIGTERM to ``monai_stlu train``: its training child is gone within 5 s, its lock released, the wrapper exits
    143, and the same command resumes from the checkpoint it left; asking for fewer iterations than it reached then
    ends with one sentence."""
    out = tmp_path / "run"
    cmd = train_cmd(site / "la", out, "--max_iterations", "40")
    wrapper = start(cmd, tmp_path)
    lock, models = out / "models" / ".run.lock", out / "models"
    deadline = time.time() + 300
    while time.time() < deadline and not list(models.glob("checkpoint_*.pt")):
        assert wrapper.poll() is None, finish(wrapper).stderr[-3000:]
        time.sleep(0.5)
    child = json.loads(lock.read_text())["pid"]
    assert os.stat(lock).st_mode & 0o777 == 0o600  # the command line may carry a token
    wrapper.send_signal(signal.SIGTERM)
    stopped = time.time()
    while time.time() - stopped < 5 and os.path.exists(f"/proc/{child}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}"), "the training child outlived its wrapper"
    assert finish(wrapper, timeout=30).returncode == 143
    assert not lock.exists(), "the lock of a stopped run was left behind"
    again = finish(start(cmd, tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout + again.stderr and "iterations: 40" in again.stdout
    fewer = finish(start(train_cmd(site / "la", out, "--max_iterations", "4"), tmp_path))
    assert fewer.returncode != 0
    line = last_line(fewer)
    assert "this run already reached iteration 40, beyond the 4 it is now asked for" in line, line


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only): a disk that fills."""
    if not IS_ROOT or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs (a full disk); run the suite as root to include it")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> None:
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC


@pytest.mark.slow
@pytest.mark.long  # two bundle start-ups and a short training
def test_a_full_disk_at_start_and_while_saving(site, tmp_path, small_disk):
    """A disk full before the run starts: the lock cannot be written, the sentence names it, and no empty lock is
    left to refuse the next run. A disk that fills while the model is saved: the sentence names the file (torch says
    ``basic_ios::clear: iostream error``), and the previous state is intact."""
    ckpt = small_disk / "models"
    ckpt.mkdir()
    _fill(small_disk)
    cmd = train_cmd(site / "la", tmp_path / "out", "--ckpt_dir", ckpt, "--max_iterations", "4")
    full = finish(start(cmd, tmp_path))
    assert full.returncode != 0 and last_line(full).startswith("No space left on the device while writing "), \
        last_line(full)
    assert str(ckpt / ".run.lock") in last_line(full) and not (ckpt / ".run.lock").exists()
    os.remove(small_disk / "filler")  # 3 MiB free: the lock fits, an 8-filter model (9 MB) does not
    saving = finish(start(cmd, tmp_path))
    assert saving.returncode != 0
    line = last_line(saving)
    assert line.startswith(f"{ckpt}") and "could not be written: no space left on the device" in line, line
    assert not (ckpt / ".run.lock").exists() and not [p for p in os.listdir(ckpt) if p.endswith(".partial")]


def test_a_lock_that_names_no_live_holder_is_taken_over(tmp_path, caplog):
    """An empty (0-byte), cut-short or unreadable lock file, as a full disk at start left it, names no run: it is
    taken over with a warning instead of refusing every later run "in use by another run (PID ?)"."""
    for content in (b"", b'{"pid": 12', b"\xff\xfe garbage", b'{"pid": "x"}'):
        lock = RunLock(str(tmp_path / "models"))
        os.makedirs(lock.folder, exist_ok=True)
        Path(lock.path).write_bytes(content)
        lock.acquire()
        assert json.loads(Path(lock.path).read_text())["pid"] == os.getpid()
        assert os.stat(lock.path).st_mode & 0o777 == 0o600
        lock.release()
        assert not os.path.exists(lock.path)
    assert caplog.text.count("taking over the lock of no run") == 4


def test_releasing_the_lock_removes_the_folders_it_made_while_empty(tmp_path):
    """A run that failed before writing anything leaves no empty ``models/<method>`` folders; a folder that holds
    anything, and the folders that were there before, stay."""
    lock = RunLock(str(tmp_path / "out" / "models" / "cps"))
    lock.acquire()
    assert os.path.isfile(lock.path)
    lock.release()
    assert not (tmp_path / "out").exists() and tmp_path.is_dir()
    lock.acquire()
    (tmp_path / "out" / "models" / "cps" / "checkpoint_epoch=1.pt").write_bytes(b"x")
    lock.release()
    assert (tmp_path / "out" / "models" / "cps" / "checkpoint_epoch=1.pt").is_file()
    (tmp_path / "kept").mkdir()
    lock = RunLock(str(tmp_path / "kept" / "models"))
    lock.acquire()
    lock.release()
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "models").exists()


def test_a_lock_that_cannot_be_written_leaves_no_file(tmp_path, monkeypatch):
    import monai_stlu.utils.run_lock as run_lock

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_lock.json, "dump", full)
    lock = RunLock(str(tmp_path / "models"))
    with pytest.raises(OSError):
        lock.acquire()
    assert not os.path.exists(lock.path) and not lock.held


def test_a_full_disk_without_a_file_name_names_the_run_folders(tmp_path, monkeypatch):
    """A write that failed mid-run without naming its file (a TensorBoard or log writer) still names where the run
    writes, and how much room is there."""
    monkeypatch.setattr(sys, "argv", ["monai/bundle/__main__.py", "run", "training", "--config_file", QUICK,
                                      "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")])
    sentence = explain(OSError(errno.ENOSPC, "No space left on device"))
    folders = f"{tmp_path / 'models'}, {tmp_path / 'eval'}"
    assert sentence.startswith(f"No space left on the device while writing the run's files (under {folders}) (")
    assert "MiB free there)" in sentence, sentence


def test_a_failed_stream_write_names_the_file(tmp_path):
    """torch's ``basic_ios::clear: iostream error`` (its words for a write the disk refused) names the file."""
    from monai_stlu.handlers import AtomicCheckpointSaver

    net = torch.nn.Linear(4, 4)
    handler = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True,
                                    final_filename="model.pt")._final_checkpoint.save_handler

    def refused(obj, path, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    with pytest.raises(OSError) as info:
        handler._save_func({"model": net.state_dict()}, tmp_path / "model.pt", refused)
    assert info.value.strerror.startswith(f"{tmp_path / 'model.pt'} could not be written: the write failed (basic_ios")
    assert explain(info.value) == info.value.strerror  # the sentence the user reads, without "[Errno 5]"
    assert os.listdir(tmp_path) == []


def test_metrics_are_written_without_touching_the_umask(tmp_path, monkeypatch):
    """No process-wide umask change (another thread's file created meanwhile would be world-writable)."""
    from monai_stlu.handlers import write_csv_atomic

    def forbidden(mask):
        raise AssertionError("os.umask called")

    old = os.umask(0o022)
    try:
        monkeypatch.setattr(os, "umask", forbidden)
        write_csv_atomic(str(tmp_path / "metrics.csv"), ["case", "dice"], [["a", 0.5]])
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert os.stat(tmp_path / "metrics.csv").st_mode & 0o777 == 0o644
