from __future__ import annotations

from .pseudo_label_loss import SymmetricPseudoLabelLoss
from .seg_dice_loss import SegDiceLoss
from .seg_dice_ce_loss import SegDiceCELoss
from .masked_dice_loss import MaskedDiceLoss
