# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The step learning-rate schedule of UA-MT and BCP, as a ``LambdaLR`` factor."""

from __future__ import annotations

__all__ = ["StepDecay"]


class StepDecay:
    """``factor(i) = gamma ** ((i - start) // step_size)`` for ``i >= start``, else 1: the learning rate is divided
    by 10 every 2,500 iterations in UA-MT (``base_lr * 0.1 ** (iter_num // 2500)``) and in BCP's self-training
    (``start`` = its pre-training iterations, during which the rate stays at its base).

    Use as ``torch.optim.lr_scheduler.LambdaLR(optimizer, StepDecay(2500))`` stepped once per iteration (an ignite
    ``LrScheduleHandler`` with ``epoch_level=False``); after ``i`` steps the rate is ``base_lr * factor(i)``. It is a
    picklable object, so the scheduler's state (and a resumed run) keeps it.

    Reference:
        Yu L. et al., MICCAI 2019 (UA-MT); Bai Y. et al., CVPR 2023 (BCP).

    Args:
        step_size: iterations between two divisions, not necessarily whole (the bundles scale a reference's 2,500 to
            the run's budget: ``max_iterations * 2500 / reference_iterations``, 416.67 at 1,000 of UA-MT's 6,000).
        gamma: the factor applied at each step.
        start: the iteration the schedule starts from, not necessarily whole (MCF divides one reference iteration
            later than UA-MT: ``start`` is one reference iteration scaled to the run, ``max_iterations / 6000``).
    """

    def __init__(self, step_size: float = 2500, gamma: float = 0.1, start: float = 0) -> None:
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}.")
        self.step_size, self.gamma, self.start = float(step_size), float(gamma), float(start)

    def __call__(self, iteration: int) -> float:
        if iteration < self.start:
            return 1.0
        return self.gamma ** int((iteration - self.start) // self.step_size)
