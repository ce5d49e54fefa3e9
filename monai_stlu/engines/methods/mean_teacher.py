# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Mean Teacher: an EMA teacher on noisy unlabeled input, softmax-MSE consistency."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import clipped_noise, frozen_copy
from monai_stlu.handlers.ema_teacher_handler import EMATeacherHandler
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss
from monai_stlu.utils.fast_path import at_least_float32

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["MeanTeacherMethod"]


class MeanTeacherMethod(SemiSupervisedMethod):
    """``L = 0.5 (CE + Dice)(labeled) + w(t) * mean((softmax(student(x_u)) - softmax(teacher(x_u + n)))^2)``.

    The student sees the labeled and unlabeled images in one batch (as the reference does); the teacher, an EMA of
    the student updated by :py:class:`monai_stlu.handlers.EMATeacherHandler` after every step with
    ``alpha = min(1 - 1/(step+1), ema_decay)``, sees the unlabeled images plus ``clamp(N(0, 0.1^2), -0.2, 0.2)``
    noise. ``consistency_weight`` is set by a :py:class:`monai_stlu.handlers.RampUpHandler`
    (``0.1 * exp(-5 (1 - t/200)^2)``, ``t = iteration // 150`` in the bundles, as the reference's
    ``consistency_rampup`` 200 and ``iter_num // 150``; :py:class:`UAMTMethod`, which extends this class, ramps over
    40 as UA-MT does), with the reference's poly learning rate ``0.01 (1 - t/T)^0.9`` (the bundles' ``lr_factor``).

    Reference:
        Tarvainen A., Valpola H., "Mean teachers are better role models", NeurIPS 2017, in the 3D form of
        ``HiLab-git/SSL4MIS``, ``train_mean_teacher_3D.py`` (the one reference this class follows).

    Args:
        sup_loss: supervised loss, default ``SegDiceCELoss(include_background=True)``: the reference's
            ``0.5 (CE + DiceLoss(2))``, the squared Dice of both classes (background included) averaged.
        consistency_weight: initial consistency weight (the ramp handler overwrites it).
        ema_decay: the EMA's largest ``alpha``.
        noise_std: teacher input noise standard deviation.
        noise_clip: teacher input noise clipping bound.
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        consistency_weight: float = 0.0,
        ema_decay: float = 0.99,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
    ) -> None:
        super().__init__()
        self.sup_loss = SegDiceCELoss(include_background=True) if sup_loss is None else sup_loss
        self.consistency_weight = float(consistency_weight)
        self.ema_decay = ema_decay
        self.noise_std = noise_std
        self.noise_clip = noise_clip
        self.teacher: nn.Module | None = None

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Create the teacher from the trainer's network and register the EMA update."""
        if self.teacher is None:
            self.teacher = frozen_copy(engine.network)
        EMATeacherHandler(self.teacher, engine.network, decay=self.ema_decay).attach(engine)

    def teacher_prob(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax of the teacher on ``image`` plus clipped noise, without gradient."""
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} has no teacher: attach it to a trainer first.")
        with torch.no_grad():
            noisy = image + clipped_noise(image, self.noise_std, self.noise_clip)
            return torch.softmax(at_least_float32(self.teacher(noisy)), dim=1)

    def consistency(self, student_logits_u: torch.Tensor, image_unlabeled: torch.Tensor) -> dict[str, Any]:
        """The consistency loss and any terms to log; Mean Teacher: mean squared softmax difference."""
        diff = torch.softmax(at_least_float32(student_logits_u), dim=1) - self.teacher_prob(image_unlabeled)
        return {"consistency": (diff * diff).mean()}

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError(f"{type(self).__name__} needs an unlabeled batch every iteration.")
        b = image_labeled.shape[0]
        out = network(torch.cat([image_labeled, image_unlabeled], dim=0))
        sup = self.sup_loss(out[:b], label)
        terms = self.consistency(out[b:], image_unlabeled)
        cons = terms.pop("consistency")
        loss = sup + self.consistency_weight * cons
        result = {"pred": out[:b], "loss": loss, "sup": self.term(sup), "unsup": self.term(cons)}
        result["consistency_weight"] = self.consistency_weight
        result.update({k: self.term(v) for k, v in terms.items()})
        return result
