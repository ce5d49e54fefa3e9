# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""BCP: bidirectional copy-paste between labeled and unlabeled volumes, with EMA-teacher pseudo-labels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import context_mask, frozen_copy
from monai_stlu.handlers.ema_teacher_handler import EMATeacherHandler

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["BCPMethod", "region_loss"]


def region_loss(
    logits: torch.Tensor,
    target_out: torch.Tensor,
    target_in: torch.Tensor,
    mask: torch.Tensor,
    weight_out: float,
    weight_in: float,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """BCP's mixed loss: ``(Dice + CE) / 2`` where the voxels with ``mask = 1`` follow ``target_out`` with weight
    ``weight_out`` and those with ``mask = 0`` (the pasted cube) follow ``target_in`` with weight ``weight_in``.

    The Dice is BCP's masked Dice, averaged over all classes; the CE of each region is its mean over the region.
    """
    n_classes = logits.shape[1]
    prob = torch.softmax(logits.float(), dim=1)
    mask = mask.float()
    total_dice = prob.new_zeros(())
    total_ce = prob.new_zeros(())
    for target, region, weight in ((target_out, mask, weight_out), (target_in, 1.0 - mask, weight_in)):
        t = target.long().squeeze(1)
        r = region.expand(logits.shape[0], 1, *logits.shape[2:])[:, 0]
        m = r * weight
        dice = prob.new_zeros(())
        for c in range(n_classes):
            p_c, y_c = prob[:, c], (t == c).float()
            inter = (p_c * y_c * m).sum()
            dice = dice + 1.0 - (2 * inter + smooth) / ((p_c * p_c * m).sum() + (y_c * m).sum() + smooth)
        total_dice = total_dice + dice / n_classes
        ce = F.cross_entropy(logits.float(), t, reduction="none")
        total_ce = total_ce + weight * (ce * r).sum() / (r.sum() + 1e-16)
    return (total_dice + total_ce) / 2


class BCPMethod(SemiSupervisedMethod):
    """Bidirectional copy-paste. The labeled and unlabeled batches are split into halves a and b. A random cube of
    ``mask_ratio`` of each side (mask 0 inside, 1 outside) is pasted both ways:

    - ``x_1 = x_l^a * M + x_u^a * (1 - M)``, supervised by ``y^a`` outside (weight 1) and the teacher's argmax
      pseudo-label of ``x_u^a`` inside (weight ``u_weight``, 0.5);
    - ``x_2 = x_u^b * M + x_l^b * (1 - M)``, supervised by the pseudo-label of ``x_u^b`` outside (weight 0.5) and
      ``y^b`` inside (weight 1).

    For the first ``pretrain_iterations`` iterations (the labeled-only pre-training stage) labeled volumes are pasted
    into each other with their labels (weights 1). At the first self-training iteration the EMA teacher is set to the
    student; afterwards :py:class:`monai_stlu.handlers.EMATeacherHandler` updates it after every step. The batch sizes
    must be even (2 + 2 in the LA protocol).

    Reference:
        Bai Y. et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023.

    Args:
        pretrain_iterations: iterations of the labeled-only pre-training stage.
        mask_ratio: side fraction of the pasted cube.
        u_weight: loss weight of the pseudo-labeled region.
        ema_decay: the EMA's largest ``alpha``.
    """

    def __init__(
        self, pretrain_iterations: int = 2000, mask_ratio: float = 2.0 / 3.0, u_weight: float = 0.5, ema_decay: float = 0.99
    ) -> None:
        super().__init__()
        self.pretrain_iterations = int(pretrain_iterations)
        self.mask_ratio = mask_ratio
        self.u_weight = u_weight
        self.ema_decay = ema_decay
        self.iteration = 0
        self.teacher: nn.Module | None = None

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Create the teacher, track the iteration, and register the EMA update after the pre-training stage."""
        if self.teacher is None:
            self.teacher = frozen_copy(engine.network)
        engine.add_event_handler(Events.ITERATION_STARTED, self._on_iteration)
        EMATeacherHandler(self.teacher, engine.network, self.ema_decay, self.pretrain_iterations).attach(engine)

    def _on_iteration(self, engine: SemiSupervisedTrainer) -> None:
        self.iteration = engine.state.iteration - 1
        if self.iteration == self.pretrain_iterations and self.teacher is not None:
            self.teacher.load_state_dict(engine.network.state_dict())

    @staticmethod
    def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"BCP splits each batch into two halves: batch size {x.shape[0]} is odd.")
        h = x.shape[0] // 2
        return x[:h], x[h:]

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        mask = context_mask(image_labeled.shape[2:], self.mask_ratio, device=image_labeled.device)
        la, lb = self._halves(image_labeled)
        ya, yb = self._halves(label)
        if self.iteration < self.pretrain_iterations:
            mixed = la * mask + lb * (1 - mask)
            out = network(mixed)
            loss = region_loss(out, ya, yb, mask, 1.0, 1.0)
            target = ya * mask + yb * (1 - mask)
            return {"image": mixed, "pred": out, "label": target, "loss": loss, "sup": self.term(loss), "unsup": 0.0, "stage": 0.0}
        if image_unlabeled is None or self.teacher is None:
            raise ValueError("BCPMethod needs an unlabeled batch and must be attached to a trainer.")
        ua, ub = self._halves(image_unlabeled)
        with torch.no_grad():
            pseudo = self.teacher(torch.cat([ua, ub], dim=0)).argmax(dim=1, keepdim=True)
        pa, pb = self._halves(pseudo)
        x1 = la * mask + ua * (1 - mask)
        x2 = ub * mask + lb * (1 - mask)
        out = network(torch.cat([x1, x2], dim=0))
        o1, o2 = self._halves(out)
        loss_1 = region_loss(o1, ya, pa, mask, 1.0, self.u_weight)
        loss_2 = region_loss(o2, pb, yb, mask, self.u_weight, 1.0)
        loss = loss_1 + loss_2
        target = ya * mask + pa * (1 - mask)  # what o1 is trained towards (label outside, pseudo-label inside)
        return {
            "image": x1, "pred": o1, "label": target, "loss": loss, "sup": self.term(loss_1), "unsup": self.term(loss_2), "stage": 1.0
        }
