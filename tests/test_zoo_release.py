"""A Model Zoo release (issue: the first hour, item 6): one command builds a self-contained bundle, and the zoo's
premerge steps pass on it in an interpreter where this repository is not installed: the requirements the zoo derives
from ``metadata.json`` resolve on the public index (pypi.org, pip's configuration ignored), the metadata verifies
against the schema, the network exports to TorchScript, and the bundle's zoo unit test (train, evaluate, infer with
the properties checked) passes with the code the bundle carries.

The zoo's own scripts are used where ``MODEL_ZOO_DIR`` names a checkout (``get_bundle_requirements.py``,
``ci/unit_tests/utils.py``); without one, their two small steps are written out here (the requirement lines and
``check_workflow``: initialize, check properties, run, finalize)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch

from bundle_utils import last_line, quick_subset
from conftest import REPO_ROOT, shared_la_dir

ZOO = os.environ.get("MODEL_ZOO_DIR", "")
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
CHECK_WORKFLOW = '''
def check_workflow(workflow, check_properties=False):
    workflow.initialize()
    if check_properties:
        result = workflow.check_properties()
        if result:
            raise ValueError(f"check properties for workflow failed: {result}")
    workflow.run()
    workflow.finalize()
'''
# the zoo's multi-GPU helper (ci/unit_tests/utils.py): the configs merged with the overrides into one exported file,
# then run under torchrun
MGPU_RUN = '''
import subprocess
import sys

from monai.bundle import ConfigParser


def export_config_and_run_mgpu_cmd(config_file, meta_file, logging_file, override_dict, output_path, workflow="train",
                                   nnode=1, ngpu=2):
    parser = ConfigParser()
    parser.read_config(config_file)
    parser.update(pairs=override_dict)
    ConfigParser.export_config_file(parser.config, output_path, indent=4)
    subprocess.check_call([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nnodes={nnode}",
                           f"--nproc_per_node={ngpu}", "-m", "monai.bundle", "run", "--config_file", output_path,
                           "--logging_file", logging_file, "--meta_file", meta_file])
'''


def console(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("monai_stlu")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def isolated(script: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``script`` in this interpreter without ``site`` (no .pth file, so no editable install of this repository):
    only the environment's site-packages and what the script puts on the path."""
    prelude = f"import sys\nsys.path.append({sysconfig.get_paths()['purelib']!r})\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-S", "-c", prelude + textwrap.dedent(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def trained_weights(folder: Path, backbone: str = "vnet", method: str = "STLUMethod") -> Path:
    """A model file as the LA bundle's training writes it (8 filters, a 64x64x48 patch, as ``quick.json``): the
    network its configs build with those settings, and the record of them."""
    from monai.bundle import ConfigParser

    from monai_stlu.utils import attach_model_record

    settings = {"n_filters": 8, "patch_size": [64, 64, 48], "backbone": backbone}
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "stlu_la" / "configs" / "train.json"))
    parser.update({**settings, "bundle_root": str(folder)})
    net = parser.get_parsed_content("network_def")
    path = folder / f"{backbone}_{method}.pt"
    torch.save(attach_model_record(net.state_dict(), {"bundle": "stlu_la", "method": method, "settings": settings}),
               path)
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    zoo = tmp_path_factory.mktemp("zoo")
    weights = trained_weights(zoo)
    proc = console("release_bundle", "stlu_la", "-o", str(zoo), "--weights", str(weights), "--weights_url",
                   "https://example.org/stlu_la/model.pt", cwd=zoo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(f"released stlu_la to {zoo / 'models' / 'stlu_la'}")
    return zoo


def test_the_release_builds_the_shipped_network_and_names_its_weights(release):
    """The released configs take the model's recorded settings (a quick model: 8 filters, not the bundle's 16), so
    the network the zoo's check builds loads the shipped weights as they are; ``large_files.yml`` names their md5
    (computed here from the file) and the upload URL."""
    import hashlib

    from monai.bundle import ConfigParser

    root = release / "models" / "stlu_la"
    train = json.loads((root / "configs" / "train.json").read_text())
    assert train["n_filters"] == 8 and train["patch_size"] == [64, 64, 48]
    shipped = root / "models" / "model.pt"
    assert shipped.read_bytes() == (release / "vnet_STLUMethod.pt").read_bytes()
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "inference.json")])
    parser["bundle_root"] = str(root)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(shipped, weights_only=True), strict=True)
    text = (root / "large_files.yml").read_text()
    assert f'hash_val: "{hashlib.md5(shipped.read_bytes()).hexdigest()}"' in text
    assert 'path: "models/model.pt"' in text and 'url: "https://example.org/stlu_la/model.pt"' in text


