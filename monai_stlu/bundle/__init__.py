from __future__ import annotations

from .generator import DELTA_FILE, SHARED_CONFIGS, default_bundles_dir, generate_bundle, generate_bundles
