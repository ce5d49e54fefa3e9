# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Redraw ``progress.png`` while training runs, as nnU-Net does."""

from __future__ import annotations

import logging

from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.utils.plots import plot_run

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ProgressPlotHandler"]


class ProgressPlotHandler:
    """At the end of every trainer epoch (a validation interval), redraw ``<run_dir>/progress.png`` from the run's
    TensorBoard events (:py:func:`monai_stlu.utils.plot_run`: loss terms, gamma, learning rate, Dice). A failure
    to draw is logged and never stops training.

    Args:
        run_dir: the run's output folder (``output_dir``; its ``runs/`` holds the events).
        every: redraw every this many epochs.
    """

    def __init__(self, run_dir: str, every: int = 1) -> None:
        self.run_dir = str(run_dir)
        self.every = max(1, int(every))
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)

    def __call__(self, engine: Engine) -> None:
        try:
            plot_run(self.run_dir)
        except Exception as e:  # a picture must never cost a training run
            self.logger.warning(f"progress.png not drawn in {self.run_dir}: {e}")
