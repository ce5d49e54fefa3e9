"""The Model Zoo's own bundle check (``ci/verify_bundle.py -m full`` of ``Project-MONAI/model-zoo``) on each bundle.

The zoo's scripts are not part of this repository: point ``MODEL_ZOO_DIR`` at a checkout of the model-zoo repository
(only its ``ci/`` folder is used). Each bundle is copied (tracked files only, as a zoo pull request would carry it)
into ``<tmp>/models/<bundle>`` beside a copy of ``ci/``; ``models/model.pt`` holds the network's initial weights,
as the zoo's own checks make when weights are absent (trained weights are fetched through ``large_files.yml``);
the metadata schema is the offline copy in ``../shared/schemas`` (the check would download it otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

ZOO = os.environ.get("MODEL_ZOO_DIR", "")
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"

pytestmark = pytest.mark.skipif(
    not (ZOO and (Path(ZOO) / "ci" / "verify_bundle.py").is_file()),
    reason="MODEL_ZOO_DIR does not name a checkout of Project-MONAI/model-zoo (ci/verify_bundle.py); not vendored here",
)


def _tracked_copy(bundle: str, dest: Path) -> None:
    """The bundle's files as committed (git archive), so local outputs (models/, eval/) never leak into the check."""
    archive = subprocess.run(["git", "archive", "HEAD", f"bundles/{bundle}"], cwd=REPO_ROOT, capture_output=True, check=True)
    tar = dest.parent / f"{bundle}.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        t.extractall(dest.parent / "_x", filter="data")
    shutil.move(str(dest.parent / "_x" / "bundles" / bundle), str(dest))


def _zoo_with(bundle: str, tmp_path: Path) -> Path:
    """A temporary model-zoo tree: its ``ci/`` and the bundle (as committed) in ``models/<bundle>``."""
    shutil.copytree(Path(ZOO) / "ci", tmp_path / "ci")
    models = tmp_path / "models"
    models.mkdir()
    (models / "model_info.json").write_text("{}")  # no published version yet
    _tracked_copy(bundle, models / bundle)
    return models / bundle


@pytest.mark.parametrize("bundle", ["stlu_la", "stlu_pancreas", "stlu_brats"])
def test_verify_bundle_full(bundle, tmp_path):
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA}: the offline metadata schema is not here (the check would download it)")
    from monai.bundle import ConfigParser

    root = _zoo_with(bundle, tmp_path)
    (root / "eval").mkdir(exist_ok=True)
    shutil.copy(SCHEMA, root / "eval" / "schema.json")
    (root / "models").mkdir(exist_ok=True)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    proc = subprocess.run([sys.executable, "ci/verify_bundle.py", "-b", bundle, "-p", "models", "-m", "full"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for step in ("directory is verified", "version and changelog are verified", "metadata format is verified",
                 "data shape is verified", "export weights into TorchScript module successfully"):
        assert step in log, step


@pytest.mark.parametrize("bundle", ["stlu_la", "stlu_pancreas", "stlu_brats"])
def test_zoo_unit_test_runner(bundle, tmp_path):
    """The zoo-style unit test of the bundle (monai_stlu/bundle/zoo_unit_test.template as ci/unit_tests/test_<bundle>.py)
    passes under the zoo's own runner."""
    root = _zoo_with(bundle, tmp_path)
    template = (REPO_ROOT / "monai_stlu" / "bundle" / "zoo_unit_test.template").read_text()
    (tmp_path / "ci" / "unit_tests" / f"test_{bundle}.py").write_text(
        template.replace('BUNDLE = "stlu_la"', f'BUNDLE = "{bundle}"'))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "ci/unit_tests/runner.py", "-b", bundle], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "Ran 2 tests" in log and "OK" in log, log[-3000:]
    assert (root / "models" / "model.pt").is_file()
