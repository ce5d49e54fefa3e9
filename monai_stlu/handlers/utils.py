# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Output transforms for logging handlers."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["loss_terms"]

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
