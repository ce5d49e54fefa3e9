"""MONAI Label serves and trains the LA bundle over HTTP: its ``monaibundle`` sample app, the bundle from a local
folder (no download), a studies folder of NIfTI scans written from real LA cases (three with labels, two without).

The server runs in a virtual environment of its own (``tests/monailabel_requirements.txt``: MONAI Label needs
torchvision, which needs a CUDA build of torch), built once per requirements file (``tests/venv_utils.py``); monai_stlu comes from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from conftest import REPO_ROOT
from venv_utils import cached_venv

pytestmark = pytest.mark.long  # the long suite (CI runs it after the README's quick test command)

REQUIREMENTS = Path(__file__).with_name("monailabel_requirements.txt")
LABELED, UNLABELED = 3, 2
BUNDLES = ("stlu_la", "stlu_pancreas", "stlu_brats")
# the LA bundle switched to MONAI's DynUNet by its backbone key, served as one more model
DYNUNET = "stlu_la_dynunet"


def monailabel_venv() -> Path:
    """The MONAI Label virtual environment, rebuilt when its requirements file changes."""
    return cached_venv("monailabel", REQUIREMENTS.read_bytes(), [["-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: dict | None = None, post: bool = False, timeout: int = 900) -> bytes:
    """GET, or POST (a JSON body when ``data`` is given, an empty form otherwise)."""
    post = post or data is not None
    body = json.dumps(data).encode() if data is not None else (b"" if post else None)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=body, method="POST" if post else "GET", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


@pytest.fixture(scope="module")
def server(la_dir, tmp_path_factory):
    venv = monailabel_venv()
    root = tmp_path_factory.mktemp("monailabel")
    app = root / "app"
    shutil.copytree(venv / "monailabel" / "sample-apps" / "monaibundle", app)
    import torch

    from monai_stlu.networks import STLUNet
    from monai_stlu.networks.nets import build_backbone

    for name in (*BUNDLES, DYNUNET):
        bundle = app / "model" / name
        source = REPO_ROOT / "bundles" / (name if name != DYNUNET else "stlu_la")
        shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
        # the model MONAI Label starts from: the network's initial weights (no trained weights are published yet)
        (bundle / "models").mkdir()
        net = STLUNet()
        if name == DYNUNET:
            for config in ("train.json", "inference.json"):
                path = bundle / "configs" / config
                path.write_text(path.read_text().replace('"backbone": "vnet"', '"backbone": "dynunet"'))
            net = STLUNet(backbone=build_backbone("dynunet", patch_size=[112, 112, 80], spacing=[0.625] * 3))
        # answers in seconds: windows overlapping by half a patch instead of the published stride (LA's 18x18x4
        # places 45 windows on a 183x140x88 scan, half a patch 12); only the served label's geometry is checked here
        inference = bundle / "configs" / "inference.json"
        config = json.loads(inference.read_text())
        config["displayable_configs"]["eval_stride"] = [size // 2 for size in config["patch_size"]]
        inference.write_text(json.dumps(config, indent=4))
        torch.save(net.state_dict(), bundle / "models" / "model.pt")
    bundle = app / "model" / "stlu_la"
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    ids = (la_dir / "subset_train.list").read_text().split()[: LABELED + UNLABELED]
    affine = np.diag([0.625, 0.625, 0.625, 1.0])
    for i, case in enumerate(ids):
        with h5py.File(la_dir / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as f:
            image, label = f["image"][...], f["label"][...]
        # raw-like intensities (the h5 image is z-scored): the bundle normalises raw scans itself
        nib.save(nib.Nifti1Image((image * 120.0 + 500.0).astype(np.float32), affine), str(studies / f"{case}.nii.gz"))
        if i < LABELED:
            nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(studies / "labels" / "final" / f"{case}.nii.gz"))
    port = _free_port()
    log = open(root / "server.log", "w")
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="2")
    proc = subprocess.Popen(
        [str(venv / "bin" / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies),
         "--conf", "models", ",".join((*BUNDLES, DYNUNET)), "--conf", "zoo_source", "github", "--conf", "sam2", "false",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                info = json.loads(_request(url + "/info/", timeout=5))
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("the MONAI Label server stopped:\n" + (root / "server.log").read_text()[-4000:])
                time.sleep(2)
        else:
            pytest.fail("the MONAI Label server did not answer:\n" + (root / "server.log").read_text()[-4000:])
        yield {"url": url, "info": info, "ids": ids, "studies": studies, "bundle": bundle, "log": root / "server.log"}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        log.close()


def _infer(server, case: str, out: Path, model: str = "stlu_la") -> nib.Nifti1Image:
    out.write_bytes(_request(f"{server['url']}/infer/{model}?image={case}&output=image", post=True))
    return nib.load(str(out))


@pytest.mark.parametrize("model", (*BUNDLES, DYNUNET))
def test_every_bundle_is_served_and_answers_on_the_input_grid(server, model, tmp_path):
    """Each bundle loads in the sample app; its raw-scan steps (Pancreas: 1 mm resampling; BraTS: axis order and
    brain box) are undone on the returned label (an LA scan stands in for the modality: only geometry is checked)."""
    assert model in server["info"]["models"] and model in server["info"]["trainers"]
    case = server["ids"][0]
    scan = nib.load(str(server["studies"] / f"{case}.nii.gz"))
    pred = _infer(server, case, tmp_path / "pred.nii.gz", model)
    assert pred.shape == scan.shape and np.allclose(pred.affine, scan.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1}


def test_infer_train_with_unlabeled_studies_and_infer_again(server, tmp_path):
    info = server["info"]
    assert "stlu_la" in info["models"] and "stlu_la" in info["trainers"]
    options = info["trainers"]["stlu_la"]["config"]
    assert {"use_unlabeled", "iterations_per_epoch", "resume"} <= set(options)  # the bundle's displayable configs
    assert info["models"]["stlu_la"]["config"]["eval_stride"] == [56, 56, 40]  # from the bundle's inference.json
    case = server["ids"][-1]  # an unlabeled study
    scan = nib.load(str(server["studies"] / f"{case}.nii.gz"))
    pred = _infer(server, case, tmp_path / "before.nii.gz")
    assert pred.shape == scan.shape and np.allclose(pred.affine, scan.affine, atol=1e-4)  # the input's geometry
    assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1}

    model = server["bundle"] / "models" / "model.pt"
    before = model.stat().st_mtime
    request = {"max_epochs": 1, "iterations_per_epoch": 2, "val_split": 0.0, "device": "cpu", "use_unlabeled": True,
               "resume": False, "pretrained": True}
    for _ in range(2):  # the second request trains afresh (no resume of the first run's finished checkpoint)
        _request(f"{server['url']}/train/stlu_la?run_sync=true", data=request)
    log = server["log"].read_text()
    assert log.count(f"datastore training: {LABELED} labeled, {UNLABELED} unlabeled images.") == 2, log[-3000:]
    assert log.count("Epoch[1] Complete") == 2, log[-3000:]  # each request ran its epoch
    import torch

    state = torch.load(server["bundle"] / "models" / "checkpoint_epoch=1.pt", weights_only=True)["trainer"]
    assert (state["max_epochs"], state["epoch_length"], state["iteration"]) == (1, 2, 2)  # max_epochs x iterations_per_epoch
    assert model.stat().st_mtime > before

    _infer(server, case, tmp_path / "after.nii.gz")
    assert "Reload model from cache" in server["log"].read_text()  # the new model.pt serves the next inference


def test_a_bundle_on_dynunet_trains_and_serves_its_new_model(server, tmp_path):
    """The LA bundle with ``backbone: dynunet``: one training request, then the new DynUNet model answers."""
    bundle = server["bundle"].parent / DYNUNET
    model = bundle / "models" / "model.pt"
    before = model.stat().st_mtime
    request = {"max_epochs": 1, "iterations_per_epoch": 2, "val_split": 0.0, "device": "cpu", "use_unlabeled": True,
               "resume": False, "pretrained": True}
    _request(f"{server['url']}/train/{DYNUNET}?run_sync=true", data=request)
    assert model.stat().st_mtime > before
    import torch

    state = torch.load(model, weights_only=True)
    assert any(k.startswith("backbone.input_block.") for k in state)  # DynUNet's own parameter names
    case = server["ids"][0]
    scan = nib.load(str(server["studies"] / f"{case}.nii.gz"))
    pred = _infer(server, case, tmp_path / "pred.nii.gz", DYNUNET)
    assert pred.shape == scan.shape and set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1}
