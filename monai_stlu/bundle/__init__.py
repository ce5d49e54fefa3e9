from __future__ import annotations

from .generator import DELTA_FILE, SHARED_CONFIGS, default_bundles_dir, generate_bundle, generate_bundles
from .release import MONAI_LABEL_VERSION, release_bundle, runtime_requirements, zoo_requirements
