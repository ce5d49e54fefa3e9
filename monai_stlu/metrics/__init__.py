from __future__ import annotations

from .segmentation_metrics import METRIC_NAMES, dice_score, segmentation_metrics
