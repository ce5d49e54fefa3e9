# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""``0.5 * (cross-entropy + Dice)``: the supervised loss of UA-MT, Mean Teacher, CPS and BCP."""

from __future__ import annotations

from monai.losses import DiceCELoss

__all__ = ["SegDiceCELoss"]


class SegDiceCELoss(DiceCELoss):
    """MONAI ``DiceCELoss`` with the reference defaults: ``0.5 * CE + 0.5 * Dice``, the Dice part being
    :py:class:`monai_stlu.losses.SegDiceLoss`'s (foreground channels, squared, batch, smoothing 1e-5).

    Args:
        include_background: include channel 0 in the Dice part (CE always uses all channels).
        lambda_dice: weight of the Dice part.
        lambda_ce: weight of the cross-entropy part.
        kwargs: further ``monai.losses.DiceCELoss`` arguments.
    """

    def __init__(
        self, include_background: bool = False, lambda_dice: float = 0.5, lambda_ce: float = 0.5, **kwargs
    ) -> None:
        defaults = dict(to_onehot_y=True, softmax=True, squared_pred=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
        defaults.update(kwargs)
        super().__init__(include_background=include_background, lambda_dice=lambda_dice, lambda_ce=lambda_ce, **defaults)
