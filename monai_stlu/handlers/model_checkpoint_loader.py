# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""MONAI's CheckpointLoader for a trained model file, with clear errors for a missing or mismatched file."""

from __future__ import annotations

import os

from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.handlers.checkpoint_fit import MODEL_WAYS_OUT, check_checkpoint_fits
from monai_stlu.utils.model_record import load_model_file, model_record_of, record_overrides

Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ModelCheckpointLoader"]


class ModelCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` (``torch.load(weights_only=True)``) that checks the file before loading:

    - a missing file stops with a message naming it and how to make it (train first, or point ``--ckpt_dir`` /
      ``--output_subdir`` at the run that made it, e.g. a baseline's ``models/<method>/``);
    - a file written for another network (another method, ``n_filters``, class count) stops with one sentence
      naming the file and both networks (:py:func:`monai_stlu.handlers.check_checkpoint_fits`), never a key dump.

    Args:
        load_path: the checkpoint file, e.g. ``models/model.pt``.
        load_dict: objects to restore, e.g. ``{"model": network}`` for a flat state dict.
        kwargs: further ``CheckpointLoader`` arguments (``map_location``, ``strict``, ...).
    """

    def __init__(self, load_path: str, load_dict: dict, **kwargs) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)

    def check(self) -> None:
        """Run the checks without loading.

        Raises:
            FileNotFoundError: when ``load_path`` does not exist.
            ValueError: when it cannot be read (truncated, not a weights file), or its model record is refused
                (:py:class:`monai_stlu.utils.ModelRecordError`: a model file is data, never code).
            monai_stlu.handlers.CheckpointMismatchError: when it does not fit ``load_dict``.
        """
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"{self.load_path}: no trained model there. Train first (it is written by the training run's "
                "validation, or at its end with --num_val 0), or point --ckpt_dir (or --output_subdir, e.g. the "
                "method's folder under models/) at the run that made it."
            )
        checkpoint = load_model_file(self.load_path)
        record = model_record_of(checkpoint, self.load_path)  # a record that would be code refuses the file
        if self.strict:
            settings = " ".join(record_overrides(record))
            ways_out = MODEL_WAYS_OUT if not settings else (
                f"build the network it records (the {record.get('method', '?')} method's file, and {settings}), or "
                "let monai_stlu predict/export --model read the record for you"
            )
            check_checkpoint_fits(self.load_dict, checkpoint, self.load_path, ways_out)

    def __call__(self, engine: Engine) -> None:
        self.check()
        super().__call__(engine)
