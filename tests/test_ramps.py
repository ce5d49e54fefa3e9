from __future__ import annotations

import math

import pytest
from ignite.engine import Engine

from monai_stlu.engines import STLUMethod
from monai_stlu.handlers import RampUpHandler
from monai_stlu.utils import ramp_value, sigmoid_rampup


@pytest.mark.parametrize("it", [0, 1, 149, 150, 2999, 3000, 5999, 6000, 15000])
def test_gamma_schedule(it):
    t = it // 150
    want = math.exp(-5.0 * (1.0 - min(t / 40.0, 1.0)) ** 2)
    assert ramp_value(it, end_value=1.0) == pytest.approx(want, rel=1e-12)


def test_ramp_endpoints():
    assert sigmoid_rampup(0, 40) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(40, 40) == 1.0
    assert sigmoid_rampup(400, 40) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0
    assert ramp_value(0, 1.0, start_value=0.5, ramp_length=10, iterations_per_step=1) == pytest.approx(
        0.5 + 0.5 * math.exp(-5)
    )


def test_handler_sets_gamma_on_a_running_engine():
    method = STLUMethod()
    seen = []
    engine = Engine(lambda e, b: seen.append((e.state.iteration, method.gamma)))
    RampUpHandler(method, "gamma", end_value=2.0, ramp_length=4, iterations_per_step=3).attach(engine)
    engine.run(range(20), max_epochs=1)
    for iteration, gamma in seen:
        t = (iteration - 1) // 3
        assert gamma == pytest.approx(2.0 * math.exp(-5 * (1 - min(t / 4, 1)) ** 2))
    assert seen[-1][1] == 2.0
    assert seen[0][1] == pytest.approx(2.0 * math.exp(-5))


def test_handler_argument_errors():
    with pytest.raises(AttributeError, match="no attribute"):
        RampUpHandler(STLUMethod(), "nope")
    with pytest.raises(TypeError):
        RampUpHandler(STLUMethod(), 3)
    with pytest.raises(ValueError):
        RampUpHandler(STLUMethod(), "gamma", iterations_per_step=0)
