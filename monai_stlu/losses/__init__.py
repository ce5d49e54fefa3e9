from __future__ import annotations

from .confident_regional_ce_loss import ConfidentRegionalCELoss
from .difference_review_loss import DifferenceReviewLoss
from .pseudo_label_loss import SymmetricPseudoLabelLoss
from .reliable_mutual_loss import ReliableMutualLoss
from .seg_dice_loss import SegDiceLoss
from .seg_dice_ce_loss import SegDiceCELoss
from .translation_consistency_loss import TranslationConsistencyLoss
from .masked_dice_loss import MaskedDiceLoss
from .sdf_loss import SDFLoss, normalized_sdf
from .vat_loss import VATLoss, binary_dice_distance, frozen_bn_stats
