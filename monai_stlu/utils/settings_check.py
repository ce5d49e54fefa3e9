# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Checks of a bundle run's settings before any work starts: keys the bundle does not know, intervals, strides."""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from monai_stlu.utils.bundle import argv_value, config_files_from_argv

__all__ = [
    "top_level_values", "unknown_override_keys", "check_command_line_keys", "check_optional_packages",
    "check_count", "check_max_iterations", "check_settings",
]

# monai.bundle run's own arguments, never config keys
RUN_ARGUMENTS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}


def _load(path: str) -> Any:
    if path.endswith((".yaml", ".yml")):
        import yaml  # MONAI reads YAML configs with it

        with open(path) as f:
            return yaml.safe_load(f)
    with open(path) as f:
        return json.load(f)


def top_level_values(config_files: Sequence[str]) -> dict[str, Any]:
    """The top-level keys of config files merged in order (a later file wins), with their raw values."""
    merged: dict[str, Any] = {}
    for path in config_files:
        content = _load(path)
        if isinstance(content, Mapping):
            merged.update(content)
    return merged


def _ids(config: Any, prefix: str = "") -> set[str]:
    """Every id of a config (``a``, ``a#b``, ``a#0#c``), as MONAI addresses them."""
    out = set()
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else []
    for key, value in items:
        name = f"{prefix}#{key}" if prefix else str(key)
        out.add(name)
        out |= _ids(value, name)
    return out


def _override_keys(argv: Sequence[str]) -> list[str]:
    keys = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            keys.append(arg[2:].split("=", 1)[0])
    return [k for k in keys if k not in RUN_ARGUMENTS]


def _known(key: str, ids: set[str], configs: list[Any]) -> bool:
    if key in ids:
        return True
    # a new argument of a component (a dict with "_target_") is a constructor argument, welcome
    parent = key.rsplit("#", 1)[0] if "#" in key else None
    if parent is None or parent not in ids:
        return False
    for config in configs:
        node = config
        try:
            for part in parent.split("#"):
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if isinstance(node, Mapping) and "_target_" in node:
            return True
    return False


def unknown_override_keys(
    argv: Sequence[str], config_files: Sequence[str], extra_configs: Sequence[Mapping] = ()
) -> list[tuple[str, str | None]]:
    """The ``--key`` overrides of a ``monai.bundle run`` command line that no config file (nor ``extra_configs``)
    defines, each with the nearest known key (or None). A new argument of a component (``--validate#inferer#mode
    gaussian``) is known."""
    configs = [_load(f) for f in config_files if os.path.isfile(f)] + list(extra_configs)
    ids: set[str] = set()
    for config in configs:
        ids |= _ids(config)
    unknown = []
    for key in _override_keys(argv):
        if not _known(key, ids, configs):
            near = difflib.get_close_matches(key, sorted(ids), n=1, cutoff=0.6)
            unknown.append((key, near[0] if near else None))
    return unknown


def _is_bundle_command(argv: Sequence[str]) -> bool:
    return len(argv) >= 2 and argv[0].replace(os.sep, "/").endswith("monai/bundle/__main__.py")


def check_optional_packages(argv: Sequence[str] | None = None) -> None:
    """Refuse, before any start-up work, a ``monai.bundle`` command that needs an optional package that is missing:
    ``onnx_export`` (onnx, onnxscript) and ``--tracking mlflow`` (mlflow), naming the pip command.

    Raises:
        ModuleNotFoundError: naming the command, the missing packages and ``pip install 'monai_stlu[extra]'``.
    """
    argv = list(sys.argv if argv is None else argv)
    if not _is_bundle_command(argv):
        return
    needs = []
    if argv[1] == "onnx_export":
        needs += [("onnx", "onnx", "onnx_export"), ("onnxscript", "onnx", "onnx_export")]
    if argv_value(argv, "--tracking") == "mlflow":
        needs += [("mlflow", "mlflow", "--tracking mlflow")]
    missing = [(module, extra, what) for module, extra, what in needs if importlib.util.find_spec(module) is None]
    if missing:
        modules = ", ".join(m for m, _, _ in missing)
        raise ModuleNotFoundError(
            f"{missing[0][2]} needs {modules}, which is not installed here: pip install 'monai_stlu[{missing[0][1]}]' "
            "(or pip install 'monai_stlu[all]' for every optional part)."
        )


