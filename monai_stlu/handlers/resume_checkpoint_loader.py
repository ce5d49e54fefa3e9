# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Resume an interrupted training run from the newest periodic checkpoint in a folder, if there is one."""

from __future__ import annotations

import glob
import logging
import os
import re

from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import

Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ResumeCheckpointLoader", "latest_checkpoint"]


def latest_checkpoint(ckpt_dir: str, pattern: str = "checkpoint_*.pt") -> str | None:
    """The newest file matching ``pattern`` in ``ckpt_dir``, by the last number in its name (then by mtime)."""
    files = glob.glob(os.path.join(ckpt_dir, pattern))
    if not files:
        return None

    def key(path: str) -> tuple[int, float]:
        numbers = re.findall(r"\d+", os.path.basename(path))
        return (int(numbers[-1]) if numbers else -1, os.path.getmtime(path))

    return max(files, key=key)


class ResumeCheckpointLoader(CheckpointLoader):
    """``CheckpointLoader`` that picks the newest periodic checkpoint of ``ckpt_dir`` when the run starts, and does
    nothing (a fresh run) when there is none or ``enabled`` is False. Loading uses ``torch.load(weights_only=True)``.

    Pair it with a ``CheckpointSaver`` that saves ``{"network", "optimizer", "trainer", ...}`` every epoch
    (``save_interval=1``, ``n_saved=1``); ignite writes those files atomically.

    Args:
        ckpt_dir: folder of the periodic checkpoints.
        load_dict: objects to restore, the same keys as the saver's ``save_dict``.
        pattern: glob of the periodic checkpoint files.
        enabled: set False to always start fresh.
        map_location: ``torch.load`` map location.
        name: logger name.
    """

    def __init__(
        self,
        ckpt_dir: str,
        load_dict: dict,
        pattern: str = "checkpoint_*.pt",
        enabled: bool = True,
        map_location: dict | str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(load_path=os.path.join(ckpt_dir, pattern), load_dict=load_dict, name=name, map_location=map_location)
        self.ckpt_dir = ckpt_dir
        self.pattern = pattern
        self.enabled = enabled

    def __call__(self, engine: Engine) -> None:
        path = latest_checkpoint(self.ckpt_dir, self.pattern) if self.enabled else None
        if path is None:
            if self.enabled:
                logging.getLogger(self._name or __name__).info(f"no checkpoint in {self.ckpt_dir}: starting a new run.")
            return
        self.load_path = path
        super().__call__(engine)
        engine.logger.info(f"resumed from {path} at iteration {engine.state.iteration}.")
