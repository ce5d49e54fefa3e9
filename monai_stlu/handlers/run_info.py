# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A small record of what a training run is (bundle, method, network), saved in its checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from monai_stlu.handlers.checkpoint_fit import describe_module

__all__ = ["RunInfo"]


class RunInfo:
    """Put ``"run_info": RunInfo(...)`` into a checkpoint's ``save_dict`` and the checkpoint says what wrote it, so
    that resuming with another method or bundle is refused with a sentence naming both
    (:py:func:`monai_stlu.handlers.check_checkpoint_fits`) instead of a state-dict key dump.

    Args:
        method: the method object (its class name is recorded) or a name.
        network: the trained network (described by class, ``n_filters`` and classes) or a description.
        bundle: the bundle's name, e.g. ``"stlu_la"``.

    Example (bundle config)::

        "run_info": {"_target_": "monai_stlu.handlers.RunInfo", "method": "@method", "network": "@network",
                     "bundle": "@bundle_name"}
    """

    def __init__(self, method: Any, network: nn.Module | str, bundle: str = "") -> None:
        self.info = {
            "bundle": str(bundle),
            "method": method if isinstance(method, str) else type(method).__name__,
            "network": network if isinstance(network, str) else describe_module(network),
        }
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        return dict(self.info)

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Keep the record read from a checkpoint in ``loaded`` (the current run's record is not changed)."""
        self.loaded = dict(state_dict)
