"""max_train_seconds: training stops after its wall-clock budget as a finished run (final events fire), every rank of
a torchrun group after the same iteration."""

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


def _rank_run(rank: int, world: int, port: int, folder: str) -> None:
    """One rank of a two-process Gloo group: each iteration all-reduces (as DDP's backward does); rank 0's budget
    runs out after a few iterations, rank 1's never."""
    import datetime
    import os

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        def step(engine, batch):
            dist.all_reduce(torch.ones(1))
            time.sleep(0.02)

        engine = Engine(step)
        TimeLimitHandler(max_seconds=0.1 if rank == 0 else 1000.0).attach(engine)
        engine.run(range(200), max_epochs=1)
        with open(os.path.join(folder, f"rank{rank}.txt"), "w") as f:
            f.write(str(engine.state.iteration))
    finally:
        dist.destroy_process_group()


@pytest.mark.long  # two processes: the long suite, with the other multi-process tests
def test_under_torchrun_every_rank_stops_after_the_same_iteration(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_run, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    stops = [int((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)]
    assert stops[0] == stops[1] and 2 <= stops[0] < 200  # rank 1 stopped with rank 0, not at its own budget


def _counting_run(folder, stop_at: int | None, seen: list[int]):
    """A trainer whose one weight counts the iterations it trained (epochs of 10, 3 epochs), with the bundles'
    periodic saver (every epoch, 2 kept) and resumer; ``stop_at`` terminates it after that iteration."""
    import torch

    from monai_stlu.handlers import AtomicCheckpointSaver, ResumeCheckpointLoader

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)

    def step(engine, batch):
        seen.append(engine.state.iteration)
        with torch.no_grad():
            net.weight += 1.0

    engine = Engine(step)
    save = {"network": net, "trainer": engine}
    ResumeCheckpointLoader(str(folder), save).attach(engine)
    AtomicCheckpointSaver(str(folder), save, save_interval=1, n_saved=2).attach(engine)
    if stop_at is not None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    engine.run(range(10), max_epochs=3)
    return engine, net


@pytest.mark.parametrize("stop_at", [7, 10, 13])  # mid-epoch, at an epoch's last iteration, in the next epoch
def test_a_terminated_run_resumes_at_the_iteration_it_stopped(tmp_path, stop_at):
    import os

    import torch

    from monai_stlu.handlers import latest_checkpoint

    first: list[int] = []
    engine, net = _counting_run(tmp_path, stop_at, first)
    assert first == list(range(1, stop_at + 1)) and engine.state.iteration == stop_at
    newest = latest_checkpoint(str(tmp_path))  # the file the resumer picks
    saved = torch.load(newest, weights_only=True)
    assert saved["trainer"]["iteration"] == stop_at and saved["network"]["weight"].item() == stop_at
    assert os.path.basename(newest) == f"checkpoint_epoch={(stop_at + 9) // 10}.pt"  # named for its epoch

    second: list[int] = []
    engine, net = _counting_run(tmp_path, None, second)
    assert second == list(range(stop_at + 1, 31))  # nothing trained twice, nothing skipped
    assert engine.state.iteration == 30 and net.weight.item() == 30
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    assert torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["trainer"]["iteration"] == 30


def test_the_protocol_reads_a_stop_from_the_newest_checkpoint(tmp_path):
    """A comparison run (``monai_stlu compare``, ``quality.py``) decides whether a training ended early (left to resume, not evaluated) from the trainer state
    of the newest checkpoint, against its planned ``max_epochs x epoch_length``: not from a log line."""
    from monai_stlu.bundle.compare import stopped_at

    assert stopped_at(str(tmp_path)) is None  # no checkpoint: nothing to resume
    _counting_run(tmp_path, 13, [])
    assert stopped_at(str(tmp_path)) == (13, 30)
    _counting_run(tmp_path, None, [])  # resumed to the end
    assert stopped_at(str(tmp_path)) is None
    stopped_at_end = tmp_path / "at_end"
    _counting_run(stopped_at_end, 30, [])  # terminated at the last planned iteration: finished
    assert stopped_at(str(stopped_at_end)) is None
