from __future__ import annotations

from .methods import (
    AdversarialMethod,
    BCPMethod,
    CPSMethod,
    DANMethod,
    DTCMethod,
    MCNetPlusMethod,
    MeanTeacherMethod,
    SASSNetMethod,
    SSNetMethod,
    SemiSupervisedMethod,
    STLUMethod,
    SupervisedMethod,
    UAMTMethod,
)
from .semi_supervised_trainer import SemiSupervisedTrainer