def _tracking_configs(argv: Sequence[str]) -> list[Mapping]:
    """With ``--tracking``, the config keys its settings add (``tracking_uri``, ``experiment_name``, ...): MONAI's
    settings for a named tool, or the user's settings file."""
    tracking = argv_value(argv, "--tracking")
    if not tracking:
        return []
    if os.path.isfile(tracking):
        settings = _load(tracking)
    else:
        from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

        settings = DEFAULT_EXP_MGMT_SETTINGS.get(tracking, {})
    configs = settings.get("configs", {}) if isinstance(settings, Mapping) else {}
    return [configs] if isinstance(configs, Mapping) else []


def check_command_line_keys(argv: Sequence[str] | None = None) -> None:
    """Refuse a ``python -m monai.bundle run`` command line that sets a key none of its config files defines (a
    misspelled ``--max_iteration 5`` would otherwise be ignored and the run would train 15,000 iterations).

    A key of your own goes into an override file added to ``--config_file`` (keys defined in any of the files are
    known). Nothing is checked outside a ``monai.bundle run`` command line (MONAI Label, the Python API).

    Raises:
        ValueError: naming the key, the nearest known key and how to add a key of one's own.
    """
    argv = list(sys.argv if argv is None else argv)
    if not _is_bundle_command(argv) or argv[1] != "run":
        return
    files = config_files_from_argv(argv)
    if not files:
        return
    unknown = unknown_override_keys(argv[1:], files, _tracking_configs(argv))
    if unknown:
        key, near = unknown[0]
        hint = f" (did you mean --{near}?)" if near else ""
        raise ValueError(
            f"--{key} is not a key of the bundle's configs{hint}: nothing would read it. To add a key of your own, "
            "put it in a JSON file and add that file to --config_file."
        )


def check_count(value: Any, name: str, minimum: int = 1, of: str = "") -> int:
    """Check ``value`` as a whole number >= ``minimum`` (digits given as text, as a command line may, count).

    Args:
        value: the setting as given.
        name: its key, for the message.
        minimum: the smallest allowed value.
        of: what it counts, for the message (e.g. ``" of labeled cases"``).

    Raises:
        ValueError: one sentence naming the key, the rule and the value (``--num_labeled abc`` arrives as a string).
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # a NumPy integer too
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number{of}, {minimum} or more, got {value!r}.")
    return value


def check_max_iterations(value: Any, name: str = "max_iterations") -> int:
    """Check ``value`` as the training's length: an integer >= 1 (:py:func:`check_count`)."""
    return check_count(value, name, 1, " of iterations")


def check_settings(
    patch_size: Sequence[int],
    strides: Mapping[str, Sequence[int] | None] | None = None,
    val_interval: int | None = None,
    sw_batch_size: int | None = None,
    max_iterations: Any = None,
    learning_rate: Any = None,
) -> None:
    """Check settings that would otherwise fail (or silently misbehave) after minutes of loading.

    Args:
        patch_size: the training crop and sliding-window size.
        strides: sliding-window strides by their key name (``{"val_stride": [...], "eval_stride": [...]}``): each
            must have one positive size per axis of ``patch_size``, none larger than the window (windows further
            apart than their size leave voxels unseen).
        val_interval: iterations between validations (>= 1).
        sw_batch_size: windows per forward pass (>= 1).
        max_iterations: the training's length, a whole number >= 1 (``--max_iterations abc`` arrives as a string).
        learning_rate: the optimizer's initial learning rate, a finite number > 0.

    Raises:
        ValueError: one sentence naming the key, its value and the rule.
    """
    if max_iterations is not None:
        check_max_iterations(max_iterations)
    if learning_rate is not None and (isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real)
                                      or not math.isfinite(learning_rate) or learning_rate <= 0):
        raise ValueError(f"learning_rate must be a number above 0, got {learning_rate!r}.")
    patch = [int(p) for p in patch_size]
    for name, stride in (strides or {}).items():
        if stride is None:
            continue
        stride = [int(s) for s in stride]
        if len(stride) != len(patch):
            raise ValueError(f"{name} {stride} needs one value per axis of patch_size {patch}.")
        if any(s < 1 for s in stride) or any(s > p for s, p in zip(stride, patch)):
            raise ValueError(
                f"{name} {stride} does not suit patch_size {patch}: every stride must be between 1 and the window "
                "size on its axis (larger strides leave voxels that no window sees)."
            )
    if val_interval is not None:
        check_count(val_interval, "val_interval", 1, " of iterations between validations")
    if sw_batch_size is not None:
        check_count(sw_batch_size, "sw_batch_size", 1, " of windows per forward pass")
