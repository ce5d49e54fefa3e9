"""Bundle behaviour that needs no real data: missing-data message, bundle_root independent of the cwd, synthetic demo."""

from __future__ import annotations

import os

import pytest

from bundle_utils import config_list, run_bundle
from conftest import REPO_ROOT
from monai_stlu.utils.bundle import config_files_from_argv, _root_from_config_path


def test_missing_data_error_says_where_to_get_it(tmp_path):
    proc = run_bundle(
        "run", "training", "--config_file", str(REPO_ROOT / "bundles/stlu_la/configs/train.json"),
        "--bundle_root", str(tmp_path), check=False,
    )
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"No LA data at '{tmp_path}/data/LA'" in err
    assert "--dataset_dir" in err and "yulequan/UA-MT" in err


def test_bundle_root_from_config_path():
    cfg = REPO_ROOT / "bundles" / "stlu_la" / "configs"
    assert _root_from_config_path(str(cfg / "train.json")) == str(cfg.parent)
    assert _root_from_config_path(str(cfg / "methods" / "stlu.json")) == str(cfg.parent)
    argv = ["x", "run", "--config_file", f"['{cfg}/train.json','{cfg}/quick.json']"]
    assert config_files_from_argv(argv) == [f"{cfg}/train.json", f"{cfg}/quick.json"]
    assert config_files_from_argv(["x", f"--config_file={cfg}/train.json"]) == [f"{cfg}/train.json"]


@pytest.mark.slow
@pytest.mark.long  # the quick suite runs the same command (train.json + quick.json) in test_bundle_la.py's fixture,
# and where the outputs go without --bundle_root in test_bundle_root_from_config_path
def test_demo_on_synthetic_data_from_another_cwd(tmp_path):
    """The README demo, run from outside the repository: outputs land in the bundle's own folders."""
    from monai_stlu.data import write_synthetic_la

    data = write_synthetic_la(str(tmp_path / "synth"), num_train=12, num_test=2, shape=(64, 64, 48))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    root = tmp_path / "bundle_copy"
    import shutil

    shutil.copytree(REPO_ROOT / "bundles" / "stlu_la", root, ignore=shutil.ignore_patterns("models", "eval", "data"))
    cfg = root / "configs"
    run_bundle(
        "run", "training", "--config_file", f"['{cfg}/train.json','{cfg}/quick.json']", "--dataset_dir", data,
        "--num_val", "1", cwd=elsewhere,
    )
    assert (root / "models" / "model.pt").is_file()
    assert not (elsewhere / "models").exists() and os.listdir(elsewhere) == []


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_fast_path_switches_reach_the_inferer(config):
    from monai.bundle import ConfigParser

    from monai_stlu.inferers import StrideSlidingWindowInferer

    for value in (True, False):
        parser = ConfigParser()
        parser.read_config(str(REPO_ROOT / "bundles" / "stlu_la" / "configs" / config))
        parser.update({"bundle_root": str(REPO_ROOT / "bundles" / "stlu_la"), "amp": value, "channels_last": value,
                       "fuse_bn": value})
        inferer = parser.get_parsed_content("validate#inferer" if config == "train.json" else "inferer")
        assert isinstance(inferer, StrideSlidingWindowInferer)
        assert inferer.use_amp is value and inferer.channels_last is value and inferer.fuse_bn is value
