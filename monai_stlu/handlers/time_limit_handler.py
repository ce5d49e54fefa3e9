# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Stop training cleanly after a wall-clock budget (a cluster's time limit, a GPU slot)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.utils.distributed import any_rank

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["TimeLimitHandler"]


class TimeLimitHandler:
    """After any iteration that ends more than ``max_seconds`` after the run started, terminate the engine: the
    run ends as a finished one (its final checkpoint written, ``model.pt`` the best validated model so far), and
    the same command resumes it later at the iteration where it stopped (an
    :py:class:`~monai_stlu.handlers.AtomicCheckpointSaver` saves the periodic checkpoint on termination). The clock
    starts when the run starts (``Events.STARTED``), so the set-up before it (caching) does not count. Under ``torchrun`` the ranks stop together, after the first iteration at
    which any rank's clock is past the budget (:py:func:`monai_stlu.utils.distributed.any_rank`, one all-reduce of
    one value per iteration while a budget is set).

    Args:
        max_seconds: the budget in seconds; None for no limit.
    """

    def __init__(self, max_seconds: float | None = None) -> None:
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive or None, got {max_seconds}.")
        self.max_seconds = max_seconds
        self.start: float | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if self.max_seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self.start = time.perf_counter()

    def __call__(self, engine: Engine) -> None:
        budget = float(self.max_seconds)  # type: ignore[arg-type]
        over = self.start is not None and time.perf_counter() - self.start > budget
        if any_rank(over):  # under torchrun every rank stops after the same iteration
            self.logger.info(f"time limit of {self.max_seconds:g} s reached at iteration {engine.state.iteration}: stopping.")
            engine.terminate()
