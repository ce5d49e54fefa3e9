# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A model file that says how to rebuild its network: the bundle settings it was trained with, inside ``model.pt``.

``model.pt`` stays a flat state dict (MONAI's ``CheckpointLoader``, ``ckpt_export`` and MONAI Label load it as
before); the record lies in the state dict's ``_metadata`` (which ``torch.save`` keeps, ``torch.load(weights_only=True)``
restores and ``load_state_dict`` ignores beyond its version numbers).

A model file is data, never code, whoever wrote it: a record is read through a fixed schema (:py:data:`RECORD_SCHEMA`:
known keys, their types and ranges, method and backbone names from :py:mod:`monai_stlu.utils.names`), and any string in
it that MONAI's config parser would treat as an expression or reference (starting with ``$``, ``@`` or ``%``) or that
names a Python internal (``__``) refuses the whole file (:py:class:`ModelRecordError`, one sentence naming the file).
The settings that reach a ``python -m monai.bundle`` command line are written from the checked Python values
(:py:func:`record_overrides`): numbers, booleans, ``None``, lists of numbers and names from the registries.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai_stlu.utils.names import BACKBONES, DROPOUT_PLACEMENTS, METHOD_NAMES, MIX_STRATEGIES

__all__ = [
    "RECORD_KEY",
    "RECORD_SCHEMA",
    "SETTINGS_SCHEMA",
    "ModelRecordError",
    "attach_model_record",
    "check_model_record",
    "load_model_file",
    "model_record_of",
    "read_model_record",
    "record_overrides",
]

RECORD_KEY = "monai_stlu"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_MAX_ITEMS = 1000  # a record holds a few dozen values; a larger one is not a record


class ModelRecordError(ValueError):
    """A model file's record is not one this package writes (wrong keys, types or ranges, or text that is code)."""


def _integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"an integer from {low} to {high}"

    return check


