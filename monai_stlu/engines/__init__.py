from __future__ import annotations

from .methods import (
    AdversarialMethod,
    BCPMethod,
    CCTMethod,
    CPSMethod,
    DANMethod,
    DTCMethod,
    ICTMethod,
    MCFMethod,
    MCNetPlusMethod,
    MeanTeacherMethod,
    MutualReliableMethod,
    SASSNetMethod,
    SSNetMethod,
    SemiSupervisedMethod,
    STLUMethod,
    SupervisedMethod,
    TraCoCoMethod,
    UAMTMethod,
    URPCMethod,
)
from .semi_supervised_trainer import SemiSupervisedTrainer, set_pass
