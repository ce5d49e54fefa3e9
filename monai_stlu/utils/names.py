# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The names a bundle's network and method settings may take, in a module that imports nothing: read by the networks
that build them and by the model record's schema (:py:mod:`monai_stlu.utils.model_record`), which checks a model file
without importing torch's network code."""

from __future__ import annotations

__all__ = ["BACKBONES", "DROPOUT_PLACEMENTS", "METHOD_NAMES", "MIX_STRATEGIES"]

#: the names the bundles' ``backbone`` key accepts (:py:func:`monai_stlu.networks.nets.build_backbone`)
BACKBONES = ("vnet", "dynunet", "segresnet", "unet")
#: STLU-Net's ``mix_strategy``: the paper's cosine-guided channel weights, or a fixed ``mix_lambda``
MIX_STRATEGIES = ("similarity", "fixed")
#: STLU-Net's ``dropout_placement``
DROPOUT_PLACEMENTS = ("cascade", "decoder")
#: the training methods (the classes of :py:mod:`monai_stlu.engines.methods` that a bundle's method file builds), as a
#: model file records them
METHOD_NAMES = (
    "BCPMethod", "CCTMethod", "CPSMethod", "DANMethod", "DTCMethod", "ICTMethod", "MCFMethod", "MCNetPlusMethod",
    "MeanTeacherMethod", "MutualReliableMethod", "SASSNetMethod", "SSNetMethod", "STLUMethod", "SupervisedMethod",
    "TraCoCoMethod", "UAMTMethod", "URPCMethod",
)
