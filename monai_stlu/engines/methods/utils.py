# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Small pieces of math shared by the semi-supervised methods."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from monai_stlu.utils.fast_path import at_least_float32

__all__ = [
    "frozen_copy", "clipped_noise", "sharpen", "context_mask", "cutmix", "cutmix_boxes", "reinitialize", "init_weights",
    "largest_component",
]


def frozen_copy(network: nn.Module) -> nn.Module:
    """A deep copy of ``network`` whose parameters take no gradient (an EMA teacher)."""
    from monai_stlu.networks.utils import unwrap

    teacher = copy.deepcopy(unwrap(network))  # DDP cannot be deep-copied; the teacher is a plain module
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def clipped_noise(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """Gaussian noise like ``x``, ``clamp(N(0, std^2), -clip, clip)`` (Mean Teacher / UA-MT teacher input)."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


def sharpen(prob: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``p_c^(1/T) / sum_k p_k^(1/T)`` over the channel dim (MC-Net+); with two classes this is MC-Net's
    ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))``. Computed in at least float32."""
    p = at_least_float32(prob)
    powered = p.pow(1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


def context_mask(
    spatial_shape: Sequence[int], ratio: float = 2.0 / 3.0, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """BCP's copy-paste mask: ones, with a zero cube of ``int(ratio * size)`` voxels per dimension starting at a
    position drawn from ``[0, size - cube)`` (as the reference's ``np.random.randint``). Returned as (1, 1, *spatial)
    float.

    Raises:
        ValueError: when ``ratio`` is not in (0, 1].
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}.")
    mask = torch.ones((1, 1, *spatial_shape), device=device)
    slices = [slice(None), slice(None)]
    for size in spatial_shape:
        cube = int(size * ratio)
        # the reference draws np.random.randint(0, size - cube): the upper bound is excluded
        start = int(torch.randint(0, max(size - cube, 1), (1,), generator=generator))
        slices.append(slice(start, start + cube))
    mask[tuple(slices)] = 0.0
    return mask


def cutmix_boxes(
    batch: int, width: int, height: int, alpha: float = 4.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """TraCoCo's 3D CutMix draw: a permutation of the batch and, per image, a box over the first two spatial axes
    (every slice of the third): ``lambda ~ Beta(alpha, alpha)`` once, the box ``int(W sqrt(1 - lambda))`` by
    ``int(H sqrt(1 - lambda))`` centred at a point drawn uniformly from ``[W/8, W) x [H/8, H)`` and clipped to the
    image, as the reference's ``rand_bbox`` (``lambda`` from torch's global generator, the rest from ``generator``).
    Returns ``(permutation, [(x1, x2, y1, y2)] per image)``."""
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    cut = (1.0 - lam) ** 0.5
    cut_w, cut_h = int(width * cut), int(height * cut)
    cx = torch.randint(int(width / 8), width, (batch,), generator=generator).tolist()
    cy = torch.randint(int(height / 8), height, (batch,), generator=generator).tolist()
    boxes = [(min(max(x - cut_w // 2, 0), width), min(max(x + cut_w // 2, 0), width),
              min(max(y - cut_h // 2, 0), height), min(max(y + cut_h // 2, 0), height)) for x, y in zip(cx, cy)]
    return torch.randperm(batch, generator=generator), boxes


def cutmix(
    tensors: Sequence[torch.Tensor], permutation: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]
) -> list[torch.Tensor]:
    """Paste, into each image ``i`` of every tensor (B, C, W, H, D), the box ``boxes[i]`` of image
    ``permutation[i]``, read from the unmixed tensor (the reference's ``cut_mix``)."""
    out = []
    for t in tensors:
        mixed = t.clone()
        for i, (x1, x2, y1, y2) in enumerate(boxes):
            mixed[i, :, x1:x2, y1:y2] = t[int(permutation[i]), :, x1:x2, y1:y2]
        out.append(mixed)
    return out


def reinitialize(network: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter with the modules' own ``reset_parameters`` under ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in network.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return network


def init_weights(
    network: nn.Module, scheme: str = "default", seed: int | None = None, transposed: bool = False
) -> nn.Module:
    """Re-draw a network's convolution weights with ``scheme``, as SSL4MIS initialises CPS's two networks
    (``kaiming_normal_init_weight`` / ``xavier_normal_init_weight``): ``kaiming_normal_`` or ``xavier_normal_`` on
    every (non-transposed) convolution weight, BatchNorm weights 1 and biases 0; other parameters keep their values.
    ``"default"`` leaves the network as built. The global random state is left untouched when ``seed`` is given.
    ``transposed`` draws the transposed convolutions' weights too (MCF's ``__init_weight``; ``kaiming_normal_``'s fan-in
    of a transposed weight is its output channels times the kernel size, as PyTorch computes it).

    Raises:
        ValueError: for another scheme.
    """
    if scheme not in ("default", "kaiming", "xavier"):
        raise ValueError(f"scheme must be 'default', 'kaiming' or 'xavier', got {scheme!r}.")
    if scheme == "default":
        return network
    draw = nn.init.kaiming_normal_ if scheme == "kaiming" else nn.init.xavier_normal_
    convs = (nn.Conv2d, nn.Conv3d) + ((nn.ConvTranspose2d, nn.ConvTranspose3d) if transposed else ())
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for m in network.modules():
            if isinstance(m, convs):
                draw(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return network


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep, per sample, the largest connected foreground component of a binary mask (full connectivity: 26
    neighbours in 3D), as BCP's ``LargestCC`` does with ``skimage.measure.label``; an empty mask stays empty.
    Uses MONAI's ``get_largest_connected_component_mask``.

    Args:
        mask: (B, *spatial) or (B, 1, *spatial) binary tensor.

    Returns:
        a tensor of the same shape, dtype and device.
    """
    from monai.transforms.utils import get_largest_connected_component_mask

    out = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        if bool(mask[b].any()):
            out[b] = torch.as_tensor(get_largest_connected_component_mask(mask[b] != 0)).to(mask.dtype)
    return out
