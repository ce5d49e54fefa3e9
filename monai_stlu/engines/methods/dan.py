# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""DAN: an evaluation network scores (image, segmentation) pairs; the segmenter learns to fool it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.adversarial import AdversarialMethod
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["DANMethod"]


class DANMethod(AdversarialMethod):
    """``L = 0.5 (CE + Dice)(p_l, y) + w(t) * CE(D(p_u, x_u), labeled)`` with ``p`` the softmax, and the evaluation
    network ``D`` trained to tell labeled from unlabeled (image, softmax) pairs (:py:class:`AdversarialMethod`).

    As SSL4MIS's 3D script: the supervised loss is ``0.5 (CE + Dice)`` with SSL4MIS's every-class squared Dice
    (configure :py:class:`monai_stlu.losses.SegDiceCELoss` with ``include_background=True``, as the bundles do), the
    adversarial weight ramps to 0.1 over 200 steps of 150 iterations, ``D`` takes Adam steps of ``1e-4``, betas
    ``(0.9, 0.99)``, and the segmenter's learning rate decays as ``(1 - t/T)^0.9`` (``PolyDecay``). The segmenter is
    the bundle's network (the review's LA table trains every method on the V-Net; SSL4MIS's default is its 3D
    U-Net, a ``network_def`` away).

    Reference:
        Zhang Y. et al., "Deep Adversarial Networks for Biomedical Image Segmentation Utilizing Unannotated Images",
        MICCAI 2017 (3D form: ``HiLab-git/SSL4MIS``, ``train_adversarial_network_3D.py``).

    Args:
        num_classes: classes (``D`` scores the ``num_classes``-channel softmax).
        in_channels: image channels.
        sup_loss: the supervised loss, default ``SegDiceCELoss(include_background=True)``.
        kwargs: :py:class:`AdversarialMethod` arguments (``ndf``, ``d_lr``, ``d_betas``, ``consistency_weight``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(map_channels=num_classes, in_channels=in_channels, **kwargs)
        self.sup_loss = SegDiceCELoss(include_background=True) if sup_loss is None else sup_loss

    def segment(self, network: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = network(image)
        return {"logits": logits, "map": torch.softmax(at_least_float32(logits), dim=1)}

    def supervised(self, out: dict[str, torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sup": self.sup_loss(out["logits"], label)}
