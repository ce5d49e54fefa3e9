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

    Args:
        module: the network.
        kwargs: ``DistributedDataParallel`` arguments (``device_ids``, ...).
    """

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
