from __future__ import annotations

from .base import SemiSupervisedMethod
from .bcp import BCPMethod, region_loss
from .cps import CPSMethod
from .mcnet_plus import MCNetPlusMethod
from .mean_teacher import MeanTeacherMethod
from .stlu import STLUMethod
from .supervised import SupervisedMethod
from .ua_mt import UAMTMethod
from .utils import clipped_noise, context_mask, frozen_copy, init_weights, largest_component, reinitialize, sharpen
