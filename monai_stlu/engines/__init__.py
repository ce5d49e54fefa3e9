from __future__ import annotations

from .methods import (
    BCPMethod,
    CPSMethod,
    MCNetPlusMethod,
    MeanTeacherMethod,
    SemiSupervisedMethod,
    STLUMethod,
    SupervisedMethod,
    UAMTMethod,
)
from .semi_supervised_trainer import SemiSupervisedTrainer
