from __future__ import annotations

from .segmentation_metrics import METRIC_NAMES, segmentation_metrics
