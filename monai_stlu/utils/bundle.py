# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Locate the bundle whose configs are being run, independently of the current directory."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["argv_value", "bundle_root", "config_files_from_argv", "source_commit"]


def _root_from_config_path(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    # configs/methods/x.json -> configs -> bundle
    while os.path.basename(folder) in ("methods",):
        folder = os.path.dirname(folder)
    return os.path.dirname(folder) if os.path.basename(folder) == "configs" else folder


def argv_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` on a command line (``--flag value`` or ``--flag=value``; the first), or None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def config_files_from_argv(argv: list[str]) -> list[str]:
    """The config files named by the first ``--config_file`` (else ``--meta_file``) argument, a path or a list."""
    for flag in ("--config_file", "--meta_file"):
        value = argv_value(argv, flag)
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

    Taken from the first ``--config_file`` (or ``--meta_file``) argument of the command line, so
    ``python -m monai.bundle run ...``, ``ckpt_export`` and ``verify_net_in_out`` find the bundle from any working
    directory; without one (the Python API), the current directory. Configs use it as
    ``"bundle_root": "$monai_stlu.utils.bundle_root()"``; whoever passes ``bundle_root`` explicitly
    (``--bundle_root``, MONAI Label, ``ConfigWorkflow(..., bundle_root=...)``) overrides it.
    """
    files = config_files_from_argv(sys.argv)
    return _root_from_config_path(files[0]) if files else os.getcwd()


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """The git commit of the monai_stlu source being run (``<hash>`` or ``<hash>-dirty``), or ``"unknown"`` for an
    installed wheel: recorded with tracked runs so that a result can be traced to its code."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
