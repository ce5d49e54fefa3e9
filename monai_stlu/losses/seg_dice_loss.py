# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The Dice loss of the semi-supervised LA literature, as a configured MONAI ``DiceLoss``."""

from __future__ import annotations

from monai.losses import DiceLoss

__all__ = ["SegDiceLoss"]


class SegDiceLoss(DiceLoss):
    """MONAI ``DiceLoss`` with the defaults of the UA-MT / MC-Net / STLU-Net reference code.

    The reference computes, over the whole batch at once, ``1 - (2 sum(p y) + s) / (sum(p^2) + sum(y^2) + s)``
    on the softmax probability ``p`` of the foreground channel, with ``s = 1e-5``. With two classes these
    defaults give exactly that; with more classes the foreground Dice losses are averaged (set
    ``include_background=True`` to include the background as the SSL4MIS multi-class loss does).

    Args:
        include_background: whether to include channel 0.
        to_onehot_y: whether the target holds class indices (B, 1, *spatial) to one-hot encode.
        softmax: apply softmax to the input logits.
        squared_pred: use squared probabilities in the denominator (the reference does).
        batch: sum over the batch before the ratio (the reference does).
        smooth_nr: numerator smoothing.
        smooth_dr: denominator smoothing.
        kwargs: further ``monai.losses.DiceLoss`` arguments.
    """

    def __init__(
        self,
        include_background: bool = False,
        to_onehot_y: bool = True,
        softmax: bool = True,
        squared_pred: bool = True,
        batch: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        **kwargs,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            softmax=softmax,
            squared_pred=squared_pred,
            batch=batch,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            **kwargs,
        )
