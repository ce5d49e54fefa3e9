# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Command-line switches as booleans: ``--resume false`` reaches a bundle as the string ``"false"``."""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]

_FALSE = {"false", "0", "no", "off", "none", "null", ""}
_TRUE = {"true", "1", "yes", "on"}


def as_bool(value: Any) -> bool:
    """``value`` as a bool, reading the strings a command line gives (``"false"``, ``"0"``, ``"no"``, ``"off"``
    and ``"true"``, ``"1"``, ``"yes"``, ``"on"``, any case) by their meaning rather than by Python truthiness.

    ``python -m monai.bundle run ... --resume false`` passes the string ``"false"`` (only ``False`` is parsed as a
    literal), which Python would treat as true.

    Raises:
        ValueError: for any other string, naming it.
    """
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _FALSE:
            return False
        if v in _TRUE:
            return True
        raise ValueError(f"{value!r} is not a yes/no value (use true or false).")
    return bool(value)
