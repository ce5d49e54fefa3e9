# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Locate the bundle whose configs are being run, independently of the current directory."""

from __future__ import annotations

import ast
import inspect
import os
import sys

__all__ = ["bundle_root"]


def _root_from_config_path(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    # configs/methods/x.json -> configs -> bundle
    while os.path.basename(folder) in ("methods",):
        folder = os.path.dirname(folder)
    return os.path.dirname(folder) if os.path.basename(folder) == "configs" else folder


def _config_files_from_argv(argv: list[str]) -> list[str]:
    for flag in ("--config_file", "--meta_file"):
        for i, arg in enumerate(argv):
            value = None
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            if value:
                try:
                    parsed = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    parsed = value
                files = [parsed] if isinstance(parsed, str) else list(parsed)
                if files:
                    return [str(f) for f in files]
    return []


def bundle_root() -> str:
    """The absolute root folder of the bundle being run (the parent of its ``configs`` folder).

    Looked up, in order, from the ``ConfigWorkflow`` that is evaluating the config (``monai.bundle run``), then from
    the ``--config_file``/``--meta_file`` command-line argument (``ckpt_export``, ``verify_net_in_out``, ...), and
    only then the current directory. Configs use it as ``"bundle_root": "$monai_stlu.utils.bundle_root()"``; tools
    that pass ``bundle_root`` explicitly (MONAI Label, ``--bundle_root``) override it.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            # read the instance dict: workflows answer unknown attributes through a raising __getattr__
            root = vars(owner).get("config_root_path") if hasattr(owner, "__dict__") else None
            if root is not None and type(owner).__name__ == "ConfigWorkflow":
                return _root_from_config_path(os.path.join(str(root), "x.json"))
            frame = frame.f_back
    finally:
        del frame
    files = _config_files_from_argv(sys.argv)
    if files:
        return _root_from_config_path(files[0])
    return os.getcwd()
