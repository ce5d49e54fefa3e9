from __future__ import annotations

from .feature_mix import FeatureMix
from .guarded_conv import GuardedConv3d
from .feature_perturbation import ActiveDropout, AttentionDropout, FeatureNoise
