from __future__ import annotations

from .poly_decay import PolyDecay
from .step_decay import StepDecay
