"""MONAI's networks as backbones (the bundles' ``backbone`` key): each adapter is the MONAI network itself (same
parameters, names and forward), its stages run one at a time reproduce the forward, STLU-Net's two streams through it
match the float64 formula, the export equals the eager network; the bundles train, evaluate, export and predict
with it, and a method whose network needs the V-Net refuses another backbone in one sentence."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from monai.networks.nets import DynUNet, SegResNet, UNet

from bundle_utils import config_list, quick_subset, run_bundle
from conftest import REPO_ROOT, shared_la_dir
from monai_stlu.handlers import describe_module
from monai_stlu.networks import check_patch_size
from monai_stlu.networks.nets import BACKBONES, STLUNet, VNet, build_backbone, check_backbone, plan_dynunet
from test_stlu_net import assert_streams_match_reference

MONAI_BACKBONES = ["dynunet", "segresnet", "unet"]
SIZE = [32, 32, 32]


def _backbone(name: str, n_filters: int = 8, size=SIZE, spacing=(1.0, 1.0, 1.0)) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, n_filters=n_filters, patch_size=size, spacing=spacing)


def _plain(name: str, net: torch.nn.Module) -> torch.nn.Module:
    """The MONAI network built directly, with the arguments the adapter was given (MONAI's defaults otherwise)."""
    if name == "dynunet":
        return DynUNet(3, 1, 2, net.kernel_size, net.strides, net.strides[1:], filters=net.filters)
    if name == "segresnet":
        return SegResNet(3, init_filters=8, in_channels=1, out_channels=2)
    return UNet(3, 1, 2, channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2), num_res_units=2)


def _stages(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    feats = []
    for stage in net.encoder:
        x = stage(x)
        feats.append(x)
    return feats


def test_plan_dynunet_follows_nnunet_rules():
    # isotropic LA patch: every axis halves while it stays >= 4 voxels after halving: 4 down-samplings, 3-kernels
    kernels, strides = plan_dynunet([112, 112, 80], [0.625] * 3)
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 4 and kernels == [[3, 3, 3]] * 5
    # 64x64x48: z stops one stage earlier (6 -> 3 would go below 4)
    assert plan_dynunet([64, 64, 48], [1, 1, 1])[1] == [[1, 1, 1]] + [[2, 2, 2]] * 3 + [[2, 2, 1]]
    # thick slices (0.7 x 0.7 x 5 mm), worked by hand: z gets 1-kernels and no pooling until in-plane spacing reaches
    # half of z's (2.8 mm after two poolings), then pools with the others; at most 5 poolings
    kernels, strides = plan_dynunet([160, 160, 20], [0.7, 0.7, 5.0])
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    with pytest.raises(ValueError, match="cannot be halved evenly"):
        plan_dynunet([36, 36, 36], [1, 1, 1])  # 36 -> 18 -> 9 -> (9 is pooled: >= 8) odd


@pytest.mark.parametrize("name", MONAI_BACKBONES)
def test_adapter_is_the_monai_network(name):
    net, plain = _backbone(name).eval(), None
    plain = _plain(name, net).eval()
    assert list(net.state_dict()) == list(plain.state_dict())  # the same parameter names, in the same order
    plain.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), rtol=0, atol=0)
    other = _plain(name, net)  # and back: a plain network's weights load into the adapter
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), other.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", BACKBONES)
def test_stages_then_decoder_equal_the_forward(name):
    net = _backbone(name).eval()
    x = torch.randn(2, 1, *SIZE)
    with torch.no_grad():
        feats = _stages(net, x)
        torch.testing.assert_close(net.decode_stages(feats), net(x), rtol=0, atol=0)
    assert len(feats) >= 4 and feats[-1].shape[-1] < SIZE[-1] // 4  # real stages, down to a coarse bottleneck


