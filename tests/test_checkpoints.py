"""Atomic checkpoint files, the best-model record across a resume, and falling back past an unreadable checkpoint."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from ignite.engine import Engine, Events

from monai_stlu.handlers import AtomicCheckpointSaver, ResumeCheckpointLoader, checkpoints_newest_first


def _evaluator(scores: list[float]) -> Engine:
    """An engine whose epoch e reports the metric scores[e - 1], like an evaluator's key metric."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _score(e):
        e.state.metrics["dice"] = scores[e.state.epoch - 1]

    engine.state.key_metric_name = "dice"
    return engine


def _best_saver(folder, net) -> AtomicCheckpointSaver:
    return AtomicCheckpointSaver(str(folder), {"model": net}, save_key_metric=True, key_metric_name="dice",
                                 key_metric_filename="model.pt", epoch_level=True)


def test_best_model_record_survives_a_resume(tmp_path):
    net = torch.nn.Linear(2, 1)
    first = _evaluator([0.5, 0.8])
    saver = _best_saver(tmp_path, net)
    saver.attach(first)
    with torch.no_grad():
        net.weight.fill_(1.0)
    first.run([0], max_epochs=2)  # model.pt holds the weights of the 0.8 epoch
    record = saver.state_dict()
    assert [score for score, _ in record["key_metric_saved"]] == [0.8]
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temporary file left behind

    # the resumed run: a new saver and new engine, the record restored; a worse score must not replace model.pt
    restored = _best_saver(tmp_path, net)
    restored.load_state_dict(record)
    with torch.no_grad():
        net.weight.fill_(-1.0)
    second = _evaluator([0.6, 0.9])
    restored.attach(second)
    second.run([0], max_epochs=1)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(1.0).all()
    second.run([0], max_epochs=2)  # 0.9 beats 0.8
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(-1.0).all()

    # without the record (plain behaviour) the first validation after the resume overwrites the best model
    plain = _best_saver(tmp_path / "plain", net)
    plain.attach(_evaluator([0.1]))
    assert plain.state_dict() == {"key_metric_saved": []}


def _trainer_with(folder, net, n_saved=2) -> Engine:
    trainer = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(folder), {"network": net, "trainer": trainer}, save_interval=1, n_saved=n_saved).attach(trainer)
    return trainer


def test_resume_skips_an_unreadable_newest_checkpoint(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    _trainer_with(tmp_path, net).run([0, 1], max_epochs=3)
    files = checkpoints_newest_first(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["checkpoint_epoch=3.pt", "checkpoint_epoch=2.pt"]
    with open(files[0], "r+b") as f:  # a checkpoint cut short
        f.truncate(100)
    resumed = Engine(lambda e, b: None)
    ResumeCheckpointLoader(str(tmp_path), {"network": net, "trainer": resumed}).attach(resumed)
    with caplog.at_level(logging.WARNING):
        resumed.run([0, 1], max_epochs=3)
    assert "cannot read checkpoint" in caplog.text and "epoch=3" in caplog.text
    # resumed from epoch 2 (iteration 4), so only the third epoch ran: 2 more iterations
    assert resumed.state.iteration == 6 and resumed.state.epoch == 3


def test_resume_with_no_readable_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"not a checkpoint")
    engine = Engine(lambda e, b: None)
    ResumeCheckpointLoader(str(tmp_path), {"trainer": engine}).attach(engine)
    with pytest.raises(RuntimeError, match="(?s)none of the checkpoints.*checkpoint_epoch=1.pt"):
        engine.run([0], max_epochs=1)
