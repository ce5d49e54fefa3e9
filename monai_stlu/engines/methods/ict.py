# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""ICT: the student on a mix of unlabeled images matches the same mix of the EMA teacher's predictions."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from monai_stlu.engines.methods.mean_teacher import MeanTeacherMethod
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["ICTMethod"]


class ICTMethod(MeanTeacherMethod):
    """``L = sup(p_l, y) + w(t) * mean((softmax(f(mix)) - mix_t)^2)`` with, for ``lam ~ Beta(alpha, alpha)`` per
    pair, ``mix = (1 - lam) u_0 + lam u_1`` and ``mix_t = (1 - lam) softmax(T(u_0)) + lam softmax(T(u_1))``; ``T``
    is the EMA teacher (:py:class:`MeanTeacherMethod`'s, in the trainer's mode as the reference's ``ema_model.train()``,
    without input noise), run on each half of the unlabeled batch separately as the reference does. The first half
    of the unlabeled batch is paired with the second (one pair for SSL4MIS's 2 unlabeled crops); the student sees the
    labeled images and the mixes.

    As SSL4MIS's 3D script: ``alpha = 0.2``, ``sup`` is ``0.5 (CE + Dice)`` with its every-class Dice (the default:
    :py:class:`monai_stlu.losses.SegDiceCELoss` with ``include_background=True``), the weight ramps to 0.1 over 200 steps
    of 150 iterations, EMA decay 0.99, the learning rate decays as ``(1 - t/T)^0.9``.

    Reference:
        Verma V. et al., "Interpolation Consistency Training for Semi-supervised Learning", IJCAI 2019
        (``HiLab-git/SSL4MIS``, ``train_interpolation_consistency_training_3D.py``).

    Args:
        alpha: the Beta distribution's parameter.
        kwargs: :py:class:`MeanTeacherMethod` arguments (``sup_loss``, ``ema_decay``, ``consistency_weight``).
    """

    def __init__(self, alpha: float = 0.2, **kwargs: Any) -> None:
        kwargs.setdefault("sup_loss", SegDiceCELoss(include_background=True))
        super().__init__(**kwargs)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}.")
        self.alpha = float(alpha)

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None or image_unlabeled.shape[0] < 2:
            raise ValueError("ICTMethod needs an unlabeled batch of at least 2 images every iteration (it mixes pairs).")
        if self.teacher is None:
            raise RuntimeError("ICTMethod has no teacher: attach it to a trainer first.")
        b, h = image_labeled.shape[0], image_unlabeled.shape[0] // 2
        u0, u1 = image_unlabeled[:h], image_unlabeled[h : 2 * h]
        shape = (h,) + (1,) * (image_unlabeled.dim() - 1)
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample(shape).to(image_unlabeled)
        mixed = u0 * (1.0 - lam) + u1 * lam
        out = network(torch.cat([image_labeled, mixed], dim=0))
        with torch.no_grad():
            t0 = torch.softmax(at_least_float32(self.teacher(u0)), dim=1)
            t1 = torch.softmax(at_least_float32(self.teacher(u1)), dim=1)
            target = t0 * (1.0 - lam.float()) + t1 * lam.float()
        sup = self.sup_loss(out[:b], label)
        cons = torch.mean((torch.softmax(at_least_float32(out[b:]), dim=1) - target) ** 2)
        loss = sup + self.consistency_weight * cons
        return {
            "pred": out[:b],
            "loss": loss,
            "sup": self.term(sup),
            "unsup": self.term(cons),
            "consistency_weight": self.consistency_weight,
            "mix_lambda": self.term(lam.mean()),
        }