@pytest.mark.parametrize("name", quick_subset(MONAI_BACKBONES, {"dynunet", "unet"}))  # SegResNet: long suite
def test_two_streams_match_the_float64_formula_at_every_stage(name):
    """FeatureMix after every stage (and channel dropout at p = 0) against the two streams computed separately
    with the cosine formula in float64: outputs and every parameter's gradient."""
    torch.manual_seed(1)
    net = STLUNet(backbone=_backbone(name), dropout_prob=0.0).double().train()
    assert net.mix_stages == list(range(len(net.backbone.encoder)))
    xl, xu = torch.rand(2, 1, *SIZE, dtype=torch.float64), torch.rand(2, 1, *SIZE, dtype=torch.float64) * 2 - 0.5
    outs = assert_streams_match_reference(net, xl, xu)
    # mixing matters: without it the labeled stream is the plain network's output
    with torch.no_grad():
        assert (outs[0] - net.backbone(xl)).abs().max() > 1e-4


@pytest.mark.parametrize("name", MONAI_BACKBONES)
def test_torchscript_and_onnx_export_equal_eager(name, tmp_path):
    import onnxruntime as ort
    from monai.networks import convert_to_onnx

    net = STLUNet(backbone=_backbone(name)).eval()
    x = torch.randn(1, 1, *SIZE)
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(torch.jit.script(net)(x), ref, rtol=1e-5, atol=1e-5)
    path = tmp_path / "net.onnx"
    convert_to_onnx(net, inputs=[x], input_names=["image"], output_names=["pred"], filename=str(path), verify=False)
    out = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_vnet_backbone_is_the_networks_the_bundles_built_before():
    # model.pt files of earlier releases keep loading: the vnet backbone is the same V-Net under the same names
    assert list(STLUNet(backbone=build_backbone("vnet", n_filters=4)).state_dict()) == list(STLUNet(n_filters=4).state_dict())
    with_dropout = build_backbone("vnet", n_filters=4, dropout=True, dropout_prob=0.3)
    assert isinstance(with_dropout, VNet) and with_dropout.dropout.p == 0.3
    assert list(with_dropout.state_dict()) == list(VNet(n_filters=4, dropout=True).state_dict())


def test_names_sizes_and_refusals():
    assert describe_module(STLUNet(backbone=_backbone("dynunet"))) == "STLUNet on DynUNet (n_filters 8, 1 input channel, 2 classes)"
    with pytest.raises(ValueError, match=r"backbone 'resnet' is unknown: choose one of vnet, dynunet, segresnet, unet"):
        build_backbone("resnet")
    with pytest.raises(ValueError, match=r"^DTCMethod cannot run on backbone 'unet': .* set backbone to 'vnet'\.$"):
        check_backbone("unet", ["vnet"], "DTCMethod")
    assert check_backbone("DynUNet") == "dynunet"
    # a DynUNet planned for an anisotropic patch has one divisor per axis
    net = _backbone("dynunet", size=[64, 64, 48])
    assert net.size_divisor == [16, 16, 8]
    assert check_patch_size([64, 64, 48], net) == [64, 64, 48]
    with pytest.raises(ValueError, match=r"patch_size \[64, 64, 44\] does not suit DynUNetBackbone: .*\[16, 16, 8\]"):
        check_patch_size([64, 64, 44], net)


