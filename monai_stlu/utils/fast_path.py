# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Mixed precision and memory-format helpers: bf16 autocast on capable CPUs, fp16 AMP on CUDA."""

from __future__ import annotations

import contextlib
import functools

import torch
from monai.data import MetaTensor

__all__ = ["cpu_supports_bf16", "autocast_dtype", "autocast", "to_channels_last", "as_plain_tensor"]


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX), so bf16 autocast pays off."""
    checks = (
        lambda: torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        lambda: torch.cpu._is_avx512_bf16_supported(),
        lambda: torch.cpu._is_amx_tile_supported(),
    )
    for check in checks:
        try:
            if check():
                return True
        except (AttributeError, RuntimeError):
            continue
    return False


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype the fast path uses on ``device``: fp16 on CUDA, bf16 on a bf16-capable CPU, else None."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None):
    """A ``torch.autocast`` context for ``device`` (a no-op context when disabled or unsupported).

    Args:
        device: where the computation runs.
        enabled: whether mixed precision is wanted at all.
        dtype: force an autocast dtype; default :py:func:`autocast_dtype`.
    """
    device = torch.device(device)
    dtype = autocast_dtype(device) if dtype is None else dtype
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in ``channels_last_3d`` (5-D) or ``channels_last`` (4-D) memory format; others unchanged."""
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def as_plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` without MONAI metadata: inside a 3D network, MetaTensor metadata tracking through every op costs
    seconds per iteration on CPU, so networks compute on plain tensors."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x
