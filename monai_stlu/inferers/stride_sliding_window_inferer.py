# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Sliding-window inference specified by stride (the papers' ``18 x 18 x 4``), averaging probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from monai_stlu.networks.utils import fuse_conv_bn, unwrap
from monai_stlu.utils.flags import as_bool
from monai_stlu.utils.fast_path import as_plain_tensor, autocast, to_channels_last

__all__ = ["StrideSlidingWindowInferer", "stride_to_overlap"]


def stride_to_overlap(roi_size: Sequence[int], stride: Sequence[int]) -> list[float]:
    """Per-dimension overlap fractions for which MONAI's window placement uses exactly ``stride``.

    MONAI computes the interval as ``int(roi * (1 - overlap))``; a tiny margin keeps float rounding from turning
    18 into 17.

    Raises:
        ValueError: when a stride is not in ``[1, roi]`` or the lengths differ.
    """
    if len(roi_size) != len(stride):
        raise ValueError(f"roi_size {list(roi_size)} and stride {list(stride)} need the same length.")
    out = []
    for r, s in zip(roi_size, stride):
        if not 1 <= int(s) <= int(r):
            raise ValueError(f"stride {s} must be between 1 and the window size {r}.")
        out.append(max((int(r) - int(s)) / int(r) - 1e-6, 0.0))
    return out


class StrideSlidingWindowInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` whose window step is given as a stride, averaging softmax probabilities as the
    community evaluation code does (``test_single_case``: windows at ``min(stride * i, size - patch)``, padded
    when the volume is smaller than the window, probabilities averaged by count).

    With ``amp=True`` each window batch runs under autocast (bf16 on GPUs and CPUs that support it, else fp16 on
    CUDA, ``amp_dtype`` to force one); with
    ``channels_last=True`` windows are fed in ``channels_last_3d`` format. With ``fuse_bn=True`` a network
    module in eval mode is replaced, for this call, by a copy with BatchNorm folded into its convolutions
    (:py:func:`monai_stlu.networks.fuse_conv_bn`): fewer passes, and under mixed precision far closer to float32
    (the caller's network is untouched; TorchScript modules and networks in train mode are used as given).
    The output is float32 probabilities (or logits when ``softmax=False``).

    Args:
        roi_size: window size, e.g. ``[112, 112, 80]``.
        stride: window step per dimension, e.g. ``[18, 18, 4]``.
        sw_batch_size: windows per forward pass (batching windows is much faster than one at a time).
        softmax: apply softmax over channels to each window's output before averaging.
        amp: mixed precision for the window forward passes.
        channels_last: ``channels_last_3d`` memory format for the window batches.
        fuse_bn: fold BatchNorm into the preceding convolutions of an eval-mode network module.
        amp_dtype: the autocast dtype with ``amp=True``: ``"auto"`` (see :py:func:`monai_stlu.utils.autocast_dtype`),
            ``"bfloat16"``, ``"float16"`` or ``"float32"``.
        kwargs: further ``SlidingWindowInferer`` arguments (``mode``, ``padding_mode``, ``sw_device``, ...).
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        stride: Sequence[int],
        sw_batch_size: int = 4,
        softmax: bool = True,
        amp: bool = False,
        channels_last: bool = False,
        fuse_bn: bool = True,
        amp_dtype: str | torch.dtype | None = "auto",
        **kwargs: Any,
    ) -> None:
        if "progress" in kwargs:
            kwargs["progress"] = as_bool(kwargs["progress"])
        super().__init__(
            roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=stride_to_overlap(roi_size, stride), **kwargs
        )
        self.stride = [int(s) for s in stride]
        self.softmax = as_bool(softmax)
        self.use_amp = as_bool(amp)
        self.channels_last = as_bool(channels_last)
        self.fuse_bn = as_bool(fuse_bn)
        self.amp_dtype = amp_dtype

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if (
            self.fuse_bn
            and isinstance(network, nn.Module)
            and not isinstance(network, torch.jit.ScriptModule)
            and not network.training
        ):
            network = fuse_conv_bn(unwrap(network))  # inference needs no gradient synchronisation
            if self.channels_last:
                for p in network.parameters():
                    p.data = to_channels_last(p.data)

        def window_forward(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            x = as_plain_tensor(x)
            if self.channels_last:
                x = to_channels_last(x)
            with autocast(x.device, enabled=self.use_amp, dtype=self.amp_dtype):
                out = network(x, *a, **k)
            out = out.float()
            return torch.softmax(out, dim=1) if self.softmax else out

        return super().__call__(inputs, window_forward, *args, **kwargs)
