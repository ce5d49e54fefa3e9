# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""BCP: bidirectional copy-paste between labeled and unlabeled volumes, with EMA-teacher pseudo-labels."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import context_mask, frozen_copy, largest_component
from monai_stlu.handlers.ema_teacher_handler import EMATeacherHandler
from monai_stlu.losses.masked_dice_loss import MaskedDiceLoss
from monai_stlu.networks.utils import unwrap
from monai_stlu.utils.fast_path import at_least_float32

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["BCPMethod", "region_loss", "dice_ce_loss"]


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCP's pre-training loss: ``(CE + Dice) / 2`` of the mixed image against the mixed label over the whole
    volume (mean CE; the Dice of :py:class:`monai_stlu.losses.MaskedDiceLoss` without a mask)."""
    t = target.long().reshape(target.shape[0], *logits.shape[2:])
    return (F.cross_entropy(at_least_float32(logits), t) + MaskedDiceLoss()(logits, t)) / 2


def region_loss(
    logits: torch.Tensor,
    target_out: torch.Tensor,
    target_in: torch.Tensor,
    mask: torch.Tensor,
    weight_out: float,
    weight_in: float,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """BCP's mixed loss ``(w_out Dice_out + w_in Dice_in + w_out CE_out + w_in CE_in) / 2``: the voxels with
    ``mask = 1`` follow ``target_out`` and those with ``mask = 0`` (the pasted cube) follow ``target_in``.

    Each region's Dice is :py:class:`monai_stlu.losses.MaskedDiceLoss` restricted to the region (per sample and
    class, not squared) and multiplied by the region's weight as a whole; each region's CE is its mean over the
    region's voxels, multiplied by the weight.
    """
    dice = MaskedDiceLoss(smooth)
    mask = mask.float().expand(logits.shape[0], 1, *logits.shape[2:])
    total = at_least_float32(logits.new_zeros(()))
    for target, region, weight in ((target_out, mask, weight_out), (target_in, 1.0 - mask, weight_in)):
        t = target.long().reshape(logits.shape[0], *logits.shape[2:])
        r = region[:, 0]
        ce = F.cross_entropy(at_least_float32(logits), t, reduction="none")
        total = total + weight * dice(logits, t, region) + weight * (ce * r).sum() / (r.sum() + 1e-16)
    return total / 2


class BCPMethod(SemiSupervisedMethod):
    """Bidirectional copy-paste. The labeled and unlabeled batches are split into halves a and b. A random cube of
    ``mask_ratio`` of each side (mask 0 inside, 1 outside) is pasted both ways:

    - ``x_1 = x_l^a * M + x_u^a * (1 - M)``, supervised by ``y^a`` outside (weight 1) and the teacher's pseudo-label
      of ``x_u^a`` inside (weight ``u_weight``, 0.5);
    - ``x_2 = x_u^b * M + x_l^b * (1 - M)``, supervised by the pseudo-label of ``x_u^b`` outside (weight 0.5) and
      ``y^b`` inside (weight 1).

    Pseudo-labels are the teacher's foreground probability ``>= pseudo_threshold`` (0.5) reduced to its largest
    connected component (the reference's ``get_cut_mask(nms=1)``). ``x_1`` and ``x_2`` pass the network separately,
    as in the reference (``joint_forward=True`` sends them as one batch).

    Pre-training: for the first ``pretrain_iterations`` iterations labeled volumes are pasted into each other and
    trained with ``(CE + Dice) / 2`` of the mixed label. The ``validator`` also validates at the end of pre-training,
    and the method keeps (in memory and in its checkpoint state, so a resumed run has it) the network of the best
    validation during pre-training: this run's own best pre-training model, never a ``model.pt`` another run left in
    the folder. At the first self-training iteration the student and the teacher both start from it (from the
    current student, with a warning, when nothing validated), and the optimizer starts afresh (its momentum buffers
    are cleared; a ``StepDecay(start=pretrain_iterations)`` schedule restarts the rate). The EMA teacher is then
    updated after every step with the fixed ``ema_decay`` (0.99). Batches split evenly in halves (4 + 4 in the
    reference).

    Reference:
        Bai Y. et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023
        (``DeepMed-Lab-ECNU/BCP``, ``code/LA_BCP_train.py``; evaluation as its ``code/test_LA.py``).

    Args:
        pretrain_iterations: iterations of the labeled-only pre-training stage.
        mask_ratio: side fraction of the pasted cube.
        u_weight: loss weight of the pseudo-labelled region.
        ema_decay: the EMA's fixed decay.
        validator: the bundle's validation evaluator (its key metric selects the best pre-training model), or None.
        pseudo_threshold: foreground probability at which a teacher voxel becomes a pseudo-label.
        largest_component: keep only the largest connected component of each pseudo-label.
        joint_forward: pass both mixed images through the network as one batch (BatchNorm statistics over both).
    """

    def __init__(
        self,
        pretrain_iterations: int = 2000,
        mask_ratio: float = 2.0 / 3.0,
        u_weight: float = 0.5,
        ema_decay: float = 0.99,
        validator: Any = None,
        pseudo_threshold: float = 0.5,
        largest_component: bool = True,
        joint_forward: bool = False,
    ) -> None:
        super().__init__()
        self.pretrain_iterations = int(pretrain_iterations)
        self.mask_ratio = mask_ratio
        self.u_weight = u_weight
        self.ema_decay = ema_decay
        self.validator = validator
        self.best_pretrain: dict[str, torch.Tensor] | None = None
        self.best_pretrain_metric: float | None = None
        self.pseudo_threshold = pseudo_threshold
        self.largest_component = largest_component
        self.joint_forward = joint_forward
        self.iteration = 0
        self.teacher: nn.Module | None = None

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Create the teacher, track the iteration, keep the best pre-training model, validate at the end of
        pre-training, start self-training, and register the fixed-decay EMA update."""
        if self.teacher is None:
            self.teacher = frozen_copy(engine.network)
        engine.add_event_handler(Events.ITERATION_STARTED, self._on_iteration)
        if self.validator is not None and self.pretrain_iterations > 0:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, lambda v: self.record_best(v, engine.network))
            engine.add_event_handler(
                Events.ITERATION_COMPLETED(once=self.pretrain_iterations), lambda e: self.validator.run(e.state.epoch)
            )
        EMATeacherHandler(self.teacher, engine.network, self.ema_decay, self.pretrain_iterations, warmup=False).attach(
            engine
        )

    def _on_iteration(self, engine: SemiSupervisedTrainer) -> None:
        self.iteration = engine.state.iteration - 1
        if self.iteration == self.pretrain_iterations and self.teacher is not None:
            self.start_self_training(engine.network, engine.optimizer)

    def record_best(self, validator: Any, network: nn.Module) -> None:
        """After a validation during pre-training: keep a copy of ``network`` when its key metric is the best yet."""
        if self.iteration >= self.pretrain_iterations:
            return
        value = float(validator.state.metrics[validator.state.key_metric_name])
        if self.best_pretrain_metric is None or value > self.best_pretrain_metric:
            self.best_pretrain_metric = value
            self.best_pretrain = {k: v.detach().cpu().clone() for k, v in unwrap(network).state_dict().items()}

    def start_self_training(self, network: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load this run's best pre-training model into the student (when one was validated), copy it to the teacher
        and clear the optimizer's state."""
        log = logging.getLogger(__name__)
        if self.best_pretrain is not None:
            unwrap(network).load_state_dict(self.best_pretrain)
            log.info(f"BCP self-training starts from this run's best pre-training model (validation "
                     f"{self.best_pretrain_metric:.4f}).")
        else:
            log.warning("BCP: no validation during pre-training; self-training starts from the current network.")
        if self.teacher is not None:
            self.teacher.load_state_dict(unwrap(network).state_dict())
        optimizer.state.clear()
        self.best_pretrain = None  # not needed any more: checkpoints stay the size of the networks

    def get_extra_state(self) -> dict[str, Any]:
        """The best pre-training model travels with the training checkpoint until self-training starts."""
        return {"best_pretrain": self.best_pretrain, "best_pretrain_metric": self.best_pretrain_metric}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            self.best_pretrain = state.get("best_pretrain")
            self.best_pretrain_metric = state.get("best_pretrain_metric")

    @staticmethod
    def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"BCP splits each batch into two halves: batch size {x.shape[0]} is odd.")
        h = x.shape[0] // 2
        return x[:h], x[h:]

    def pseudo_label(self, logits: torch.Tensor) -> torch.Tensor:
        """Foreground probability ``>= pseudo_threshold``, largest component kept; (B, 1, *spatial) long."""
        fg = (torch.softmax(at_least_float32(logits), dim=1)[:, 1:2] >= self.pseudo_threshold).long()
        return largest_component(fg) if self.largest_component else fg

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        mask = context_mask(image_labeled.shape[2:], self.mask_ratio, device=image_labeled.device)
        la, lb = self._halves(image_labeled)
        ya, yb = self._halves(label)
        if self.iteration < self.pretrain_iterations:
            mixed = la * mask + lb * (1 - mask)
            target = ya * mask + yb * (1 - mask)
            out = network(mixed)
            loss = dice_ce_loss(out, target)
            return {"image": mixed, "pred": out, "label": target, "loss": loss, "sup": self.term(loss), "unsup": 0.0,
                    "stage": 0.0}
        if image_unlabeled is None or self.teacher is None:
            raise ValueError("BCPMethod needs an unlabeled batch and must be attached to a trainer.")
        ua, ub = self._halves(image_unlabeled)
        with torch.no_grad():
            pa, pb = self.pseudo_label(self.teacher(ua)), self.pseudo_label(self.teacher(ub))
        x1 = la * mask + ua * (1 - mask)
        x2 = ub * mask + lb * (1 - mask)
        if self.joint_forward:
            o1, o2 = self._halves(network(torch.cat([x1, x2], dim=0)))
        else:
            o1, o2 = network(x1), network(x2)
        loss_1 = region_loss(o1, ya, pa, mask, 1.0, self.u_weight)
        loss_2 = region_loss(o2, pb, yb, mask, self.u_weight, 1.0)
        loss = loss_1 + loss_2
        target = ya * mask + pa * (1 - mask)  # what o1 is trained towards (label outside, pseudo-label inside)
        return {
            "image": x1, "pred": o1, "label": target, "loss": loss, "sup": self.term(loss_1),
            "unsup": self.term(loss_2), "stage": 1.0,
        }
