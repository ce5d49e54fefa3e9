# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Mixed precision and memory-format helpers: bf16 autocast on capable CPUs, fp16 AMP on CUDA."""

from __future__ import annotations

import contextlib
import functools
import platform

import torch
from monai.data import MetaTensor

__all__ = [
    "cpu_name", "cpu_supports_bf16", "autocast_dtype", "autocast", "to_channels_last", "as_plain_tensor", "argmax",
    "at_least_float32", "module_to_channels_last",
]


def cpu_name() -> str:
    """The CPU to name next to speed figures: its model name and, since one name covers CPUs of several generations
    (``AMD EPYC`` is an AVX2-only core on one machine and an AVX-512 BF16 core on another), its family and model
    numbers, the vector instruction set torch dispatches to and whether bf16 runs natively (``/proc/cpuinfo``; else
    what :py:mod:`platform` knows). For example ``AMD EPYC (family 26 model 2, AVX512 with native bf16)``."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip() and fields:
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    details = [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields else []
    capability = torch.backends.cpu.get_cpu_capability()
    details.append(capability + (" with native bf16" if cpu_supports_bf16() else ""))
    return f"{name} ({', '.join(details)})"


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


def autocast_dtype(device: torch.device | str, amp_dtype: str | torch.dtype | None = "auto") -> torch.dtype | None:
    """The autocast dtype of the fast path on ``device``, or None for float32 (no autocast).

    ``"auto"`` (or None): on CUDA, bfloat16 where the GPU runs it natively (``torch.cuda.is_bf16_supported(including_emulation=False)``: float32's
    range, so no gradient scaler and no float16 overflow) and float16 with a gradient scaler on older GPUs; on a CPU,
    bfloat16 only where it runs natively (AVX-512 BF16 or AMX, :py:func:`cpu_supports_bf16`), else float32.
    ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``/``"half"`` or ``"float32"``/``"fp32"`` (or a ``torch.dtype``)
    force one.

    Raises:
        ValueError: for another value, naming it and the choices.
    """
    device = torch.device(device)
    if isinstance(amp_dtype, torch.dtype):
        return None if amp_dtype == torch.float32 else amp_dtype
    choice = "auto" if amp_dtype is None else str(amp_dtype).strip().lower()
    forced = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
              "half": torch.float16, "float32": None, "fp32": None}
    if choice in forced:
        return forced[choice]
    if choice != "auto":
        raise ValueError(f"amp_dtype {amp_dtype!r} is not one of 'auto', 'bfloat16', 'float16' or 'float32'.")
    if device.type == "cuda":
        # natively only: V100/T4 emulate bf16 (slower than float16 with a scaler), which the plain call counts
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, enabled: bool = True, dtype: str | torch.dtype | None = "auto"):
    """A ``torch.autocast`` context for ``device`` (a no-op context when disabled or float32 is chosen).

    Args:
        device: where the computation runs.
        enabled: whether mixed precision is wanted at all.
        dtype: the autocast dtype or choice, as for :py:func:`autocast_dtype` (``"auto"`` by default;
            ``torch.float32`` for none).
    """
    device = torch.device(device)
    resolved = autocast_dtype(device, dtype)
    if not enabled or resolved is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=resolved)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in ``channels_last_3d`` (5-D) or ``channels_last`` (4-D) memory format; others unchanged."""
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def module_to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in ``channels_last_3d`` memory format (in place), except 5-D parameters whose spatial sizes are all
    1 (1x1x1 convolution kernels): for those both formats describe the same memory, autograd gives their gradients
    the plain strides, and DistributedDataParallel, which lays its buckets out by the parameters' strides, would copy
    each such gradient at every step."""
    module.to(memory_format=torch.channels_last_3d)
    for param in module.parameters():
        if param.dim() == 5 and param.shape[2:] == (1, 1, 1):
            param.data = param.data.clone(memory_format=torch.contiguous_format)  # (.contiguous() keeps its strides)
    return module


def as_plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` without MONAI metadata: inside a 3D network, MetaTensor metadata tracking through every op costs
    seconds per iteration on CPU, so networks compute on plain tensors."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def argmax(x: torch.Tensor, dim: int = 1, keepdim: bool = False) -> torch.Tensor:
    """``torch.argmax(x, dim, keepdim)``, computed as the indices of ``torch.max(x, dim, keepdim)``.

    Both return the index of the first maximum along ``dim`` (a NaN counts as the maximum), for every dtype. On a
    CPU, torch 2.13's ``argmax`` over the channel dimension of a segmentation output (not the innermost dimension)
    takes a slow reduction path: 13x the time of ``max`` on a (2, 2, 32, 32, 32) batch and 240 ms against 18 ms on the
    CPU protocol's (4, 2, 96, 96, 64) (BENCHMARKS "Host time", ``benchmarks/host_micro.py``). The pseudo-labels and the training Dice take their
    argmax here (on CUDA the two have not been timed against each other).

    Args:
        x: the scores (logits or probabilities).
        dim: the class dimension.
        keepdim: keep ``dim`` with size 1.
    """
    return torch.max(x, dim=dim, keepdim=keepdim)[1]


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in a lower precision (the bfloat16/float16 of the fast path), else as it is.

    Losses and probabilities are computed in float32 under mixed precision, as the reference implementations compute
    them; float64 inputs keep float64 (``x.float()`` would round them), so a loss evaluated in float64 against a float64
    reference computation agrees to float64 rounding.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))
