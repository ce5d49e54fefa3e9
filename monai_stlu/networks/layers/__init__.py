from __future__ import annotations

from .feature_mix import FeatureMix