def test_the_released_docs_read_from_the_released_folder(release):
    """The released ``docs/README.md`` names paths relative to the bundle (it runs from its own folder), leaves out
    the repository's protocol and speed sections, and names the repository's files as such, not as paths."""
    import re

    text = (release / "models" / "stlu_la" / "docs" / "README.md").read_text()
    assert "bundles/stlu_la" not in text and "## Quality protocol" not in text and "## Performance" in text
    assert not re.search(r"`(BENCHMARKS\.md|tests/|benchmarks/)", text)
    assert "--config_file configs/train.json" in text  # a command as a user types it in the released folder


def test_a_release_without_weights_or_with_another_methods_is_refused(tmp_path):
    """Without weights the zoo's own check fails ("models/model.pt is not existing"): refused before anything is
    written; weights of another method would not fit the bundle's network: refused, naming the file."""
    none = console("release_bundle", "stlu_la", "-o", str(tmp_path / "zoo"), cwd=tmp_path)
    assert none.returncode != 0 and "ships its trained weights" in last_line(none), last_line(none)
    other = trained_weights(tmp_path, method="MeanTeacherMethod")
    proc = console("release_bundle", "stlu_la", "-o", str(tmp_path / "zoo"), "--weights", str(other), cwd=tmp_path)
    assert proc.returncode != 0 and last_line(proc).startswith(f"{other}: records the method MeanTeacherMethod")
    assert not (tmp_path / "zoo" / "models" / "stlu_la").exists()


def test_release_is_self_contained_and_declares_what_it_needs(release):
    root = release / "models" / "stlu_la"
    assert (root / "scripts" / "monai_stlu" / "engines" / "methods" / "stlu.py").is_file()
    assert not list(root.rglob("__pycache__")) and [p.name for p in (root / "models").iterdir()] == ["model.pt"]
    assert not (root / "configs" / "bundle_delta.json").exists()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert "monai_stlu" not in meta["required_packages_version"]
    pin = next(line for line in (REPO_ROOT / "tests" / "monailabel_requirements.txt").read_text().splitlines()
               if line.startswith("monailabel=="))
    assert meta["supported_apps"] == {"monailabel": pin.split("==")[1]}  # the version the MONAI Label test serves
    train = json.loads((root / "configs" / "train.json").read_text())
    assert train["imports"].index("$import scripts") < train["imports"].index("$import monai_stlu")
    assert (release / "ci" / "unit_tests" / "test_stlu_la.py").read_text().count('BUNDLE = "stlu_la"') == 1
    # only the modules the configs and unit tests reach: the command line and the repository's tools stay out
    vendored = root / "scripts" / "monai_stlu"
    for left_out in ("cli.py", "__main__.py", "bundle/compare.py", "bundle/release.py"):
        assert not (vendored / left_out).exists(), left_out
    for kept in ("data/translated_crop.py", "data/synthetic.py", "engines/methods/tracoco.py", "utils/run_lock.py",
                 "networks/nets/resnet_vnet.py", "losses/confident_regional_ce_loss.py"):
        assert (vendored / kept).is_file(), kept


