# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""One wiring for every bundle: the Pancreas-CT and BraTS-2019 bundles are generated from the LA bundle's configs."""

from __future__ import annotations

import glob
import json
import os
from typing import Any

__all__ = ["SHARED_CONFIGS", "DELTA_FILE", "generate_bundle", "generate_bundles", "default_bundles_dir"]

# the configs every bundle shares with the LA bundle (methods/*.json are copied as they are)
SHARED_CONFIGS = ("train.json", "evaluate.json", "inference.json", "quick.json", "multi_gpu_train.json", "multi_gpu_evaluate.json")
SHARED_COPIES = ("logging.conf", "methods/*.json")
# what a generated bundle changes, per config file: {"train.json": {"id#path": value, ...}, ...}
DELTA_FILE = os.path.join("configs", "bundle_delta.json")
SOURCE_BUNDLE = "stlu_la"


def default_bundles_dir() -> str:
    """``bundles/`` of the source checkout this package was imported from."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bundles")


def _set(config: dict, path: str, value: Any, source: str) -> None:
    """Set ``config[a][b]...`` for the MONAI id ``a#b#...`` (list items by index); the parent must exist."""
    keys = path.split("#")
    node: Any = config
    for k in keys[:-1]:
        try:
            node = node[int(k)] if isinstance(node, list) else node[k]
        except (KeyError, IndexError, ValueError) as e:
            raise KeyError(f"{source}: '{path}' names no item of the source config (at '{k}').") from e
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _dump(content: Any) -> str:
    return json.dumps(content, indent=4, ensure_ascii=False) + "\n"


def generate_bundle(name: str, bundles_dir: str | None = None, check: bool = False) -> list[str]:
    """Write (or with ``check`` compare) the shared configs of bundle ``name``: the LA bundle's, with the items of
    ``bundles/<name>/configs/bundle_delta.json`` replaced.

    Returns:
        the files that were written (or, with ``check``, that differ from what would be written).

    Raises:
        FileNotFoundError: no delta file for ``name``.
        KeyError: a delta names an item the LA config does not have (a typo would otherwise add a dead key).
    """
    bundles_dir = bundles_dir or default_bundles_dir()
    source = os.path.join(bundles_dir, SOURCE_BUNDLE, "configs")
    target = os.path.join(bundles_dir, name)
    delta_path = os.path.join(target, DELTA_FILE)
    if not os.path.isfile(delta_path):
        raise FileNotFoundError(f"{delta_path}: no bundle delta; a generated bundle needs one.")
    with open(delta_path) as f:
        delta = json.load(f)
    unknown = [k for k in delta if not k.startswith("_") and k not in SHARED_CONFIGS]
    if unknown:
        raise KeyError(f"{delta_path}: {unknown} are not shared configs ({', '.join(SHARED_CONFIGS)}).")
    outputs: dict[str, str] = {}
    for config in SHARED_CONFIGS:
        with open(os.path.join(source, config)) as f:
            content = json.load(f)
        for path, value in delta.get(config, {}).items():
            _set(content, path, value, f"{delta_path} [{config}]")
        outputs[os.path.join("configs", config)] = _dump(content)
    for pattern in SHARED_COPIES:
        for path in sorted(glob.glob(os.path.join(source, pattern))):
            with open(path) as f:
                outputs[os.path.join("configs", os.path.relpath(path, source))] = f.read()
    changed = []
    for rel, text in outputs.items():
        path = os.path.join(target, rel)
        current = open(path).read() if os.path.isfile(path) else None
        if current == text:
            continue
        changed.append(path)
        if not check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".partial"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
    return changed


def generate_bundles(bundles_dir: str | None = None, check: bool = False) -> list[str]:
    """:py:func:`generate_bundle` for every bundle folder with a ``configs/bundle_delta.json``."""
    bundles_dir = bundles_dir or default_bundles_dir()
    changed: list[str] = []
    for delta in sorted(glob.glob(os.path.join(bundles_dir, "*", DELTA_FILE))):
        changed += generate_bundle(os.path.basename(os.path.dirname(os.path.dirname(delta))), bundles_dir, check)
    return changed
