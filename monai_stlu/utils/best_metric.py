# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A MONAI workflow's best key-metric value, as a checkpoint entry, so that a resumed run keeps comparing with it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["BEST_METRIC_KEYS", "best_metric_state", "restore_best_metric"]

#: the entry's keys, as in ``engine.state``
BEST_METRIC_KEYS = ("best_metric", "best_metric_epoch")


def best_metric_state(engine: Any) -> dict[str, float | int]:
    """``{"best_metric": value, "best_metric_epoch": epoch}`` of a MONAI workflow (``engine.state``), or ``{}``
    before its first key-metric comparison (``best_metric_epoch == -1``) or for an engine without them.

    MONAI's ``Workflow`` keeps the best key-metric value in its state and logs "Got new best metric" when a value
    beats it; ignite's ``Engine.state_dict`` does not save it, so without this entry a resumed run compares its first
    validation with the initial -1 and calls any score a new best."""
    epoch = getattr(engine.state, "best_metric_epoch", -1)
    value = getattr(engine.state, "best_metric", None)
    if epoch is None or int(epoch) == -1 or value is None:
        return {}
    try:
        value = float(value)
    except (TypeError, ValueError):  # a non-scalar key metric: MONAI skips the comparison too
        return {}
    return {"best_metric": value, "best_metric_epoch": int(epoch)} if not math.isnan(value) else {}


def restore_best_metric(engine: Any, state: Mapping[str, Any]) -> None:
    """Set ``engine.state.best_metric`` / ``best_metric_epoch`` from :py:func:`best_metric_state`'s entry; an entry
    without them (a checkpoint written before they were saved, or before the first validation) changes nothing."""
    if all(key in state for key in BEST_METRIC_KEYS):
        engine.state.best_metric = float(state["best_metric"])
        engine.state.best_metric_epoch = int(state["best_metric_epoch"])
