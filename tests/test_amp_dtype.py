"""The mixed-precision dtype chosen per device (decision logic, checked on CPU with the device facts patched)."""

from __future__ import annotations

import pytest
import torch

from monai_stlu.utils import fast_path
from monai_stlu.utils.fast_path import at_least_float32, autocast, autocast_dtype


@pytest.mark.parametrize("bf16_gpu,want", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_prefers_bf16_where_supported(monkeypatch, bf16_gpu, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    assert autocast_dtype("cuda") is want
    assert autocast_dtype("cuda:0", "auto") is want


def test_a_gpu_that_emulates_bf16_gets_float16_with_a_scaler(monkeypatch):
    """A V100 or T4: ``is_bf16_supported()`` says True by counting emulation, which is slower than float16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert autocast_dtype("cuda") is torch.float16


@pytest.mark.parametrize("native,want", [(True, torch.bfloat16), (False, None)])
def test_cpu_uses_bf16_only_where_native(monkeypatch, native, want):
    monkeypatch.setattr(fast_path, "cpu_supports_bf16", lambda: native)
    assert autocast_dtype("cpu") is want


@pytest.mark.parametrize(
    "choice,want",
    [("bfloat16", torch.bfloat16), ("BF16", torch.bfloat16), ("float16", torch.float16), ("half", torch.float16),
     ("float32", None), ("fp32", None), (torch.float32, None), (torch.bfloat16, torch.bfloat16)],
)
def test_forced_choices(choice, want):
    assert autocast_dtype("cuda", choice) is want and autocast_dtype("cpu", choice) is want


def test_unknown_choice_is_named():
    with pytest.raises(ValueError, match="amp_dtype 'int8' is not one of"):
        autocast_dtype("cpu", "int8")


def test_float32_gives_no_autocast_and_bf16_does(monkeypatch):
    monkeypatch.setattr(fast_path, "cpu_supports_bf16", lambda: True)
    x = torch.randn(4, 4)
    with autocast("cpu", dtype=torch.float32):
        assert (x @ x).dtype == torch.float32
    with autocast("cpu", dtype="auto"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast("cpu", enabled=False):
        assert (x @ x).dtype == torch.float32


def test_trainer_uses_a_scaler_only_for_cuda_fp16():
    from monai.data import DataLoader, Dataset

    from conftest import sphere_cases
    from monai_stlu.engines import SemiSupervisedTrainer, SupervisedMethod
    from monai_stlu.networks import VNet

    net = VNet(n_filters=2)
    loader = DataLoader(Dataset(sphere_cases(2, size=16)), batch_size=2)
    for choice, want in (("float32", None), ("bfloat16", torch.bfloat16)):
        trainer = SemiSupervisedTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), lr=0.01),
                                        SupervisedMethod(), epoch_length=1, amp=True, amp_dtype=choice)
        assert trainer.amp_dtype is want
        trainer.run()
        assert trainer.scaler is None  # no gradient scaler off CUDA, whatever the dtype


@pytest.mark.parametrize(
    "dtype,want",
    [(torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float32, torch.float32),
     (torch.float64, torch.float64), (torch.int64, torch.float32)],
)
def test_losses_widen_low_precision_only(dtype, want):
    x = (torch.arange(6) - 2).to(dtype)
    got = at_least_float32(x)
    assert got.dtype == want and torch.equal(got.double(), x.double())
    if dtype in (torch.float32, torch.float64):
        assert got is x  # no copy
    third = torch.tensor([1.0 / 3.0], dtype=torch.float64)
    assert at_least_float32(third).item() == 1.0 / 3.0  # .float() would round it to 0.3333333432674408
