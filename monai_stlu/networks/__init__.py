from __future__ import annotations

from .layers import FeatureMix
from .nets import MCNetPlus, STLUNet, STLUOutput, VNet
from .utils import fuse_conv_bn
