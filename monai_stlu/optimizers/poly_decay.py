# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The polynomial learning-rate schedule of SSL4MIS (Mean Teacher, CPS), as a ``LambdaLR`` factor."""

from __future__ import annotations

__all__ = ["PolyDecay"]


class PolyDecay:
    """``factor(i) = (1 - max(i - start - lag, 0) / (max_iterations - start)) ** power`` for the 0-based iteration
    ``i`` (clipped at 0; 1 before ``start``): SSL4MIS sets ``lr = base_lr * (1 - iter_num / max_iterations) ** 0.9``
    *after* iteration ``iter_num``, so iterations 0 and 1 run at ``base_lr`` and iteration ``i >= 1`` at
    ``(1 - (i - 1) / max_iterations) ** 0.9``.
    Use as ``torch.optim.lr_scheduler.LambdaLR(optimizer, PolyDecay(15000))`` stepped once per iteration.

    Reference:
        Luo X., SSL4MIS (HiLab-git/SSL4MIS), ``train_mean_teacher_3D.py``, ``train_cross_pseudo_supervision_3D.py``.

    Args:
        max_iterations: the iteration at which the rate reaches 0.
        power: the exponent.
        start: the iteration the decay starts from.
        lag: how many iterations the count the rate is computed from trails the iteration it trains: 1 for SSL4MIS;
            TraCoCo computes its rate before each step from the count after its increment, one ahead (``lag`` -1
            reference iteration, ``-max_iterations / 9000`` in a run of another length); not necessarily whole.
    """

    def __init__(self, max_iterations: int, power: float = 0.9, start: int = 0, lag: float = 1.0) -> None:
        if max_iterations <= start:
            raise ValueError(f"max_iterations ({max_iterations}) must exceed start ({start}).")
        self.max_iterations, self.power, self.start = int(max_iterations), float(power), int(start)
        self.lag = float(lag)

    def __call__(self, iteration: int) -> float:
        if iteration < self.start:
            return 1.0
        done = max(iteration - self.start - self.lag, 0) / (self.max_iterations - self.start)
        return max(1.0 - done, 0.0) ** self.power
