# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""UA-MT: Mean Teacher whose consistency counts only where the teacher is certain."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from monai_stlu.engines.methods.mean_teacher import MeanTeacherMethod
from monai_stlu.handlers.ramp_up_handler import RampUpHandler
from monai_stlu.losses.seg_dice_ce_loss import SegDiceCELoss
from monai_stlu.utils.fast_path import at_least_float32

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["UAMTMethod"]


class UAMTMethod(MeanTeacherMethod):
    """Mean Teacher plus uncertainty: ``passes`` stochastic teacher passes (dropout on, noisy input) give the mean
    softmax ``mu``; the uncertainty is its entropy ``-sum_c mu_c log(mu_c + 1e-6)``; the squared softmax difference
    counts only where the uncertainty is below ``threshold``::

        consistency = sum(mask * (p_s - p_t)^2) / (C sum(mask) + 1e-16)   (C = 2 classes in the reference)

    ``threshold`` rises from ``threshold`` (``0.75 ln 2``) to ``threshold_end`` (``ln 2``) by the sigmoid ramp of the
    raw iteration over ``threshold_ramp_iterations`` (the whole budget in the reference); the method registers that
    :py:class:`monai_stlu.handlers.RampUpHandler` itself when attached, so the bundles' one ramp handler serves the
    consistency weight. The network needs dropout (``VNet(dropout=True)``).

    Reference:
        Yu L. et al., "Uncertainty-aware Self-ensembling Model for Semi-supervised 3D Left Atrium Segmentation",
        MICCAI 2019 (``yulequan/UA-MT``, ``train_LA_meanteacher_certainty_unlabel.py``).

    Args:
        passes: stochastic teacher passes for the uncertainty.
        threshold: the uncertainty threshold at the start of training.
        threshold_end: the threshold at the end of its ramp.
        threshold_ramp_iterations: iterations of the threshold's ramp (the training budget in the reference);
            None keeps ``threshold`` fixed.
        duplicate_batch: make the ``passes`` predictions from ``passes // 2`` passes of the duplicated batch, as the
            reference does (BatchNorm statistics of the doubled batch); False for one pass per prediction.
        kwargs: :py:class:`MeanTeacherMethod` arguments; ``sup_loss`` defaults here to UA-MT's
            ``0.5 (CE + dice_loss(foreground))`` (``SegDiceLoss``'s squared foreground Dice, smoothing 1e-5), not
            Mean Teacher's Dice over both classes.
    """

    def __init__(
        self,
        passes: int = 8,
        threshold: float = 0.75 * math.log(2.0),
        threshold_end: float = math.log(2.0),
        threshold_ramp_iterations: int | None = None,
        duplicate_batch: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("sup_loss", SegDiceCELoss())
        super().__init__(**kwargs)
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}.")
        self.passes = int(passes)
        self.threshold = float(threshold)
        self.threshold_start = float(threshold)
        self.threshold_end = float(threshold_end)
        self.threshold_ramp_iterations = threshold_ramp_iterations
        self.duplicate_batch = duplicate_batch

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """The Mean Teacher set-up, plus the threshold's ramp when ``threshold_ramp_iterations`` is given."""
        super().attach(engine)
        if self.threshold_ramp_iterations is not None:
            RampUpHandler(
                self, "threshold", self.threshold_end, self.threshold_start, self.threshold_ramp_iterations, 1
            ).attach(engine)

    def uncertainty(self, image_unlabeled: torch.Tensor) -> torch.Tensor:
        """Entropy of the mean teacher softmax over ``passes`` noisy, dropout-on predictions, shape (B, 1, *spatial).

        As the reference, the predictions come from ``passes // 2`` teacher passes of the batch duplicated (each copy
        with its own noise), so BatchNorm sees batches of twice the unlabeled batch (``duplicate_batch=False``: one
        pass per prediction)."""
        b = image_unlabeled.shape[0]
        if self.duplicate_batch and self.passes % 2 == 0:
            doubled = torch.cat([image_unlabeled, image_unlabeled], dim=0)
            probs = [self.teacher_prob(doubled) for _ in range(self.passes // 2)]
            mean = sum(p[:b] + p[b:] for p in probs) / self.passes
        else:
            mean = sum(self.teacher_prob(image_unlabeled) for _ in range(self.passes)) / self.passes
        return -(mean * torch.log(mean + 1e-6)).sum(dim=1, keepdim=True)

    def consistency(self, student_logits_u: torch.Tensor, image_unlabeled: torch.Tensor) -> dict[str, Any]:
        diff = torch.softmax(at_least_float32(student_logits_u), dim=1) - self.teacher_prob(image_unlabeled)
        mask = (self.uncertainty(image_unlabeled) < self.threshold).float()
        cons = (mask * diff * diff).sum() / (diff.shape[1] * mask.sum() + 1e-16)  # the reference: 2 classes
        return {"consistency": cons, "threshold": self.threshold, "certain_fraction": mask.mean()}
