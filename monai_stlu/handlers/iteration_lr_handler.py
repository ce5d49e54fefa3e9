# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Set the learning rate of every parameter group from the iteration: ``lr = initial_lr * factor(iteration)``."""

from __future__ import annotations

from collections.abc import Callable

from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["IterationLrHandler"]


class IterationLrHandler:
    """Before every iteration set each parameter group's ``lr`` to ``initial_lr * factor(i)``, ``i`` the number of
    completed iterations, on the engine's optimizer.

    Unlike a ``torch.optim.lr_scheduler`` built with the optimizer, it also schedules parameter groups a method adds
    later (CPS's second network), and it has no state of its own: the rate is a function of the iteration, so a
    resumed run continues on the same schedule. ``initial_lr`` is each group's rate when first seen (kept in the
    group, so it is saved with the optimizer's state).

    Args:
        factor: ``iteration -> factor``, e.g. :py:class:`monai_stlu.optimizers.StepDecay` (UA-MT, BCP),
            :py:class:`monai_stlu.optimizers.PolyDecay` (SSL4MIS), or None for a constant rate.

    Example (bundle config)::

        {"_target_": "monai_stlu.handlers.IterationLrHandler",
         "factor": {"_target_": "monai_stlu.optimizers.StepDecay", "step_size": 2500}}
    """

    def __init__(self, factor: Callable[[int], float] | None = None) -> None:
        self.factor = factor

    def attach(self, engine: Engine) -> None:
        if self.factor is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        scale = float(self.factor(engine.state.iteration - 1)) if self.factor is not None else 1.0
        for group in engine.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * scale
