"""Model Zoo readiness: monai_stlu builds as a wheel, the wheel's declared dependencies install into an empty virtual
environment (the CPU torch first; cached, see ``wheel_python``), and each bundle, copied outside the repository, trains,
evaluates, runs inference and exports there with the installed wheel, as a Model Zoo user would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from monai_stlu.data import SYNTHETIC_LAYOUTS
from venv_utils import cached_venv

pytestmark = pytest.mark.long  # the long suite (CI runs it after the README's quick test command)



def _run(cmd, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def requires_dist(wheel: Path) -> list[str]:
    """The dependencies a wheel declares (``Requires-Dist`` of its METADATA)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> tuple[Path, dict]:
    """A Python whose ``monai_stlu`` is the wheel built from this checkout. Its environment holds the CPU torch and
    exactly what the wheel declares, resolved by pip from an empty venv; it is cached, keyed by the declared
    dependencies (a changed requirement builds a new one). The wheel itself is installed afresh on every run, without
    touching the cached environment (``pip install --target``), so concurrent runs cannot meet."""
    root = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist", REPO_ROOT], cwd=root)
    wheels = list((root / "dist").glob("monai_stlu-*.whl"))
    assert len(wheels) == 1, wheels
    declared = requires_dist(wheels[0])
    assert any(r.startswith("monai") for r in declared), declared
    install = [["-m", "pip", "install", "-q", "torch==2.13.0"],  # the CPU build, before what depends on torch
               ["-m", "pip", "install", "-q", *declared]]
    venv = cached_venv("wheel-deps", repr((declared, install)).encode(), install)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--target", root / "site", wheels[0]], cwd=root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STLU_LA_DATA")}
    env.update(PYTHONPATH=str(root / "site"), PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    # every declared requirement is met in that environment, and monai_stlu is the wheel's, not this checkout's
    _run([python, "-m", "pip", "check"], cwd=root)
    where = _run([python, "-c", "import monai_stlu; print(monai_stlu.__file__)"], cwd=root, env=env).stdout.strip()
    assert where.startswith(str(root / "site")), where
    return python, env


@pytest.mark.parametrize("bundle", list(SYNTHETIC_LAYOUTS))
def test_bundle_outside_the_repository_with_the_installed_wheel(wheel_python, bundle, tmp_path):
    wheel_python, env = wheel_python
    work = tmp_path / "elsewhere"
    shutil.copytree(REPO_ROOT / "bundles" / bundle, work / bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    layout = SYNTHETIC_LAYOUTS[bundle]
    _run([wheel_python, "-c", "import sys; from monai_stlu.data import SYNTHETIC_LAYOUTS, write_synthetic_la; "
          "write_synthetic_la(sys.argv[1], num_train=6, num_test=1, shape=(48, 48, 48), **SYNTHETIC_LAYOUTS[sys.argv[2]])",
          tmp_path / "data", bundle], cwd=work, env=env)
    names = layout.get("list_names", ("train.list", "test.list"))
    lists = [a for flag, name in zip(("--train_list", "--test_list", "--val_list"), names) for a in (flag, name)]
    configs = work / bundle / "configs"
    small = ["--n_filters", "4", "--patch_size", "[32,32,32]", "--eval_stride", "[16,16,16]", "--progress", "false",
             "--amp", "false"]  # inference keys; training validates at val_stride too
    common = ["--dataset_dir", tmp_path / "data", *lists, "--num_labeled", "2", "--num_val", "1", *small,
              "--val_stride", "[16,16,16]"]
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
