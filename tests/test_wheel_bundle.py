"""Model Zoo readiness: monai_stlu builds as a wheel, the wheel installs into an empty virtual environment (the CPU
torch first, then the wheel with the dependencies it declares), and each bundle, copied outside the repository, trains,
evaluates, runs inference and exports from there, as a Model Zoo user would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from monai_stlu.data import SYNTHETIC_LAYOUTS



def _run(cmd, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist", REPO_ROOT], cwd=root)
    wheels = list((root / "dist").glob("monai_stlu-*.whl"))
    assert len(wheels) == 1, wheels
    _run([sys.executable, "-m", "venv", root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], cwd=root)  # the CPU build, before the wheel
    _run([python, "-m", "pip", "install", "-q", wheels[0]], cwd=root)
    where = _run([python, "-c", "import monai_stlu; print(monai_stlu.__file__)"], cwd=root).stdout.strip()
    assert where.startswith(str(root / "venv")), where  # the installed wheel, not this checkout
    return python


@pytest.mark.parametrize("bundle", list(SYNTHETIC_LAYOUTS))
def test_bundle_outside_the_repository_with_the_installed_wheel(wheel_python, bundle, tmp_path):
    work = tmp_path / "elsewhere"
    shutil.copytree(REPO_ROOT / "bundles" / bundle, work / bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STLU_LA_DATA")}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    layout = SYNTHETIC_LAYOUTS[bundle]
    _run([wheel_python, "-c", "import sys; from monai_stlu.data import SYNTHETIC_LAYOUTS, write_synthetic_la; "
          "write_synthetic_la(sys.argv[1], num_train=6, num_test=1, shape=(48, 48, 48), **SYNTHETIC_LAYOUTS[sys.argv[2]])",
          tmp_path / "data", bundle], cwd=work, env=env)
    names = layout.get("list_names", ("train.list", "test.list"))
    lists = [a for flag, name in zip(("--train_list", "--test_list", "--val_list"), names) for a in (flag, name)]
    configs = work / bundle / "configs"
    small = ["--n_filters", "4", "--patch_size", "[32,32,32]", "--val_stride", "[16,16,16]", "--eval_stride", "[16,16,16]",
             "--progress", "false", "--amp", "false"]
    common = ["--dataset_dir", tmp_path / "data", *lists, "--num_labeled", "2", "--num_val", "1", *small]
    bundle_cmd = [wheel_python, "-m", "monai.bundle"]
    train = f"['{configs / 'train.json'}','{configs / 'quick.json'}']"
    _run([*bundle_cmd, "run", "training", "--config_file", train, *common, "--max_iterations", "2", "--val_interval", "2"],
         cwd=work, env=env)
    assert (work / bundle / "models" / "model.pt").is_file()  # inside the copied bundle: its bundle_root
    evaluate = f"['{configs / 'train.json'}','{configs / 'quick.json'}','{configs / 'evaluate.json'}']"
    _run([*bundle_cmd, "run", "--config_file", evaluate, *common], cwd=work, env=env)
    assert (work / bundle / "eval" / "metrics.csv").is_file()
    _run([*bundle_cmd, "run", "--config_file", configs / "inference.json", "--input_dir", tmp_path / "data", *small],
         cwd=work, env=env)
    assert list((work / bundle / "eval" / "predictions").rglob("*_seg.nii.gz"))
    _run([*bundle_cmd, "ckpt_export", "network_def", "--filepath", work / "model.ts", "--ckpt_file",
          work / bundle / "models" / "model.pt", "--meta_file", configs / "metadata.json",
          "--config_file", configs / "inference.json", "--n_filters", "4"], cwd=work, env=env)
    assert (work / "model.ts").is_file()
