from __future__ import annotations

from .layers import FeatureMix, GuardedConv3d
from .nets import MCNetPlus, STLUNet, STLUOutput, VNet
from .utils import check_patch_size, fuse_conv_bn, size_divisor, unwrap