# ---- through the bundles -------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.long  # the quick suite trains every single-network method on a MONAI backbone in-process (below)
@pytest.mark.parametrize("backbone", MONAI_BACKBONES)
@pytest.mark.parametrize("method", ["stlu", "mean_teacher"])
def test_bundle_trains_evaluates_exports_and_predicts_on_the_backbone(backbone, method, tmp_path):
    la = shared_la_dir()
    common = [
        "--dataset_dir", str(la), "--train_list", "subset_train.list", "--test_list", "subset_test.list",
        "--bundle_root", str(tmp_path), "--num_val", "1", "--max_iterations", "3", "--val_interval", "3",
        "--progress", "false", "--backbone", backbone,
    ]
    files = ["train.json", "quick.json", f"methods/{method}.json"]
    proc = run_bundle("run", "training", "--config_file", config_list("stlu_la", *files), *common, "--log_interval", "1")
    log = proc.stdout + proc.stderr
    losses = [float(x.split("loss: ")[1].split()[0]) for x in log.splitlines() if " loss: " in x]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses), log[-2000:]
    family = {"dynunet": "DynUNet", "segresnet": "SegResNet", "unet": "UNet"}[backbone]
    models = tmp_path / "models" / ("" if method == "stlu" else method)
    ckpt = torch.load(next(models.glob("checkpoint_*.pt")), weights_only=True)
    assert family in ckpt["run_info"]["network"]

    run_bundle("run", "--config_file", config_list("stlu_la", *files, "evaluate.json"), *common, "--num_eval_cases", "1")
    with open(tmp_path / "eval" / ("" if method == "stlu" else method) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["dice"]))

    # the exported network is the plain MONAI network with the trained weights
    ts = tmp_path / "model.ts"
    run_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(models / "model.pt"),
               "--meta_file", str(REPO_ROOT / "bundles" / "stlu_la" / "configs" / "metadata.json"),
               "--config_file", config_list("stlu_la", "inference.json", f"methods/{method}.json"),
               "--n_filters", "8", "--patch_size", "[64,64,48]", "--backbone", backbone)
    plain = build_backbone(backbone, n_filters=8, patch_size=[64, 64, 48], spacing=[0.625] * 3).eval()
    state = torch.load(models / "model.pt", weights_only=True)
    plain.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items()})
    x = torch.randn(1, 1, 64, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), plain(x), rtol=1e-5, atol=1e-5)

    if method == "stlu" and backbone == "dynunet":  # the CLI rebuilds the network from the model's record alone
        import subprocess
        import sys

        case = la / "2018LA_Seg_Training Set" / "UPT6DX9IQY9JAZ7HJKA7" / "mri_norm2.h5"
        out = subprocess.run([sys.executable, "-m", "monai_stlu", "predict", "-i", str(case), "-o", str(tmp_path / "pred"),
                              "--model", str(models / "model.pt"), "--eval_stride", "[32,32,24]"],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        assert len(list((tmp_path / "pred").glob("*_seg.nii.gz"))) == 1


@pytest.mark.integration
def test_a_method_built_on_the_vnet_refuses_another_backbone(tmp_path):
    proc = run_bundle(
        "run", "training", "--config_file", config_list("stlu_la", "train.json", "quick.json", "methods/dtc.json"),
        "--bundle_root", str(tmp_path), "--backbone", "dynunet", check=False,
    )
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert proc.returncode != 0
    assert last == ("DTCMethod cannot run on backbone 'dynunet': its network (extra heads or decoders) is built on "
                    "vnet only; set backbone to 'vnet'."), last
    assert not (tmp_path / "models" / "dtc").exists() or not any((tmp_path / "models" / "dtc").iterdir())


@pytest.fixture(scope="module")
def synthetic_la(tmp_path_factory):
    from monai_stlu.data import write_synthetic_la

    return write_synthetic_la(str(tmp_path_factory.mktemp("synthetic") / "data"), num_train=8, num_test=1,
                              shape=(40, 40, 36))


@pytest.mark.parametrize("method", ["supervised", "ua_mt", "cps", "bcp", "ict", "dan"])
def test_every_single_network_method_trains_on_a_monai_backbone(method, synthetic_la, tmp_path):
    """The other methods that train one segmentation network, two iterations on MONAI's UNet through the bundle's own
    trainer (the config as the bundle parses it, synthetic volumes): finite losses, and the trained network is the
    MONAI network under its own parameter names."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    configs = REPO_ROOT / "bundles" / "stlu_la" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "methods" / f"{method}.json")])
    parser.update({
        "bundle_root": str(tmp_path), "dataset_dir": synthetic_la, "num_labeled": 2, "num_val": 0, "backbone": "unet",
        "n_filters": 4, "patch_size": [32, 32, 32], "val_stride": [16, 16, 16], "max_iterations": 2, "val_interval": 2,
        "labeled_batch_size": 2, "unlabeled_batch_size": 2, "uncertainty_passes": 2, "bcp_pretrain_iterations": 2,
        "progress": False, "num_workers": 0, "amp": False, "cache_rate": 0.0,
    })
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    losses = []
    # the output is decollated per sample, as MONAI's trainers leave it; every sample carries the batch's loss
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    assert len(losses) == 2 + (2 if method == "bcp" else 0) and all(math.isfinite(v) for v in losses), losses
    network = parser.get_parsed_content("network")
    assert type(network).__name__ == "UNetBackbone" and "model.0.conv.unit0.conv.weight" in network.state_dict()
