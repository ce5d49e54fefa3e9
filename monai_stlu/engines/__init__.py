from __future__ import annotations

from .methods import SemiSupervisedMethod, STLUMethod
from .semi_supervised_trainer import SemiSupervisedTrainer
