# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Mutual learning with reliable pseudo labels (ML): two decoders teach each other where they are the more confident,
weighted by how well class prototypes agree with their probabilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.losses.reliable_mutual_loss import ReliableMutualLoss
from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["MutualReliableMethod"]


class MutualReliableMethod(SemiSupervisedMethod):
    """``L = lambda_sup * sum_k Dice(p_k^l, y) + w(t) * ReliableMutualLoss(p, f)`` on a two-decoder V-Net
    (:py:class:`monai_stlu.networks.nets.MCNetPlus` with transposed-convolution and nearest up-sampling, the
    reference's ``mine3d_v1``), the labeled and unlabeled images in one batch; the consistency term covers the whole
    batch (:py:class:`monai_stlu.losses.ReliableMutualLoss`). ``consistency_weight`` is set by a
    :py:class:`monai_stlu.handlers.RampUpHandler`: ``1.0 * exp(-5 (1 - t/40)^2)``, ``t = iteration // 150`` counted
    after the reference's increment (``ramp_offset`` 1). Constant LR 0.01 for 15,000 iterations; the first decoder
    predicts at test time; no largest-component step (``nms`` 0 in the reference's test script).

    Reference:
        Su J. et al., "Mutual learning with reliable pseudo label for semi-supervised medical image segmentation",
        Medical Image Analysis 2024 (``Jiawei0o0/mutual-learning-with-reliable-pseudo-labels``,
        ``code/train_Mutual_Reliable.py``, ``train_la.sh``: ``--model mine3d_v1``).

    Args:
        sup_loss: per-decoder supervised loss, default the reference's ``Binary_dice_loss`` of the foreground
            (``SegDiceLoss(squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8)``).
        lambda_sup: weight of the summed supervised losses (``lamda`` 0.5).
        consistency_weight: initial consistency weight (the ramp handler overwrites it).
        mutual_loss: the consistency term, default :py:class:`monai_stlu.losses.ReliableMutualLoss`.
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        lambda_sup: float = 0.5,
        consistency_weight: float = 0.0,
        mutual_loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceLoss(squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8) if sup_loss is None else sup_loss
        self.lambda_sup = lambda_sup
        self.consistency_weight = float(consistency_weight)
        self.mutual_loss = ReliableMutualLoss() if mutual_loss is None else mutual_loss

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError("MutualReliableMethod needs an unlabeled batch every iteration.")
        if not hasattr(network, "forward_all_features"):
            raise TypeError("MutualReliableMethod needs a multi-decoder network that returns its features (MCNetPlus), "
                            f"got {type(network).__name__}.")
        b = image_labeled.shape[0]
        logits, feats = network.forward_all_features(torch.cat([image_labeled, image_unlabeled], dim=0))
        sup = sum(self.sup_loss(at_least_float32(o[:b]), label) for o in logits)
        cons = self.mutual_loss(logits, feats)
        loss = self.lambda_sup * sup + self.consistency_weight * cons
        return {
            "pred": logits[0][:b],
            "loss": loss,
            "sup": self.term(sup),
            "unsup": self.term(cons),
            "consistency_weight": self.consistency_weight,
        }
