"""max_train_seconds: training stops after its wall-clock budget as a finished run (final events fire)."""

from __future__ import annotations

import time

import pytest
from ignite.engine import Engine, Events

from monai_stlu.handlers import TimeLimitHandler


def test_training_stops_after_its_budget_and_completes():
    engine = Engine(lambda e, b: time.sleep(0.05))
    TimeLimitHandler(max_seconds=0.12).attach(engine)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    engine.run(range(100), max_epochs=1)
    assert 2 <= engine.state.iteration <= 5 and completed == [engine.state.iteration]


def test_no_limit_runs_everything_and_bad_limits_are_refused():
    engine = Engine(lambda e, b: None)
    TimeLimitHandler(None).attach(engine)
    engine.run(range(7), max_epochs=2)
    assert engine.state.iteration == 14
    with pytest.raises(ValueError, match="max_seconds"):
        TimeLimitHandler(0)
