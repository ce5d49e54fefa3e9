# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""SS-Net: virtual-adversarial smoothness plus prototype-based class separation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.losses.vat_loss import VATLoss
from monai_stlu.utils.distributed import is_distributed
from monai_stlu.utils.fast_path import argmax, at_least_float32

__all__ = ["SSNetMethod"]


class SSNetMethod(SemiSupervisedMethod):
    """``L = Dice(p_l, y) + w(t) * (L_vat + 0.1 (L_sep(labeled) + L_sep(unlabeled)))``.

    With a :py:class:`monai_stlu.networks.nets.PrototypeVNet`, as SS-Net's ``train_ss_3d.py``:

    - **Smoothness**: :py:class:`monai_stlu.losses.VATLoss` on the whole batch (Dice distance, ``xi = epsilon = 10``).
    - **Memory**: labeled voxels predicted correctly as a foreground class give their embeddings, through the
      projection head in eval mode and without gradient, to a per-class memory of at most ``elements_per_class``
      vectors; when a class has more, the ones the class selector ranks *lowest* (ascending sort, as the reference)
      are kept. The memory is rebuilt every iteration (a class with no correct voxel keeps its previous memory), so
      the background class, never predicted "correct foreground", has no memory and no separation term, as in the
      reference.
    - **Separation**: every labeled voxel (by its label) and unlabeled voxel (by its argmax pseudo-label) through the
      projection and prediction heads; per class with memory, the cosine distances to the memory, weighted by the
      sigmoid of the class selector (on detached features, rescaled to mean 1) and of the memory selector (whose
      rescaling in the reference makes it exactly 1), averaged, summed over classes and divided by the class count.
    - **Dice**: MC-Net's ``Binary_dice_loss`` on the foreground (configure :py:class:`SegDiceLoss` with
      ``squared_pred=False, smooth_nr=smooth_dr=1e-8``, as the bundles do).

    ``consistency_weight`` is set by a :py:class:`monai_stlu.handlers.RampUpHandler`: ``exp(-5 (1 - t/40)^2)`` with
    ``t = (iteration + 1) // 150`` (the reference increments its counter first: ``ramp_offset 1``); the learning
    rate drops tenfold every 2,500 iterations.

    Reference:
        Wu Y. et al., "Exploring Smoothness and Class-Separation for Semi-supervised Medical Image Segmentation",
        MICCAI 2022 (``ycwu1997/SS-Net``, ``train_ss_3d.py``, ``utils/feature_memory.py``,
        ``utils/contrastive_losses.py``).

    Args:
        sup_loss: the supervised loss, default ``SegDiceLoss(squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8)``.
        vat: the smoothness loss, default ``VATLoss(10, 10, 1)``.
        separation_weight: the 0.1 in front of the separation terms.
        elements_per_class: memory size per class (32).
        consistency_weight: initial weight (the ramp handler overwrites it).
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        vat: nn.Module | None = None,
        separation_weight: float = 0.1,
        elements_per_class: int = 32,
        consistency_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceLoss(squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8) if sup_loss is None else sup_loss
        self.vat = VATLoss() if vat is None else vat
        self.separation_weight = float(separation_weight)
        self.elements_per_class = int(elements_per_class)
        self.consistency_weight = float(consistency_weight)
        self.memory: list[torch.Tensor | None] = []

    def update_memory(self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Replace each class's memory by the projections of ``features`` (N, F) of that class (``labels`` (N,)).

        In float32 at least (autocast off), as the reference, like :py:meth:`separation`: both run on rows picked by
        masks, a new row count every iteration, and under bf16 autocast on a CPU each new shape is another oneDNN
        matmul the process keeps (SS-Net's protocol run grew past 13 GB)."""
        if len(self.memory) != len(network.selectors):
            self.memory = [None] * len(network.selectors)
        with torch.no_grad(), torch.autocast(features.device.type, enabled=False):
            network.projection_head.eval()
            try:
                projected = network.projection_head(at_least_float32(features.detach()))
            finally:
                network.projection_head.train()
            for c, selector in enumerate(network.selectors):
                feats = projected[labels == c]
                if feats.shape[0] == 0:
                    continue
                if feats.shape[0] > self.elements_per_class:
                    rank = torch.sigmoid(selector(feats))[:, 0]
                    feats = feats[torch.argsort(rank, stable=True)[: self.elements_per_class]]
                self.memory[c] = feats.detach()

    def separation(self, network: nn.Module, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The class-to-memory separation loss of predicted features (N, F) with class ``labels`` (N,), in float32
        at least (see :py:meth:`update_memory`).

        The reference averages the (rows x memory) matrix ``(1 - cos(f_i, m_j)) a_i b_j`` (``a``: the class
        selector's weights rescaled to mean 1; ``b``: the memory selector's, rescaled to exactly 1). The mean of that
        matrix is ``(sum(a) sum(b) - (a^T f) . (b^T m)) / (rows * memory)`` with unit-normalised ``f`` and ``m``: the
        same function and graph, computed here without the matrix (two weighted sums of the rows instead of a
        matrix product and four elementwise passes over the rows x memory values)."""
        total = at_least_float32(predicted.new_zeros(()))
        n_classes = len(network.selectors)
        with torch.autocast(predicted.device.type, enabled=False):
            for c in range(n_classes):
                memory = self.memory[c] if c < len(self.memory) else None
                if memory is None or memory.shape[0] <= 1:
                    continue
                mask = labels == c
                feats = at_least_float32(predicted[mask])
                if feats.shape[0] <= 1:
                    continue
                w = torch.sigmoid(network.selectors[c](feats.detach()))[:, 0]  # (M,)
                a = w * (w.shape[0] / w.sum())
                v = torch.sigmoid(network.memory_selectors[c](memory))[:, 0]  # (N,)
                b = v * (1.0 / v)  # the reference's rescaling of a (1, N) row: 1 / (the sum over its one row)
                weighted_f = a @ F.normalize(feats, dim=1)
                weighted_m = b @ F.normalize(memory, dim=1)
                total = total + (a.sum() * b.sum() - weighted_f @ weighted_m) / (a.shape[0] * b.shape[0])
        return total / n_classes

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError("SSNetMethod needs an unlabeled batch every iteration.")
        if not hasattr(network, "forward_embedding"):
            raise TypeError(f"SSNetMethod needs a network with projection heads (PrototypeVNet), got {type(network).__name__}.")
        b = image_labeled.shape[0]
        x = torch.cat([image_labeled, image_unlabeled], dim=0)
        logits, embedding = network.forward_embedding(x)
        prob = torch.softmax(at_least_float32(logits), dim=1)
        target = label[:, 0].long()
        prediction = argmax(prob[:b], dim=1)
        pseudo = argmax(prob[b:], dim=1)
        channels = embedding.shape[1]
        feat_l = at_least_float32(embedding[:b]).movedim(1, -1)
        correct = (prediction == target) & (prediction > 0)
        self.update_memory(network, feat_l[correct], target[correct])
        pred_l = network.prediction_head(network.projection_head(feat_l.reshape(-1, channels)))
        sep_l = self.separation(network, pred_l, target.reshape(-1))
        feat_u = at_least_float32(embedding[b:]).movedim(1, -1).reshape(-1, channels)
        pred_u = network.prediction_head(network.projection_head(feat_u))
        sep_u = self.separation(network, pred_u, pseudo.reshape(-1))
        dice = self.sup_loss(logits[:b], label)
        vat = self.vat(network, x)
        unsup = vat + self.separation_weight * (sep_l + sep_u)
        loss = dice + self.consistency_weight * unsup
        if is_distributed():  # DDP reduces every parameter each iteration: a selector left out (no memory yet) gets 0
            selectors = [p for heads in (network.selectors, network.memory_selectors) for p in heads.parameters()]
            loss = loss + 0.0 * sum(p.sum() for p in selectors)
        return {
            "pred": logits[:b],
            "loss": loss,
            "sup": self.term(dice),
            "unsup": self.term(unsup),
            "vat": self.term(vat),
            "separation": self.term(sep_l + sep_u),
            "consistency_weight": self.consistency_weight,
        }
