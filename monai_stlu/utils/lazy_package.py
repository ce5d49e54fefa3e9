# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A package's names loaded from its modules on first use (PEP 562), so that a command that needs few of them
(``monai_stlu --help``, ``monai_stlu synth``) does not import torch and MONAI with the rest."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]], namespace: dict[str, Any]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``, which re-exports each module's names.

    Args:
        package: the package's ``__name__``.
        exports: module name (relative to ``package``) -> the names it exports.
        namespace: the package's ``globals()``; a name, once loaded, is kept there.

    Raises:
        ValueError: a name is also the name of one of the package's modules: once anything imports that module,
            Python binds the module to the package under that name, and the name would never reach ``__getattr__``.

    Example::

        __all__, __getattr__, __dir__ = lazy_exports(__name__, {"h5_reader": ("H5Reader",)}, globals())
    """
    where = {name: module for module, names in exports.items() for name in names}
    modules = set(exports) | {m.name for m in pkgutil.iter_modules(namespace.get("__path__", []))}
    clash = sorted(set(where) & modules)
    if clash:
        raise ValueError(f"{package}: {clash} name both a module and an exported name; rename the module.")

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return sorted(where), __getattr__, __dir__
