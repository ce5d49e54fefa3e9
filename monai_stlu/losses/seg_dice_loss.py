# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The Dice loss of the semi-supervised LA literature, as a configured MONAI ``DiceLoss``."""

from __future__ import annotations

from monai.losses import DiceLoss

__all__ = ["SegDiceLoss"]


class SegDiceLoss(DiceLoss):
    """MONAI ``DiceLoss`` with the defaults of the UA-MT reference code (its ``dice_loss``), which STLU-Net uses here.

    The default computes, over the whole batch at once, ``1 - (2 sum(p y) + s) / (sum(p^2) + sum(y^2) + s)`` on the
    softmax probability ``p`` of the foreground channel, with ``s = 1e-5`` (squared denominator). Other references
    use other forms, each a configuration of this class:

    - MC-Net / MC-Net+ (``Binary_dice_loss``): not squared, ``1 - (2 sum(p y) + e) / (sum(p) + sum(y) + e)`` with
      ``e = 1e-8`` over the batch: ``squared_pred=False, smooth_nr=1e-8, smooth_dr=1e-8``;
    - SSL4MIS (CPS, ``DiceLoss(n_classes)``): squared, every class including the background, averaged:
      ``include_background=True``;
    - BCP: per sample and class, not squared: :py:class:`monai_stlu.losses.MaskedDiceLoss`.

    With two classes the defaults give exactly the UA-MT formula; with more classes the foreground Dice losses are
    averaged.

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
