# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Training on a labeled list given from outside the bundle's split, as MONAI Label gives its datastore's labeled
studies (``train#dataset#data``): the unlabeled images then come from the same datastore.

A list from the bundle's own split (:py:func:`monai_stlu.data.semi_supervised_split`) names its cases (``"id"``);
MONAI Label's datastore list holds only ``image`` and ``label``. That difference is what the bundle configs read
(:py:func:`is_datastore_list`): with a datastore list, the unlabeled images are the datastore's images that have no
label, an epoch is one pass over the labeled studies, and a run starts fresh unless resuming is asked for.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai_stlu.data.datalist import semi_supervised_split
from monai_stlu.data.image_files import case_id

__all__ = ["is_datastore_list", "unlabeled_cases", "epoch_length", "IMAGE_PATTERNS"]

IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.h5")
logger = logging.getLogger(__name__)


def is_datastore_list(labeled: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a labeled list comes from outside the bundle's split (no case names: MONAI Label's datastore)."""
    return any("id" not in item for item in labeled)


def _path(item: Mapping[str, Any]) -> str:
    image = item["image"]
    return os.path.abspath(str(image[0] if isinstance(image, (list, tuple)) else image))


def unlabeled_cases(
    labeled: Sequence[Mapping[str, Any]],
    val: Sequence[Mapping[str, Any]] | None,
    split_args: Mapping[str, Any],
    use_unlabeled: bool = True,
    batch_size: int = 1,
) -> list[dict]:
    """The unlabeled training images.

    With the bundle's own split (``labeled`` names its cases), the split's unlabeled cases (``split_args`` are
    :py:func:`semi_supervised_split`'s arguments). With a datastore list (MONAI Label), the images lying beside
    the labeled ones (same folders, not recursive: the datastore keeps labels in sub-folders) that are neither
    labeled nor validation images. When the datastore has no such image, or ``use_unlabeled`` is false, the labeled
    images are used without their labels (the semi-supervised terms still run, on labeled data).

    Args:
        labeled: the labeled training list the trainer uses (``train#dataset#data``).
        val: the validation list (``validate#dataset#data``), kept out of the unlabeled set.
        split_args: the bundle's split arguments (``split_args``).
        use_unlabeled: take the datastore's unlabeled images (MONAI Label's ``use_unlabeled`` option).
        batch_size: the unlabeled batch size: a datastore with fewer unlabeled images than one batch has them topped
            up with labeled images (without their labels), so that a batch can be drawn.

    Returns:
        ``[{"image": path, "id": name}]``.

    Raises:
        ValueError: the bundle's split leaves fewer unlabeled cases than one batch (per process under torchrun).
    """
    if not is_datastore_list(labeled):
        split = semi_supervised_split(**dict(split_args))
        world = max(1, int(os.environ.get("WORLD_SIZE", "1")))  # under torchrun each process draws from its share
        share = math.ceil(len(split["unlabeled"]) / world)
        if share < max(1, int(batch_size)):
            source = split_args.get("datalist_file") or os.path.join(
                str(split_args.get("dataset_dir", "")), str(split_args.get("train_list", "train.list")))
            each = f", {share} for each of {world} processes," if world > 1 else ","
            raise ValueError(
                f"{source}: {len(split['unlabeled'])} unlabeled case(s) are left for this semi-supervised method"
                f"{each} fewer than one batch of {int(batch_size)} ({len(split['labeled'])} labeled + "
                f"{len(split['val'])} validation cases take the rest): lower --num_labeled or --num_val, add "
                "unlabeled cases, lower --unlabeled_batch_size, or train --method supervised."
            )
        return split["unlabeled"]
    used = {_path(d) for d in list(labeled) + list(val or [])}
    found: list[str] = []
    if use_unlabeled:
        for folder in sorted({os.path.dirname(_path(d)) for d in labeled}):
            files = {os.path.abspath(f) for p in IMAGE_PATTERNS for f in glob.glob(os.path.join(folder, p))}
            found += sorted(files - used)
    if not found:
        logger.warning(
            "no unlabeled image beside the %d labeled ones%s: the labeled images serve as unlabeled data too.",
            len(labeled), "" if use_unlabeled else " (use_unlabeled is off)",
        )
        return [{"image": d["image"], "id": case_id(_path(d))} for d in labeled]
    logger.info("datastore training: %d labeled, %d unlabeled images.", len(labeled), len(found))
    cases = [{"image": f, "id": case_id(f)} for f in found]
    if len(cases) < int(batch_size):  # one study short of a batch would leave the unlabeled loader empty
        extra = [{"image": d["image"], "id": case_id(_path(d))} for d in labeled][: int(batch_size) - len(cases)]
        logger.warning("%d unlabeled image(s) for batches of %d: topped up with %d labeled image(s), without labels.",
                       len(cases), int(batch_size), len(extra))
        cases += extra
    return cases


def epoch_length(labeled: Sequence[Mapping[str, Any]], batch_size: int, val_interval: int, iterations_per_epoch: int = 0) -> int:
    """Iterations per trainer epoch: ``val_interval`` for the bundle's own split (an epoch is a validation interval,
    as nnU-Net's fixed-length epochs); for a datastore list (MONAI Label, whose ``max_epochs`` the user sets)
    ``iterations_per_epoch``, or when that is 0 one pass over the labeled studies."""
    if not is_datastore_list(labeled):
        return int(val_interval)
    if int(iterations_per_epoch) > 0:
        return int(iterations_per_epoch)
    return max(1, math.ceil(len(labeled) / int(batch_size)))
