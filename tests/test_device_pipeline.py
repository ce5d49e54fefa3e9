"""``data_on_device``: volumes cached on the training device, so crops, rotations and flips run there (MONAI's
fast-training pattern, ThreadDataLoader). For the same random state it yields the same crops as the host pipeline;
on a machine with CUDA the same test compares the GPU pipeline with the CPU one."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here")])]


def batches(data_dir, tmp_path, on_device: bool, device: str, n: int = 3):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": data_dir, "num_val": 1, "num_labeled": 4,
                   "data_on_device": on_device, "device": torch.device(device), "progress": False,
                   "num_workers": 0})  # one random stream on both sides (the bundle gives CUDA runs 4 workers)
    set_determinism(seed=7)
    loader = parser.get_parsed_content("train#dataloader")
    out = []
    for i, batch in enumerate(loader):
        out.append({k: torch.as_tensor(batch[k]) for k in ("image", "label")})
        if i + 1 == n:
            break
    set_determinism(seed=None)
    return out, loader


@pytest.mark.parametrize("device", DEVICES)
def test_device_pipeline_gives_the_host_pipeline_crops(tmp_path, device):
    from monai_stlu.data import write_synthetic_la

    data = write_synthetic_la(str(tmp_path / "data"), num_train=6, num_test=1, shape=(80, 72, 56))
    host, host_loader = batches(data, tmp_path, False, device)
    dev, dev_loader = batches(data, tmp_path, True, device)
    assert type(dev_loader).__name__ == "ThreadDataLoader" and dev_loader.num_workers == 0
    for a, b in zip(host, dev):
        assert b["image"].device.type == device  # crops made on the device
        assert a["image"].shape == (2, 1, 64, 64, 48)
        torch.testing.assert_close(a["image"].cpu(), b["image"].cpu())
        torch.testing.assert_close(a["label"].cpu(), b["label"].cpu())
    assert not torch.equal(host[0]["image"], host[1]["image"])  # random crops indeed differ between batches
