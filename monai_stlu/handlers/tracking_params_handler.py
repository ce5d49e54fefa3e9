# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Give the experiment-tracking handlers that ``--tracking mlflow`` adds the run's settings as parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
MLFlowHandler, _ = optional_import("monai.handlers", name="MLFlowHandler")

__all__ = ["TrackingParamsHandler"]


class TrackingParamsHandler:
    """When the engine starts, add ``params`` to the ``experiment_param`` of every ``monai.handlers.MLFlowHandler``
    attached to it, so that each tracked run records what it is (method, labeled cases, patch, filters, seed,
    commit, ...) and runs of different methods can be told apart and compared. MONAI's ``--tracking mlflow`` appends
    its handler after the bundle's own, so this handler's start runs first; without tracking it does nothing.

    Args:
        params: parameter names and values (values are logged as strings; lists as their text).

    Example (bundle config)::

        {"_target_": "monai_stlu.handlers.TrackingParamsHandler",
         "params": {"method": "$type(@method).__name__", "num_labeled": "@num_labeled", "seed": "@seed"}}
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = {str(k): (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for handlers in engine._event_handlers.values():
            for func, _, _ in handlers:
                tracker = getattr(func, "__self__", None)
                if isinstance(tracker, MLFlowHandler):
                    tracker.experiment_param = {**(tracker.experiment_param or {}), **self.params}
