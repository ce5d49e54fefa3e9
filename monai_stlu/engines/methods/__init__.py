from __future__ import annotations

from .base import SemiSupervisedMethod
from .adversarial import AdversarialMethod
from .bcp import BCPMethod, region_loss
from .cct import CCTMethod
from .cps import CPSMethod
from .dan import DANMethod
from .dtc import DTCMethod, heaviside
from .ict import ICTMethod
from .mcf import MCFMethod
from .mcnet_plus import MCNetPlusMethod
from .mean_teacher import MeanTeacherMethod
from .multi_output import MultiOutputMethod
from .mutual_reliable import MutualReliableMethod
from .sassnet import SASSNetMethod
from .ssnet import SSNetMethod
from .stlu import STLUMethod
from .supervised import SupervisedMethod
from .tracoco import TraCoCoMethod
from .ua_mt import UAMTMethod
from .urpc import URPCMethod, rectified_consistency
from .utils import (
    clipped_noise, context_mask, cutmix, cutmix_boxes, frozen_copy, init_weights, largest_component, reinitialize, sharpen,
)
