# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Resume an interrupted training run from the newest periodic checkpoint in a folder, if there is one."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping

import torch
from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.handlers.atomic_checkpoint_saver import remove_partial_files
from monai_stlu.handlers.checkpoint_fit import check_checkpoint_fits
from monai_stlu.utils.flags import as_bool

Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ResumeCheckpointLoader", "checkpoints_newest_first", "latest_checkpoint"]


def checkpoints_newest_first(ckpt_dir: str, pattern: str = "checkpoint_*.pt") -> list[str]:
    """Files matching ``pattern`` in ``ckpt_dir``, newest first: by the last number in the name, then by mtime."""

    def key(path: str) -> tuple[int, float]:
        numbers = re.findall(r"\d+", os.path.basename(path))
        return (int(numbers[-1]) if numbers else -1, os.path.getmtime(path))

    return sorted(glob.glob(os.path.join(ckpt_dir, pattern)), key=key, reverse=True)


def latest_checkpoint(ckpt_dir: str, pattern: str = "checkpoint_*.pt") -> str | None:
    """The newest file matching ``pattern`` in ``ckpt_dir`` (see :py:func:`checkpoints_newest_first`), or None."""
    files = checkpoints_newest_first(ckpt_dir, pattern)
    return files[0] if files else None


def _check_not_past_the_end(checkpoint: Mapping, path: str, engine: Engine) -> None:
    """Refuse to resume a run that already went further than this one is asked to (ignite's own words are a key dump
    about epochs: ``Epoch count (4) in checkpoint is larger than ... max_epochs (2)``)."""
    trainer = checkpoint.get("trainer") if isinstance(checkpoint, Mapping) else None
    if not isinstance(trainer, Mapping) or engine.state.max_epochs is None:
        return
    iteration = int(trainer.get("iteration", 0) or 0)
    planned = engine.state.max_epochs * int(engine.state.epoch_length or trainer.get("epoch_length") or 1)
    if iteration > planned:
        raise ValueError(
            f"{path}: this run already reached iteration {iteration}, beyond the {planned} it is now asked for "
            f"(--max_iterations): give --max_iterations {iteration} or more to continue it, train into another folder "
            "(--output_subdir NAME), or start afresh with --resume false."
        )


class ResumeCheckpointLoader(CheckpointLoader):
    """``CheckpointLoader`` that picks the newest periodic checkpoint of ``ckpt_dir`` when the run starts, and does
    nothing (a fresh run) when there is none or ``enabled`` is False. Loading uses ``torch.load(weights_only=True)``.

    Before loading, the checkpoint is checked against ``load_dict`` (:py:func:`monai_stlu.handlers.check_checkpoint_fits`):
    one written by another method, network or bundle stops the run with one sentence naming the file, what wrote it and
    the ways out, instead of a state-dict key dump.

    Pair it with an :py:class:`AtomicCheckpointSaver` that saves ``{"network", "optimizer", "trainer", ...}`` every
    epoch (``save_interval=1``, ``n_saved=2``, so a complete older file exists while the newest is written).

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
        self.all_load_dict = dict(self.load_dict)  # wrappers (DDP) already looked through by CheckpointLoader
        self.pattern = pattern
        self.enabled = as_bool(enabled)  # --resume false arrives as a string

    def __call__(self, engine: Engine) -> None:
        """Load the newest checkpoint that reads back; an unreadable newer one (say, cut short by a crash while it
        was written by a non-atomic saver) is reported and skipped.

        Raises:
            RuntimeError: when checkpoints exist but none of them can be read.
            monai_stlu.handlers.CheckpointMismatchError: when the newest readable one does not fit this run.
        """
        logger = logging.getLogger(self._name or __name__)
        if os.path.isdir(self.ckpt_dir):
            remove_partial_files(self.ckpt_dir)
        files = checkpoints_newest_first(self.ckpt_dir, self.pattern) if self.enabled else []
        if not files:
            if self.enabled:
                logger.info(f"no checkpoint in {self.ckpt_dir}: starting a new run.")
            return
        problems = []
        for path in files:
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # a truncated or foreign file: any unpickling error
                reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                problems.append(f"{path}: {reason}")
                logger.warning(f"cannot read checkpoint {path} ({reason}); trying an older one.")
                continue
            check_checkpoint_fits(self.all_load_dict, checkpoint, path)
            _check_not_past_the_end(checkpoint, path, engine)
            # a record written by a newer version of the saver may be absent from an older checkpoint
            self.load_dict = {k: v for k, v in self.all_load_dict.items() if k in checkpoint or k != "run_info"}
            self.load_path = path
            super().__call__(engine)
            engine.logger.info(f"resumed from {path} at iteration {engine.state.iteration}.")
            return
        raise RuntimeError(
            f"none of the checkpoints in {self.ckpt_dir} can be read, so the run cannot resume:\n  "
            + "\n  ".join(problems)
            + "\nMove them away (or run with --resume false) to start afresh."
        )
