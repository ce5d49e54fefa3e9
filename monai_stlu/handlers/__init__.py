from __future__ import annotations

from .ramp_up_handler import RampUpHandler
