# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Ramp-up schedules shared by the semi-supervised methods."""

from __future__ import annotations

import math

__all__ = ["sigmoid_rampup", "ramp_value"]


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """The sigmoid-shaped ramp ``exp(-5 (1 - min(current / length, 1))^2)`` of Laine & Aila (ICLR 2017).

    Args:
        current: the current step (clipped to ``[0, rampup_length]``).
        rampup_length: steps until the ramp reaches 1; ``0`` means no ramp (always 1).

    Returns:
        a value in ``(0, 1]``.
    """
    if rampup_length <= 0:
        return 1.0
    phase = 1.0 - min(max(float(current), 0.0), float(rampup_length)) / float(rampup_length)
    return float(math.exp(-5.0 * phase * phase))


def ramp_value(
    iteration: int, end_value: float, start_value: float = 0.0, ramp_length: float = 40,
    iterations_per_step: float = 150,
) -> float:
    """Value of a sigmoid ramp from ``start_value`` to ``end_value`` at a 0-based training iteration.

    The ramp's step is ``t = iteration // iterations_per_step`` (the community code's ``iter_num // 150``),
    so with the defaults the value reaches ``end_value`` after 40 * 150 = 6,000 iterations. A fractional step (a
    reference's 150 iterations scaled to a shorter run, say 2.5) counts ``floor(iteration / 2.5)``, so the ramp
    still ends at the same fraction of the run.

    Args:
        iteration: 0-based iteration count (ignite's ``engine.state.iteration - 1`` during an iteration).
        end_value: the value after the ramp (e.g. ``gamma_max``).
        start_value: the value the ramp starts from; the returned value at ``t = 0`` is
            ``start + (end - start) * exp(-5)``, as in the reference code.
        ramp_length: ramp length ``T`` in steps.
        iterations_per_step: iterations per ramp step (>= 1, not necessarily whole).

    Returns:
        ``start_value + (end_value - start_value) * sigmoid_rampup(t, T)``.
    """
    if iterations_per_step < 1:
        raise ValueError(f"iterations_per_step must be >= 1, got {iterations_per_step}.")
    t = int(max(int(iteration), 0) // float(iterations_per_step))
    return float(start_value + (end_value - start_value) * sigmoid_rampup(t, ramp_length))
