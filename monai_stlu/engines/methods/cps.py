# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Cross pseudo supervision: two differently initialised networks teach each other with argmax pseudo-labels."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import init_weights, reinitialize
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss
from monai_stlu.networks.utils import unwrap
from monai_stlu.utils.distributed import broadcast_module, ddp
from monai_stlu.utils.fast_path import argmax, at_least_float32

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["CPSMethod"]


class CPSMethod(SemiSupervisedMethod):
    """``L = sup(A) + sup(B) + w(t) [CE(A(x_u), argmax B(x_u)) + CE(B(x_u), argmax A(x_u))]``.

    Network A is the trainer's network (the one saved as ``model.pt`` and exported); network B is a copy of it
    re-initialised with ``seed_b`` (SSL4MIS draws A's convolutions Kaiming-normal and B's Xavier-normal: ``init_a``,
    ``init_b``), owned by the method (saved in its checkpoint state) and added to the trainer's
    optimizer as a second parameter group. Pseudo-labels are detached. ``consistency_weight`` is set by a
    :py:class:`monai_stlu.handlers.RampUpHandler` in the bundles (``0.1 * exp(-5 (1 - t/200)^2)``,
    ``t = iteration // 150``), with the reference's poly learning rate ``0.01 (1 - t/T)^0.9``.

    Reference:
        Chen X. et al., "Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision", CVPR 2021, in the 3D
        form of ``HiLab-git/SSL4MIS``, ``train_cross_pseudo_supervision_3D.py``.

    Args:
        sup_loss: supervised loss of each network, default ``SegDiceCELoss(include_background=True)``: the
            reference's ``0.5 (CE + DiceLoss(2))`` over both classes.
        consistency_weight: initial pseudo-supervision weight (the ramp handler overwrites it).
        seed_b: initialisation seed of network B.
        init_a: weight initialisation of network A (``"kaiming"`` as SSL4MIS, or ``"default"``: as built).
        init_b: weight initialisation of network B (``"xavier"`` as SSL4MIS, or ``"default"``).
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        consistency_weight: float = 0.0,
        seed_b: int = 20211,
        init_a: str = "kaiming",
        init_b: str = "xavier",
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceCELoss(include_background=True) if sup_loss is None else sup_loss
        self.consistency_weight = float(consistency_weight)
        self.seed_b = seed_b
        self.init_a, self.init_b = init_a, init_b
        self.network_b: nn.Module | None = None

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Create network B (same architecture, new initialisation) and add it to the optimizer."""
        if self.network_b is None:
            init_weights(engine.network, self.init_a)
            broadcast_module(engine.network)  # multi-process: every rank starts from rank 0's network A
            network_b = reinitialize(copy.deepcopy(unwrap(engine.network)), self.seed_b)
            self.network_b = ddp(init_weights(network_b, self.init_b, self.seed_b))  # B's gradients averaged too
        engine.optimizer.add_param_group({"params": list(self.network_b.parameters())})

    @staticmethod
    def cross_pseudo_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """``CE(a, argmax b) + CE(b, argmax a)`` with detached pseudo-labels."""
        pseudo_a = argmax(logits_a.detach(), dim=1)
        pseudo_b = argmax(logits_b.detach(), dim=1)
        a, b = at_least_float32(logits_a), at_least_float32(logits_b)
        return F.cross_entropy(a, pseudo_b) + F.cross_entropy(b, pseudo_a)

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None or self.network_b is None:
            raise ValueError("CPSMethod needs an unlabeled batch and must be attached to a trainer.")
        b = image_labeled.shape[0]
        x = torch.cat([image_labeled, image_unlabeled], dim=0)
        out_a, out_b = network(x), self.network_b(x)
        sup = self.sup_loss(out_a[:b], label) + self.sup_loss(out_b[:b], label)
        cps = self.cross_pseudo_loss(out_a[b:], out_b[b:])
        loss = sup + self.consistency_weight * cps
        return {
            "pred": out_a[:b],
            "loss": loss,
            "sup": self.term(sup),
            "unsup": self.term(cps),
            "consistency_weight": self.consistency_weight,
        }
