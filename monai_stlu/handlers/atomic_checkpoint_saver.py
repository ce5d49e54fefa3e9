# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MONAI's CheckpointSaver with atomic files and a best-model record that survives a resume."""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.utils.model_record import attach_model_record
from monai_stlu.utils.best_metric import best_metric_state, restore_best_metric

DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["AtomicCheckpointSaver", "remove_partial_files", "PARTIAL_SUFFIX"]

PARTIAL_SUFFIX = ".partial"


def remove_partial_files(folder: str) -> list[str]:
    """Delete the ``.<name>.partial`` files an :py:class:`AtomicCheckpointSaver` left in ``folder`` when its process
    was killed mid-write (never a complete file: those are renamed into place). Returns the removed paths."""
    removed = []
    for path in glob.glob(os.path.join(folder, f".*{PARTIAL_SUFFIX}")):
        os.remove(path)
        removed.append(path)
    if removed:
        logging.getLogger(__name__).warning(f"removed {len(removed)} half-written file(s) of a killed run: {removed}")
    return removed


def _on_cpu(state: Mapping) -> Mapping:
    """A flat state dict with its tensors on the CPU and its metadata kept: a model trained on a GPU then loads where
    no GPU is (MONAI's ``ckpt_export`` and MONAI Label load it without a ``map_location``)."""
    if all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in state.values()):
        return state
    moved = OrderedDict((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    if getattr(state, "_metadata", None) is not None:
        moved._metadata = state._metadata  # type: ignore[attr-defined]
    return moved


class _FixedNameAtomicSaver(DiskSaver):  # type: ignore[misc,valid-type]
    """ignite's DiskSaver writing through a temporary file and a rename, optionally under one fixed file name."""

    def __init__(self, dirname: str, filename: str | None = None, record: Mapping | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename
        self.record = record

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.record:  # a model file that says how to rebuild its network, and loads on any host
            checkpoint = attach_model_record(_on_cpu(checkpoint), self.record)
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        """Write ``.<name>.partial`` beside the target, then rename it into place: a process killed while writing
        leaves the previous file intact and only a ``.partial`` file, which :py:func:`remove_partial_files`
        (called when a run resumes) deletes."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
        try:
            func(checkpoint, str(tmp), **self.kwargs)
            os.replace(tmp, path)
        except BaseException as e:
            if tmp.exists():
                tmp.unlink()
            if isinstance(e, Exception) and _is_write_failure(e):
                free = shutil.disk_usage(path.parent).free / 2**20
                full = _looks_like_a_full_disk(e) or free < _NEARLY_FULL_MIB
                why = "no space left on the device" if full else f"the write failed ({_first_line(e)})"
                raise OSError(
                    errno.ENOSPC if full else errno.EIO,
                    f"{path} could not be written: {why} ({free:.0f} MiB free there; the previous file is intact). "
                    "Free some space or write the run elsewhere (--bundle_root DIR), then run the same command "
                    "again: it resumes.",
                    str(path),
                ) from e
            raise

    def remove(self, filename: str) -> None:
        """Remove a file the checkpoint no longer keeps. Under a fixed file name nothing is removed: the next write
        replaces the file atomically (ignite removes the old file before writing the new one, which would leave no
        ``model.pt`` on disk while it is written). A file already gone (deleted by hand, a killed run) is fine."""
        if self.filename:
            return
        try:
            super().remove(filename)
        except FileNotFoundError:
            logging.getLogger(__name__).warning(f"{os.path.join(self.dirname, filename)} was already gone.")


_NEARLY_FULL_MIB = 64  # a write that fails with less free space than this failed for want of it
# torch's words for a write that failed under it (a full disk among the causes: its C++ stream says no more)
_WRITE_FAILURES = ("file write failed", "iostream error", "PytorchStreamWriter failed", "unexpected pos")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _looks_like_a_full_disk(e: BaseException) -> bool:
    text = str(e)
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in text or "file write failed" in text


def _is_write_failure(e: BaseException) -> bool:
    return _looks_like_a_full_disk(e) or any(t in str(e) for t in _WRITE_FAILURES)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` that writes every file atomically and can carry its best-model record
    across a resume.

    - MONAI's saver writes in place (``atomic=False``), and ignite deletes the previous file *before* writing the
      next one, so a run stopped while saving can leave a truncated checkpoint and no other. Here every file is
      written to a temporary file in the same folder and renamed into place; keep ``n_saved >= 2`` for the
      periodic checkpoints so that one complete file always exists.
    - Under a fixed file name (``model.pt``) the old file is never removed first: the new one replaces it, so a
      ``model.pt`` exists at every moment once one was written, and a record naming a file that is gone is harmless.
    - A periodic saver adopts the older periodic files of the folder at its first save, so ``n_saved`` still
      rotates them after a resume. A full disk is reported as such, naming the file.
    - A run stopped by ``engine.terminate()`` (:py:class:`monai_stlu.handlers.TimeLimitHandler`, any early stop)
      ends between two periodic saves, and ignite fires no ``EPOCH_COMPLETED`` for the epoch it stops in. A periodic
      saver therefore also saves at ``Events.TERMINATE`` when the newest iteration is not saved yet, under the
      running epoch's name (``checkpoint_epoch=3.pt`` holding, say, iteration 1,250 of 1,500): the same command then
      resumes at that iteration (ignite continues mid-epoch), and the end of that epoch replaces the file.
    - ``state_dict()`` / ``load_state_dict()`` hold the key-metric record (which scores are saved under which
      file names). Put the best-model saver in the periodic checkpoint's ``save_dict`` and the resumed run keeps
      ``model.pt`` unless a validation beats the best score of the interrupted run (without it, the first
      validation after a resume overwrites ``model.pt`` whatever its score). The record also carries the best value
      of the workflow the saver is attached to (the evaluator's ``state.best_metric``), so that the resumed evaluator
      does not log the first score after a resume as a new best.

    Args:
        save_dir: the folder of the files.
        save_dict: objects to save (``state_dict()`` each), as for ``CheckpointSaver``.
        model_record: the settings the network was built with (:py:mod:`monai_stlu.handlers.model_record`), written
            into a flat model file (``model.pt``: one object saved under a fixed name), so that evaluation, prediction
            and export can rebuild its network without the training flags.
        kwargs: every other ``CheckpointSaver`` argument (``save_key_metric``, ``key_metric_filename``,
            ``save_interval``, ``n_saved``, ...).

    Example (bundle config)::

        "best_model_saver": {"_target_": "monai_stlu.handlers.AtomicCheckpointSaver", "save_dir": "@ckpt_dir",
                             "save_dict": {"model": "@network"}, "save_key_metric": true,
                             "key_metric_filename": "model.pt"}
    """

    def __init__(self, save_dir: str, save_dict: dict, model_record: Mapping | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint, fixed_name in (
            (self._final_checkpoint, kwargs.get("final_filename")),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, None),
        ):
            if checkpoint is not None:
                record = model_record if fixed_name and len(save_dict) == 1 else None  # flat model files only
                checkpoint.save_handler = _FixedNameAtomicSaver(save_dir, fixed_name, record)
        self._adopted = False
        self._engine: Any = None
        self._pending_best: Mapping = {}
        self._saved_iteration: int | None = None

    def attach(self, engine: Any) -> None:
        """Attach as MONAI's saver does, remembering the engine whose best key-metric value the record carries; a
        periodic saver also saves the iterations a terminated run trained since its last save."""
        super().attach(engine)
        self._engine = engine
        restore_best_metric(engine, self._pending_best)
        if self._interval_checkpoint is not None:
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.TERMINATE, self._terminated)

    def _started(self, engine: Any) -> None:
        self._saved_iteration = engine.state.iteration  # a resumed run starts from a saved iteration

    def _terminated(self, engine: Any) -> None:
        if engine.state.iteration != self._saved_iteration:
            self.interval_completed(engine)

    def interval_completed(self, engine: Any) -> None:
        """Save the periodic checkpoint; the first time, adopt the periodic files an interrupted run of this folder
        left with an older step, so that ``n_saved`` keeps rotating them after a resume."""
        if not self._adopted and self._interval_checkpoint is not None:
            self._adopt_interval_files(engine)
        super().interval_completed(engine)
        self._saved_iteration = engine.state.iteration

    def _adopt_interval_files(self, engine: Any) -> None:
        self._adopted = True
        checkpoint = self._interval_checkpoint
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        name = "epoch" if self.epoch_level else "iteration"
        prefix = f"{checkpoint.filename_prefix}_" if checkpoint.filename_prefix else ""
        known = {item.filename for item in checkpoint._saved}
        found = []
        for path in glob.glob(os.path.join(self.save_dir, f"{prefix}checkpoint_{name}=*.pt")):
            match = re.fullmatch(rf"{re.escape(prefix)}checkpoint_{name}=(\d+)\.pt", os.path.basename(path))
            if match and int(match.group(1)) < step and os.path.basename(path) not in known:
                found.append((int(match.group(1)), os.path.basename(path)))
        for priority, filename in sorted(found):
            checkpoint._saved.append(Checkpoint.Item(priority, filename))
        checkpoint._saved.sort(key=lambda item: item.priority)

    def state_dict(self) -> dict:
        """The key-metric record: ``{"key_metric_saved": [(score, file name), ...]}`` (empty without a key metric),
        plus ``best_metric`` / ``best_metric_epoch`` of the attached workflow once it has compared a key metric."""
        if self._key_metric_checkpoint is None:
            return {"key_metric_saved": []}
        saved = self._key_metric_checkpoint.state_dict()["_saved"]
        record: dict = {"key_metric_saved": [(float(score), str(name)) for score, name in saved]}
        if self._engine is not None:
            record.update(best_metric_state(self._engine))
        return record

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the key-metric record written by :py:meth:`state_dict`, and the attached workflow's best value
        (set when the saver is attached, if it is not yet). A record without the best value (written by an older
        version) restores the file record only."""
        if self._key_metric_checkpoint is not None:
            saved = [(float(score), str(name)) for score, name in state_dict.get("key_metric_saved", [])]
            self._key_metric_checkpoint.load_state_dict({"_saved": saved})
            self._pending_best = dict(state_dict)
            if self._engine is not None:
                restore_best_metric(self._engine, state_dict)
