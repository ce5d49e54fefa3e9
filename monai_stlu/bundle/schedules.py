# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Where each method's schedule points fall in a run: the consistency ramp's end, the learning-rate steps, BCP's
pre-training. A bundle writes every point as the fraction of the run that it is of the method's own reference budget
(``max_iterations * point / reference_iterations``; the method file's ``reference`` and ``reference_iterations``), so
that a 1,000-iteration run ramps and decays as its reference does over its own 6,000, 15,000 or 30,000 iterations.
:py:func:`schedule_table` is the bundle README's table of them."""

from __future__ import annotations

import importlib
import math
import os
from typing import Any

__all__ = ["schedule_points", "schedule_table"]


def _parser(configs: str, method: str, max_iterations: int) -> Any:
    from monai.bundle import ConfigParser

    files = [os.path.join(configs, "train.json")]
    if os.path.isfile(os.path.join(configs, "methods", f"{method}.json")):  # stlu: train.json alone builds it too
        files.append(os.path.join(configs, "methods", f"{method}.json"))
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"max_iterations": int(max_iterations), "bundle_root": os.path.dirname(configs)})
    return parser


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 else f"{x:,.1f}"


def schedule_points(method: str, max_iterations: int, configs: str | None = None) -> dict[str, Any]:
    """The schedule of ``method`` in a run of ``max_iterations`` (BCP: of self-training, after its pre-training).

    Args:
        method: a method file's name (``mean_teacher``) or ``stlu``.
        max_iterations: the run's budget.
        configs: a bundle's ``configs`` folder (default: the LA bundle's).

    Returns:
        ``reference`` (the reference code), ``matched_supervised`` (the supervised-only method file of its
        recipe), ``reference_iterations``, ``ramp_end`` (the iterations done when the
        ramped weight first stands at its end value, or None for a method without a ramp), ``lr`` (a description:
        constant, the iterations of each division by 10, or poly decay to the end) and ``lr_steps`` (those
        iterations), ``pretrain`` (BCP's pre-training iterations, else None).
    """
    from monai_stlu.bundle.generator import default_bundles_dir
    from monai_stlu.optimizers import PolyDecay, StepDecay

    configs = configs or os.path.join(default_bundles_dir(), "stlu_la", "configs")
    parser = _parser(configs, method, max_iterations)
    target = parser["method"]["_target_"]
    module, name = target.rsplit(".", 1)
    ramped = getattr(getattr(importlib.import_module(module), name), "ramp_attribute", None) is not None
    step = float(parser.get_parsed_content("ramp_iterations"))
    length = float(parser.get_parsed_content("ramp_length"))
    offset = int(parser.get_parsed_content("ramp_offset"))
    # the 0-based iteration i sees t = (i + offset) // step: the end value from i = ceil(length * step) - offset
    ramp_end = max(math.ceil(length * step - 1e-9) - offset, 0) if ramped else None
    total = int(parser.get_parsed_content("total_iterations"))
    pretrain = None
    if "bcp_pretrain_iterations" in parser:
        pretrain = int(parser.get_parsed_content("bcp_pretrain_iterations"))
    factor = parser.get_parsed_content("lr_factor", instantiate=True)
    steps: list[float] = []
    if factor is None:
        lr = "constant"
    elif isinstance(factor, StepDecay):
        k = 1
        while factor.start + k * factor.step_size < total:  # a division at the last iteration changes nothing
            steps.append(factor.start + k * factor.step_size)
            k += 1
        lr = "÷10 at " + ", ".join(_number(s) for s in steps) if steps else "constant (no step within the run)"
    elif isinstance(factor, PolyDecay):
        lr = f"poly (power {factor.power:g}) to {factor.max_iterations:,}"
    else:
        lr = type(factor).__name__
    return {"reference": str(parser["reference"]), "matched_supervised": str(parser["matched_supervised"]),
            "reference_iterations": int(parser["reference_iterations"]),
            "ramp_end": ramp_end, "lr": lr, "lr_steps": steps, "pretrain": pretrain}


def _cell(points: dict[str, Any]) -> str:
    parts = [] if points["pretrain"] is None else [f"pre-training {points['pretrain']:,}"]
    parts.append("no ramp" if points["ramp_end"] is None else f"ramp complete at {points['ramp_end']:,}")
    parts.append(f"LR {points['lr']}")
    return "; ".join(parts)


def schedule_table(budgets: tuple[int, ...] = (1000, 3000, 15000), configs: str | None = None) -> str:
    """The Markdown table of every method's schedule at its reference's own budget and at ``budgets``."""
    from monai_stlu.bundle.generator import default_bundles_dir

    configs = configs or os.path.join(default_bundles_dir(), "stlu_la", "configs")
    methods = sorted(f[:-5] for f in os.listdir(os.path.join(configs, "methods")) if f.endswith(".json"))
    head = ["method", "reference", "supervised run of its recipe", "its budget", "at its budget"]
    head += [f"at {b:,}" for b in budgets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        own = schedule_points(method, 1, configs)["reference_iterations"]
        cells = [schedule_points(method, b, configs) for b in (own, *budgets)]
        row = [method, cells[0]["reference"], f"`{cells[0]['matched_supervised']}`", f"{own:,}"]
        row += [_cell(c) for c in cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
