# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A model file that says how to rebuild its network: the bundle settings it was trained with, inside ``model.pt``.

``model.pt`` stays a flat state dict (MONAI's ``CheckpointLoader``, ``ckpt_export`` and MONAI Label load it as
before); the record lies in the state dict's ``_metadata`` (which ``torch.save`` keeps, ``torch.load(weights_only=True)``
restores and ``load_state_dict`` ignores beyond its version numbers).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["RECORD_KEY", "attach_model_record", "model_record_of", "read_model_record", "record_overrides"]

RECORD_KEY = "monai_stlu"


def _plain(value: Any) -> Any:
    """``value`` as JSON-like data (what ``torch.load(weights_only=True)`` reads back)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def attach_model_record(state_dict: Mapping, record: Mapping[str, Any]) -> Mapping:
    """Put ``record`` into ``state_dict``'s metadata and return the state dict: in place where it can carry metadata
    (``Module.state_dict()``'s ``OrderedDict``), else as an ``OrderedDict`` copy (a plain ``dict`` takes no attribute).
    """
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is None:
        if not isinstance(state_dict, OrderedDict):
            state_dict = OrderedDict(state_dict)
        metadata = OrderedDict()
        state_dict._metadata = metadata  # type: ignore[attr-defined]
    metadata[""] = {**metadata.get("", {}), RECORD_KEY: _plain(dict(record))}
    return state_dict


def model_record_of(state: Mapping) -> dict[str, Any]:
    """The record of a state dict already loaded (``{}`` without one)."""
    metadata = getattr(state, "_metadata", None) or {}
    record = metadata.get("", {}).get(RECORD_KEY, {})
    return dict(record) if isinstance(record, Mapping) else {}


def read_model_record(path: str) -> dict[str, Any]:
    """The record of the model file ``path`` (``{}`` for a file without one, or one that cannot be read: the
    loaders report those themselves)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated or foreign: not this function's to report
        return {}
    return model_record_of(state)


def record_overrides(record: Mapping[str, Any], keys: set[str] | None = None) -> list[str]:
    """The record's bundle settings as ``--key value`` command-line overrides (only ``keys`` when given), values as
    ``python -m monai.bundle`` parses them (Python literals; strings as they are)."""
    args = []
    for key, value in (record.get("settings") or {}).items():
        if keys is None or key in keys:
            args += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return args
