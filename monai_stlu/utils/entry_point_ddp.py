# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""DistributedDataParallel that also serves a network's other entry points (``forward_sdf``, ``forward_all``,
``forward_embedding``) through DDP's own forward, so their gradients are reduced as ``forward``'s are."""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

__all__ = ["EntryPointDDP"]


class EntryPointDDP(nn.parallel.DistributedDataParallel):
    """``torch.nn.parallel.DistributedDataParallel`` whose wrapped network's ``forward_*`` methods are reachable on
    the wrapper: ``ddp_net.forward_sdf(x)`` runs ``net.forward_sdf(x)`` *inside* DDP's forward (DDP prepares its
    gradient reduction for that call, as for ``ddp_net(x)``), where the plain wrapper has no such attribute and a
    call on ``ddp_net.module`` would skip the reduction set-up. DTC and SASSNet (``forward_sdf``), CCT, URPC and
    MC-Net(+) (``forward_all``) and SS-Net (``forward_embedding``) train under ``torchrun`` through it. Other
    attributes of the network (SS-Net's projection heads and selectors, which it applies to the embedding) are the
    network's own: their parameters are DDP's too, so their gradients are averaged in the same backward.

    Its state dict has the network's own keys (no ``module.`` level): a checkpoint written under ``torchrun`` (CPS's
    network B, the adversarial methods' discriminator, the trained network) resumes in a single process and the
    reverse; a state dict with the ``module.`` level still loads.

    Args:
        module: the network.
        kwargs: ``DistributedDataParallel`` arguments (``device_ids``, ...).
    """

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self.register_state_dict_post_hook(_drop_module_level)
        self.register_load_state_dict_pre_hook(_add_module_level)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = super().__getattr__("module")
            if not hasattr(module, name):
                raise
            if name.startswith("forward_") and callable(getattr(module, name)):
                return functools.partial(self._run_entry_point, name)
            return getattr(module, name)  # a head or setting of the network (SS-Net's selectors), its own object

    def _run_entry_point(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped network's ``name`` through DDP's forward: for this one call the network's ``forward`` is
        ``name`` (restored before ``name`` runs, so that ``name`` may call ``self.forward`` itself)."""
        module = self.module
        entry = getattr(type(module), name)

        def call(*a: Any, **k: Any) -> Any:
            module.__dict__.pop("forward", None)
            return entry(module, *a, **k)

        module.forward = call
        try:
            return self(*args, **kwargs)
        finally:
            module.__dict__.pop("forward", None)


def _drop_module_level(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """``<prefix>module.<key>`` -> ``<prefix><key>`` (in place, order kept; ``_metadata`` too)."""
    level = prefix + "module."
    for key in [k for k in state_dict if k.startswith(level)]:
        state_dict[prefix + key[len(level):]] = state_dict.pop(key)
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        for key in [k for k in meta if k == level[:-1] or k.startswith(level)]:
            meta[prefix + key[len(level):] if key != level[:-1] else prefix[:-1]] = meta.pop(key)


def _add_module_level(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """``<prefix><key>`` -> ``<prefix>module.<key>`` for a state dict saved without the wrapper's level."""
    level = prefix + "module."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(level)]:
        state_dict[level + key[len(prefix):]] = state_dict.pop(key)
