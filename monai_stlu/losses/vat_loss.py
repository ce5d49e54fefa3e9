# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Virtual adversarial smoothness with a Dice distance (SS-Net's ``VAT3d``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["VATLoss", "binary_dice_distance", "frozen_bn_stats"]


def binary_dice_distance(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - (2 sum(p q) + eps) / (sum(p) + sum(q) + eps)`` over whole tensors (MC-Net/SS-Net ``Binary_dice_loss``)."""
    p, q = at_least_float32(p), at_least_float32(q)
    return 1.0 - (2.0 * torch.sum(p * q) + eps) / (torch.sum(p) + torch.sum(q) + eps)


@contextmanager
def frozen_bn_stats(network: nn.Module) -> Iterator[nn.Module]:
    """Within the block, normalisation layers with running statistics neither update nor (in training) use them:
    ``track_running_stats`` is switched off and back, as SS-Net's ``_disable_tracking_bn_stats``."""
    toggled = [m for m in network.modules() if getattr(m, "track_running_stats", False)]
    for m in toggled:
        m.track_running_stats = False
    try:
        yield network
    finally:
        for m in toggled:
            m.track_running_stats = True


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit L2 norm (``+ 1e-8``)."""
    return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-8)


class VATLoss(nn.Module):
    """``D(softmax(f(x + eps r_adv)), softmax(f(x)))`` with ``r_adv`` the unit direction that increases the Dice
    distance ``D`` most, found by ``power_iterations`` steps from a uniform random direction ``U(-0.5, 0.5)``
    (first step length ``xi``). The clean prediction is a constant (no gradient); the network keeps its mode
    (SS-Net computes it in training mode, dropout on), and batch-norm running statistics are frozen for the
    perturbed passes. Only the perturbation's gradient is taken in the search (the reference zeroes the network's).

    Reference:
        Miyato T. et al., "Virtual Adversarial Training", TPAMI 2018; with the Dice distance of Wu Y. et al.,
        "Exploring Smoothness and Class-Separation for Semi-supervised Medical Image Segmentation", MICCAI 2022
        (``ycwu1997/SS-Net``, ``utils/losses.py``, ``VAT3d``: ``xi = 10``, ``epi = 10`` in ``train_ss_3d.py``).

    Args:
        xi: length of the search step.
        epsilon: length of the adversarial perturbation.
        power_iterations: search steps.
    """

    def __init__(self, xi: float = 10.0, epsilon: float = 10.0, power_iterations: int = 1) -> None:
        super().__init__()
        self.xi, self.epsilon, self.power_iterations = float(xi), float(epsilon), int(power_iterations)

    def forward(self, network: nn.Module, x: torch.Tensor, direction: torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``direction``: the random start (default ``U(-0.5, 0.5)`` like ``x``)."""
        with torch.no_grad():
            target = torch.softmax(at_least_float32(network(x)), dim=1)
        d = torch.rand(x.shape, device=x.device) - 0.5 if direction is None else direction
        d = _unit(d.to(x.dtype))
        with frozen_bn_stats(network):
            for _ in range(self.power_iterations):
                d = d.detach().requires_grad_(True)
                dist = binary_dice_distance(torch.softmax(at_least_float32(network(x + self.xi * d)), dim=1), target)
                (grad,) = torch.autograd.grad(dist, d)
                d = _unit(grad)
            perturbed = at_least_float32(network(x + self.epsilon * d.detach()))
            return binary_dice_distance(torch.softmax(perturbed, dim=1), target)
