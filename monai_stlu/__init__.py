# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""monai_stlu: MONAI-native semi-supervised 3D medical image segmentation (STLU-Net and its baselines)."""

from __future__ import annotations

__version__ = "0.1.0"

from . import data, engines, handlers, inferers, losses, metrics, networks, optimizers, utils

# in a command a user typed (python -m monai.bundle ..., monai_stlu ...), a failure ends with the project's sentence,
# and a command that needs a missing optional package (onnx_export, --tracking mlflow) stops before any work
if utils.install_error_hook():
    utils.check_optional_packages()
