# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""monai_stlu: MONAI-native semi-supervised 3D medical image segmentation (STLU-Net and its baselines)."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# sub-packages load on first use (``monai_stlu.networks.nets.STLUNet`` in a bundle config imports what it names), so
# the command line answers --help without importing torch and MONAI
_SUBPACKAGES = ("bundle", "data", "engines", "handlers", "inferers", "losses", "metrics", "networks", "optimizers", "utils")
__all__ = list(_SUBPACKAGES)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES))


# in a command a user typed (python -m monai.bundle ..., monai_stlu ...), a failure ends with the project's sentence,
# and a command that needs a missing optional package (onnx_export, --tracking mlflow) stops before any work
from .utils.errors import install_error_hook  # noqa: E402
from .utils.settings_check import check_optional_packages  # noqa: E402

if install_error_hook():
    check_optional_packages()
