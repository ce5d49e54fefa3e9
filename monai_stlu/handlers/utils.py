# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Output transforms for logging and metric handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from monai_stlu.utils.fast_path import argmax

__all__ = ["loss_terms", "onehot_pred_label"]

_NOT_TERMS = ("image", "label", "pred")


def loss_terms(output: Any) -> dict[str, float]:
    """The scalar loss terms of a (possibly decollated) trainer output, for ``StatsHandler(output_transform=...)``.

    Returns every scalar entry (``loss``, ``sup``, ``unsup``, ``gamma``, ...) of the first item as a float.
    """
    item = output[0] if isinstance(output, list) else output
    terms = {}
    for k, v in item.items():
        if k in _NOT_TERMS:
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            terms[k] = float(v.detach())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            terms[k] = float(v)
    return terms


def onehot_pred_label(num_classes: int) -> Callable[[Any], tuple[torch.Tensor, torch.Tensor]]:
    """An ``output_transform`` for a training metric: the argmax of ``pred`` and the class-index ``label`` of the
    trainer's output (decollated, as MONAI's trainers leave it, or batched) as one-hot float batches
    ``(B, num_classes, *spatial)``.

    ``MeanDice`` gets the same per-case inputs as from decollating the output and applying
    ``AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=num_classes)`` to each case (the
    spleen_ct_segmentation bundle's training post-processing), made by one broadcast comparison per tensor instead
    of per-case transforms (BENCHMARKS "Host time": the training Dice's share of an iteration).

    Args:
        num_classes: number of classes, background included.
    """

    def transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(output, list):  # a decollated output: the cases back into one batch
            pred = torch.stack([item["pred"] for item in output])
            label = torch.stack([item["label"] for item in output])
        else:
            pred, label = output["pred"], output["label"]
        index = argmax(pred.detach(), 1, keepdim=True)
        classes = torch.arange(num_classes, device=index.device).view(1, -1, *([1] * (index.dim() - 2)))
        return (index == classes).float(), (label.detach().long() == classes).float()

    return transform
