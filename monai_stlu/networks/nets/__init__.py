from __future__ import annotations

from .stlu_net import STLUNet, STLUOutput
from .vnet import ConvStage, DecoderStage, VNet
from .mcnet_plus import MCNetPlus
from .resnet_vnet import ResNetVNet
from .mcf_net import MCFNet
from .sdf_vnet import SDFVNet
from .fc_discriminator import FCDiscriminator
from .prototype_vnet import PrototypeVNet
from .cct_vnet import CCTVNet
from .pyramid_vnet import PyramidVNet
from .dynunet_backbone import DynUNetBackbone, plan_dynunet
from .segresnet_backbone import SegResNetBackbone
from .unet_backbone import UNetBackbone
from .backbones import BACKBONES, build_backbone, check_backbone
