"""``benchmarks/speed.py --ckpt``: the V-Net weights are taken from a trained V-Net / STLU-Net / bundle checkpoint."""

from __future__ import annotations

import pytest
import torch

from benchmarks.speed import _vnet_weights_from
from monai_stlu.networks import STLUNet, VNet


@pytest.mark.parametrize("form", ["vnet", "stlu", "bundle_checkpoint"])
def test_vnet_weights_from_checkpoints(tmp_path, form):
    torch.manual_seed(0)
    net = STLUNet(n_filters=4) if form != "vnet" else VNet(n_filters=4)
    state = net.state_dict()
    src = tmp_path / "in.pt"
    torch.save({"model": state, "optimizer": {}} if form == "bundle_checkpoint" else state, src)
    out = tmp_path / "vnet.pt"
    assert _vnet_weights_from(str(src), str(out)) == 4
    vnet = VNet(n_filters=4)
    vnet.load_state_dict(torch.load(out, weights_only=True))  # strict: every key matches
    backbone = net.backbone if form != "vnet" else net
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(vnet.eval()(x), backbone.eval()(x))


def test_vnet_weights_from_rejects_other_networks(tmp_path):
    src = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), src)
    with pytest.raises(ValueError, match="other.pt.*not a V-Net"):
        _vnet_weights_from(str(src), str(tmp_path / "vnet.pt"))
