from __future__ import annotations

from .stlu_net import STLUNet, STLUOutput
from .vnet import ConvStage, DecoderStage, VNet
from .mcnet_plus import MCNetPlus
