from __future__ import annotations

from .synthetic import synthetic_case, write_synthetic_la
