from __future__ import annotations

from .base import SemiSupervisedMethod
from .stlu import STLUMethod
