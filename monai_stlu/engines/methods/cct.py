# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""CCT: auxiliary decoders on perturbed encoder features agree with the main decoder on unlabeled images."""

from __future__ import annotations

import torch

from monai_stlu.engines.methods.multi_output import MultiOutputMethod
from monai_stlu.utils.fast_path import at_least_float32

__all__ = ["CCTMethod"]


class CCTMethod(MultiOutputMethod):
    """``L = mean_i sup(p_i^l, y) + w(t) * mean_k mean((p_main^u - p_k^u)^2)`` over the main decoder and the
    auxiliary decoders ``k`` of a :py:class:`monai_stlu.networks.nets.CCTVNet` (softmax probabilities; the main
    prediction is not detached, as the reference).

    As SSL4MIS: ``sup`` is ``0.5 (CE + Dice)`` with its every-class squared Dice (configure
    :py:class:`monai_stlu.losses.SegDiceCELoss` with ``include_background=True``; the reference divides the sum of the
    eight terms by 8), the weight ramps to 0.1 over 200 steps of 150 iterations, the learning rate decays as
    ``(1 - t/T)^0.9``.

    Reference:
        Ouali Y. et al., "Semi-Supervised Semantic Segmentation with Cross-Consistency Training", CVPR 2020
        (``HiLab-git/SSL4MIS``, ``train_cross_consistency_training_2D.py``: its only form, followed here in 3D).

    Args:
        sup_loss: see :py:class:`MultiOutputMethod`.
        consistency_weight: see :py:class:`MultiOutputMethod`.
    """

    def consistency(self, logits_unlabeled: list[torch.Tensor]) -> torch.Tensor:
        main = torch.softmax(at_least_float32(logits_unlabeled[0]), dim=1)
        aux = [torch.softmax(at_least_float32(o), dim=1) for o in logits_unlabeled[1:]]
        return sum(torch.mean((main - p) ** 2) for p in aux) / len(aux)