@pytest.mark.long
def test_release_refuses_to_overwrite_unless_asked(release):
    weights = ["--weights", str(release / "vnet_STLUMethod.pt")]
    proc = console("release_bundle", "stlu_la", "-o", str(release), *weights, cwd=release)
    assert proc.returncode == 1
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert "models/stlu_la exists" in last and "--overwrite" in last
    assert (release / "models" / "stlu_la" / "configs" / "metadata.json").is_file()  # the release is intact
    assert console("release_bundle", "stlu_la", "-o", str(release), *weights, "--overwrite", cwd=release).returncode == 0
    assert not [p for p in (release / "models").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_zoo_requirements_resolve_on_the_public_index(release, tmp_path):
    from monai_stlu.bundle import zoo_requirements

    meta = json.loads((release / "models" / "stlu_la" / "configs" / "metadata.json").read_text())
    lines = zoo_requirements(meta)
    if ZOO and (Path(ZOO) / "ci" / "get_bundle_requirements.py").is_file():
        out = subprocess.run([sys.executable, str(Path(ZOO) / "ci" / "get_bundle_requirements.py"), "--b", "stlu_la",
                              "--models_path", str(release / "models")], cwd=tmp_path, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            lines = (tmp_path / out.stdout.strip().splitlines()[-1]).read_text().split()
    assert not any(line.startswith("monai_stlu") for line in lines) and "torch==2.13.0" in lines
    req = tmp_path / "requirements.txt"
    req.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-deps", "--ignore-installed", "-q",
         "--index-url", "https://pypi.org/simple", "-r", str(req), "--report", str(report)],
        capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "Network is unreachable" in proc.stderr + proc.stdout and os.environ.get("CI") != "true":
        pytest.skip("pypi.org is not reachable from here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    for line in lines:
        name, version = line.split("==")
        assert resolved[name.lower()] == version, line
        assert "pythonhosted.org" in json.dumps(json.loads(report.read_text()))  # served by the public index


@pytest.fixture(scope="module")
def release_dynunet(tmp_path_factory):
    """A release on MONAI's DynUNet (``--backbone dynunet``)."""
    zoo = tmp_path_factory.mktemp("zoo_dynunet")
    weights = trained_weights(zoo, backbone="dynunet")
    proc = console("release_bundle", "stlu_la", "-o", str(zoo), "--weights", str(weights), cwd=zoo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return zoo


#: the trained LA model the repository ships for releases: STLU-Net of the CPU protocol (half resolution, 2,500
#: iterations, 8 filters), the seed with the best validation Dice (BENCHMARKS.md, first section)
TRAINED_MODEL = REPO_ROOT / "benchmarks" / "results" / "protocol_half2500" / "models" / "stlu_la_half2500_seed1.pt"


@pytest.fixture(scope="module")
def release_trained(tmp_path_factory):
    """A release of the committed trained model, evaluated on the shared LA test cases as the release command does."""
    la = shared_la_dir()
    zoo = tmp_path_factory.mktemp("zoo_trained")
    proc = console("release_bundle", "stlu_la", "-o", str(zoo), "--weights", str(TRAINED_MODEL), "--evaluate", str(la),
                   "--test_list", "subset_test.list", "--training", "the CPU protocol's STLU-Net", cwd=zoo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return zoo


@pytest.mark.long
def test_the_committed_model_releases_with_its_accuracy(release_trained):
    """The committed model's release builds its network (8 filters, 64 x 64 x 32 crops, LA at 1.25 mm) and its
    evaluation on the 8 test cases gives the accuracy the protocol measured for it (83.06 % Dice at the protocol's
    stride 16 x 16 x 8; the release evaluates at its own stride 18 x 18 x 4, so within a point)."""
    root = release_trained / "models" / "stlu_la"
    train = json.loads((root / "configs" / "train.json").read_text())
    assert train["n_filters"] == 8 and train["patch_size"] == [64, 64, 32] and train["target_spacing"] == [1.25] * 3
    metrics = json.loads((root / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert metrics["mean_dice"] == pytest.approx(0.8306, abs=0.01)
    assert "## Performance" in (root / "docs" / "README.md").read_text()


@pytest.mark.parametrize("backbone", quick_subset(["vnet", "dynunet", "trained"], {"vnet"}))  # the others: long
def test_zoo_checks_and_unit_test_pass_without_this_repository(backbone, request):
    release = request.getfixturevalue({"vnet": "release", "dynunet": "release_dynunet", "trained": "release_trained"}[
        backbone])
    root = release / "models" / "stlu_la"
    unit_tests = release / "ci" / "unit_tests"
    zoo_utils = Path(ZOO) / "ci" / "unit_tests" / "utils.py" if ZOO else None
    (unit_tests / "utils.py").write_text(zoo_utils.read_text() if zoo_utils and zoo_utils.is_file() else CHECK_WORKFLOW)
    schema = str(SCHEMA) if SCHEMA.is_file() else ""
    if not schema and os.environ.get("CI") == "true":
        pytest.fail(f"{SCHEMA} is missing in CI")
    proc = isolated(f"""
        import os
        try:
            import monai_stlu
            raise SystemExit("monai_stlu is importable without the bundle: the check would not be isolated")
        except ModuleNotFoundError:
            pass
        bundle = os.path.join("models", "stlu_la")
        sys.path.insert(0, bundle)  # what the zoo's verify_bundle.py does
        import scripts, monai_stlu
        assert monai_stlu.__file__.startswith(os.path.abspath(os.path.join(bundle, "scripts"))), monai_stlu.__file__
        import torch
        from monai.bundle import ConfigParser, ckpt_export, verify_metadata
        meta = os.path.join(bundle, "configs", "metadata.json")
        if {schema!r}:
            verify_metadata(meta_file=meta, filepath={schema!r})
        parser = ConfigParser()
        parser.read_config(os.path.join(bundle, "configs", "inference.json"))
        parser["bundle_root"] = bundle
        os.makedirs("verify", exist_ok=True)  # the zoo's check writes its own weights; the bundle stays as released
        net = parser.get_parsed_content("network_def")
        print("backbone:", type(net.backbone).__name__)
        shipped = torch.load(os.path.join(bundle, "models", "model.pt"), weights_only=True)
        net.load_state_dict(shipped, strict=True)  # the configs build the shipped network
        torch.save(net.state_dict(), os.path.join("verify", "model.pt"))
        ckpt_export(net_id="network_def", filepath=os.path.join("verify", "model.ts"), meta_file=meta,
                    config_file=os.path.join(bundle, "configs", "inference.json"),
                    ckpt_file=os.path.join("verify", "model.pt"), bundle_root=bundle)
        out = torch.jit.load(os.path.join("verify", "model.ts"))(torch.rand(1, 1, 32, 32, 32))
        assert out.shape == (1, 2, 32, 32, 32)
        print("exported")
        import unittest
        sys.path.insert(0, os.path.join("ci", "unit_tests"))
        import test_stlu_la
        loader = unittest.TestLoader()
        loader.sortTestMethodsUsing = test_stlu_la.test_order  # train first, as the zoo's runner orders them
        suite = loader.loadTestsFromModule(test_stlu_la)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
        assert result.wasSuccessful() and result.testsRun == 2, result
        print("unit tests passed")
    """, cwd=release)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "exported" in log and "unit tests passed" in log
    assert f"backbone: {'DynUNetBackbone' if backbone == 'dynunet' else 'VNet'}" in log
    assert (root / "models" / "model.pt").is_file() and (root / "eval" / "metrics.csv").is_file()


@pytest.mark.long
def test_the_zoo_multi_gpu_unit_test_passes(release):
    """The release's ``ci/unit_tests/test_stlu_la_dist.py`` (torchrun: two CPU processes here, Gloo) trains with
    ``multi_gpu_train.json`` and evaluates with ``multi_gpu_evaluate.json``, with the zoo's helper."""
    unit_tests = release / "ci" / "unit_tests"
    assert (unit_tests / "test_stlu_la_dist.py").is_file()
    zoo_utils = Path(ZOO) / "ci" / "unit_tests" / "utils.py" if ZOO else None
    (unit_tests / "utils.py").write_text(
        zoo_utils.read_text() if zoo_utils and zoo_utils.is_file() else CHECK_WORKFLOW + MGPU_RUN)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "unittest", "-v", "test_stlu_la_dist"], cwd=release,
                          env={**env, "PYTHONPATH": str(unit_tests)}, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "OK" in log, log[-5000:]
    root = release / "models" / "stlu_la"
    assert (root / "eval" / "metrics.csv").is_file()


@pytest.mark.long
def test_release_evaluates_the_shipped_weights(tmp_path):
    """``--evaluate DATA --test_list L``: the release, run from its own folder with its own code, scores its test
    cases; ``eval_metrics`` and the docs' Performance table give the mean, equal to what the repository's bundle
    configs measure for the same weights on the same cases."""
    import csv

    from monai_stlu.data import write_synthetic_la

    data = tmp_path / "data"
    write_synthetic_la(str(data), num_train=12, num_test=2, shape=(64, 64, 48))
    weights = trained_weights(tmp_path)
    zoo = tmp_path / "zoo"
    proc = console("release_bundle", "stlu_la", "-o", str(zoo), "--weights", str(weights), "--evaluate", str(data),
                   "--test_list", "test.list", "--training", "a test model", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = zoo / "models" / "stlu_la"
    metrics = json.loads((root / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert set(metrics) == {"mean_dice", "mean_jaccard", "mean_hd95_mm", "mean_asd_mm"}
    readme = (root / "docs" / "README.md").read_text()
    performance = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "a test model" in performance and f"{100 * metrics['mean_dice']:.2f}" in performance
    assert "BENCHMARKS" not in performance  # the repository's own text is replaced
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    (tmp_path / "bundle" / "models" / "model.pt").write_bytes(weights.read_bytes())
    configs = REPO_ROOT / "bundles" / "stlu_la" / "configs"
    out = tmp_path / "repo_eval"
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file",
         str([str(configs / "train.json"), str(configs / "evaluate.json")]), "--bundle_root", str(tmp_path / "bundle"),
         "--dataset_dir", str(data), "--output_dir", str(out), "--progress", "false", "--n_filters", "8",
         "--patch_size", "[64,64,48]"], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "metrics.csv") as f:
        dice = [float(r["dice"]) for r in csv.DictReader(f) if r.get("class", "1") != "0"]
    assert len(dice) == 2 and metrics["mean_dice"] == pytest.approx(sum(dice) / 2, abs=1e-4)