def _number(low: float, high: float, low_open: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (low < value if low_open else low <= value) and value <= high
        bounds = f"above {low} and at most {high}" if low_open else f"from {low} to {high}"
        return None if ok else f"a number {bounds}"

    return check


def _one_of(names: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in names else f"one of {', '.join(names)}"

    return check


def _list_of(
    item: Callable[[Any], str | None], min_len: int, max_len: int, optional: bool = False
) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        ok = isinstance(value, (list, tuple)) and min_len <= len(value) <= max_len
        ok = ok and all(item(v) is None for v in value)
        what = f"a list of {min_len}{'' if min_len == max_len else f' to {max_len}'} values, each {item(object())}"
        return None if ok else (f"null or {what}" if optional else what)

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _name(value: Any) -> str | None:
    return None if isinstance(value, str) and _NAME.fullmatch(value) else "a name of letters, digits, '_', '.' or '-'"


#: the keys a record may hold and, for each, a check that returns None for a valid value or what the value must be
RECORD_SCHEMA: dict[str, Callable[[Any], str | None]] = {
    "bundle": _name,
    "method": _one_of(METHOD_NAMES),
    "settings": lambda value: None,  # a mapping checked against SETTINGS_SCHEMA
}
#: the keys of a record's ``settings``, each with its check
SETTINGS_SCHEMA: dict[str, Callable[[Any], str | None]] = {
    "n_filters": _integer(1, 1024),
    "num_classes": _integer(1, 1024),
    "in_channels": _integer(1, 64),
    "patch_size": _list_of(_integer(1, 4096), 2, 3),
    "spacing": _list_of(_number(0.0, 1000.0, low_open=True), 2, 3),
    "target_spacing": _list_of(_number(0.0, 1000.0, low_open=True), 2, 3, optional=True),
    "intensity_minmax": _boolean,
    "mix_stages": _list_of(_integer(0, 16), 0, 17, optional=True),
    "dropout_prob": _number(0.0, 1.0),
    "detach_weight": _boolean,
    "mix_strategy": _one_of(MIX_STRATEGIES),
    "mix_lambda": _number(0.0, 1.0),
    "dropout_placement": _one_of(DROPOUT_PLACEMENTS),
    "backbone": _one_of(BACKBONES),
    "modalities": _list_of(_name, 1, 16),
}


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _code_like(record: Any) -> str | None:
    """The first string (key or value) in ``record`` that would be code or a reference to MONAI's config parser, or
    names a Python internal; a problem sentence for a record too large or too deep to be one."""
    stack, seen = [(record, 0)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > _MAX_ITEMS or depth > 8:
            return "it is larger or deeper than any record this package writes"
        if isinstance(value, str):
            if value.startswith(("$", "@", "%")) or "__" in value:
                return f"it holds the text {_shorten(value)}, which a bundle config would run as code or a reference"
        elif isinstance(value, Mapping):
            stack += [(k, depth + 1) for k in value] + [(v, depth + 1) for v in value.values()]
        elif isinstance(value, (list, tuple)):
            stack += [(v, depth + 1) for v in value]
    return None


def _schema_problem(
    values: Mapping, schema: Mapping[str, Callable[[Any], str | None]], what: str, prefix: str
) -> str | None:
    """The first key of ``values`` that ``schema`` does not know or whose value fails its check, as a phrase."""
    for key, value in values.items():
        check = schema.get(key) if isinstance(key, str) else None
        if check is None:
            return f"unknown {what} {_shorten(key)}"
        need = check(value)
        if need:
            return f"{prefix}'{key}' is {_shorten(value)}, where it must be {need}"
    return None


def check_model_record(record: Any, source: str = "the model file") -> dict[str, Any]:
    """``record`` checked against the schema (:py:data:`RECORD_SCHEMA`, :py:data:`SETTINGS_SCHEMA`), as a plain dict.

    Args:
        record: a record as read from a model file (``{}`` or ``None`` for a file without one).
        source: the model file, named in the error.

    Raises:
        ModelRecordError: one sentence naming ``source``, the key and what its value must be.
    """
    if record is None or (isinstance(record, Mapping) and not record):
        return {}

    def refuse(problem: str) -> ModelRecordError:
        return ModelRecordError(
            f"{source}: its model record is refused ({problem}); a model file is read as data only, so use a model "
            "file that monai_stlu wrote (train it again, or get it from a source you trust)."
        )

    code = _code_like(record)
    if code:
        raise refuse(code)
    if not isinstance(record, Mapping):
        raise refuse(f"it is a {type(record).__name__}, not a mapping of settings")
    problem = _schema_problem(record, RECORD_SCHEMA, "key", "")
    settings = record.get("settings", {})
    if problem is None and not isinstance(settings, Mapping):
        problem = f"'settings' is {_shorten(settings)}, not a mapping"
    problem = problem or _schema_problem(settings, SETTINGS_SCHEMA, "setting key", "setting ")
    if problem:
        raise refuse(problem)
    return json.loads(json.dumps(dict(record)))  # a plain copy: lists for tuples, no shared objects


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


def model_record_of(state: Any, source: str = "the model file") -> dict[str, Any]:
    """The checked record of a state dict already loaded (``{}`` without one).

    Raises:
        ModelRecordError: the record fails the schema (:py:func:`check_model_record`).
    """
    metadata = getattr(state, "_metadata", None)
    entry = metadata.get("") if isinstance(metadata, Mapping) else None
    record = entry.get(RECORD_KEY) if isinstance(entry, Mapping) else None
    return check_model_record(record, source)


def load_model_file(path: str, flat: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one sentence for a file that is missing or cannot be
    read as weights.

    Args:
        path: the model file.
        flat: also refuse anything but a flat state dict (a model file, not a training checkpoint).

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated, not a torch file, pickled code that ``weights_only`` refuses, or (``flat``) not a
            state dict of tensors.
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled code that weights_only refuses
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(
            f"{path}: cannot be read as a model ({reason}): the file is incomplete (a copy or a save cut short) or "
            "not a weights file; copy it again or train again."
        ) from e
    if flat:
        tensors = isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values())
        if not tensors:
            what = (f"a training checkpoint (it holds {', '.join(sorted(map(str, state))[:5])})"
                    if isinstance(state, Mapping) and state else f"a {type(state).__name__}, not a state dict")
            raise ValueError(
                f"{path}: not a model file but {what}; give the run's model.pt (models/<method>/model.pt), which "
                "holds the network's weights alone."
            )
    return state


def read_model_record(path: str) -> dict[str, Any]:
    """The checked record of the model file ``path`` (``{}`` for a file without one, or one that cannot be read: the
    loaders report those themselves).

    Raises:
        ModelRecordError: the record fails the schema (:py:func:`check_model_record`).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated or foreign: not this function's to report
        return {}
    return model_record_of(state, path)


def _literal(value: Any) -> str:
    """A checked setting as the Python literal ``python -m monai.bundle`` parses back to the same value."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(v) for v in value) + "]"  # numbers, or names in quotes
    if isinstance(value, str):
        return value  # a name from the schema (letters, digits, '_', '.', '-'), as a bare word on the command line
    return repr(value)  # int, float, bool, None


def record_overrides(
    record: Mapping[str, Any], keys: set[str] | None = None, source: str = "the model file"
) -> list[str]:
    """The record's bundle settings as ``--key value`` command-line overrides (only ``keys`` when given), written from
    the values :py:func:`check_model_record` accepted: numbers, booleans, ``None``, lists of them, and names.

    Raises:
        ModelRecordError: the record fails the schema.
    """
    args = []
    for key, value in (check_model_record(record, source).get("settings") or {}).items():
        if keys is None or key in keys:
            args += [f"--{key}", _literal(value)]
    return args
