# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Sets a method's weight (STLU's gamma, a consistency weight, a threshold) from a sigmoid ramp each iteration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.utils.ramps import ramp_value

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["RampUpHandler"]


class RampUpHandler:
    """At the start of every iteration, set ``target.<attribute>`` to
    ``start_value + (end_value - start_value) * exp(-5 (1 - min(t / ramp_length, 1))^2)``,
    with ``t = (iteration - 1) // iterations_per_step`` (0-based, as the reference code's ``iter_num // 150``).

    The value is a function of the iteration only, so a resumed run continues on the same curve.
    STLU-Net's default is ``gamma(t) = 1.0 * exp(-5 (1 - min(t / 40, 1))^2)`` with ``t = iteration // 150``.

    With ``target=None`` the handler ramps the trainer's own method (``engine.method``), and with
    ``attribute=None`` the attribute that method names in its ``ramp_attribute`` (STLU-Net's ``gamma``, a
    consistency weight, ...); a method without one (``ramp_attribute = None``, e.g. supervised-only) is left
    alone. This is how the bundles write one ramp handler for every method.

    Reference:
        Laine S., Aila T., "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017 (the sigmoid ramp).

    Args:
        target: the object holding the weight; None for the method of the engine it is attached to.
        attribute: the attribute name to set, e.g. ``"gamma"``; None for the target's ``ramp_attribute``.
        end_value: the value after the ramp (``gamma_max``).
        start_value: the value the ramp starts from.
        ramp_length: the ramp length ``T`` in steps.
        iterations_per_step: iterations per ramp step, not necessarily whole (the bundles scale the reference's 150
            to the run's budget: ``max_iterations * 150 / reference_iterations``).
        iteration_offset: added to the 0-based iteration before the division: 1 for a reference that computes its
            weight after incrementing its counter (SS-Net's ``iter_num // 150`` follows ``iter_num += 1``).

    Raises:
        TypeError: when ``attribute`` is not a string.
        AttributeError: when ``target`` has no such attribute.
        ValueError: when ``iterations_per_step`` < 1 or ``ramp_length`` < 0.
    """

    def __init__(
        self,
        target: Any = None,
        attribute: str | None = None,
        end_value: float = 1.0,
        start_value: float = 0.0,
        ramp_length: float = 40,
        iterations_per_step: float = 150,
        iteration_offset: int = 0,
    ) -> None:
        if attribute is not None and not isinstance(attribute, str):
            raise TypeError(f"attribute must be a str or None, got {type(attribute).__name__}.")
        if target is not None:
            self._check(target, attribute)
        if iterations_per_step < 1 or ramp_length < 0:
            raise ValueError("iterations_per_step must be >= 1 and ramp_length >= 0.")
        self.target = target
        self.attribute: str | None = attribute
        self.end_value = float(end_value)
        self.start_value = float(start_value)
        self.ramp_length = ramp_length
        self.iterations_per_step = float(iterations_per_step)
        self.iteration_offset = int(iteration_offset)

    @staticmethod
    def _check(target: Any, attribute: str | None) -> None:
        name = attribute if attribute is not None else getattr(target, "ramp_attribute", None)
        if name is not None and not hasattr(target, name):
            raise AttributeError(f"{type(target).__name__} has no attribute {name!r} to ramp.")

    def attach(self, engine: Engine) -> None:
        """Resolve the target (``engine.method`` when None) and ramp its attribute at every iteration start."""
        if self.target is None:
            if not hasattr(engine, "method"):
                raise AttributeError("RampUpHandler(target=None) ramps engine.method, and this engine has none.")
            self.target = engine.method
            self._check(self.target, self.attribute)
        if self.attribute is None:
            self.attribute = getattr(self.target, "ramp_attribute", None)
        if self.attribute is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def value(self, iteration: int) -> float:
        """The value for the 0-based ``iteration``."""
        return ramp_value(iteration + self.iteration_offset, self.end_value, self.start_value, self.ramp_length, self.iterations_per_step)

    def __call__(self, engine: Engine) -> None:
        if self.attribute is not None:
            setattr(self.target, self.attribute, self.value(engine.state.iteration - 1))
