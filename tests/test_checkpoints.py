"""Atomic checkpoint files, the best-model record across a resume, and falling back past an unreadable checkpoint."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

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


class _Scripted(Metric):
    """A key metric reporting the next of a list of scores at each epoch (the validation Dice of a scripted run)."""

    def __init__(self, scores):
        self.scores = list(scores)
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return self.scores.pop(0)


def _training_run(folder, train_scores, val_scores, max_epochs):
    """The bundle's wiring in small: a trainer with a periodic checkpoint (network, optimizer, trainer, best-model
    record) and its resumer, validating every epoch with an evaluator whose best-model saver writes model.pt."""
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.handlers import ValidationHandler

    from conftest import sphere_cases
    from monai_stlu.engines import SemiSupervisedTrainer, SupervisedMethod

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    data = DataLoader(Dataset(sphere_cases(2, seed=0, size=8)), batch_size=2)
    best = _best_saver(folder, net)
    best.epoch_level = True
    evaluator = SupervisedEvaluator("cpu", data, net, key_val_metric={"dice": _Scripted(val_scores)}, val_handlers=[best])
    trainer = SemiSupervisedTrainer("cpu", max_epochs, data, net, optimizer, SupervisedMethod(), epoch_length=1,
                                    key_train_metric={"train_dice": _Scripted(train_scores)},
                                    train_handlers=[ValidationHandler(1, evaluator, epoch_level=True)])
    checkpoint = {"network": net, "optimizer": optimizer, "trainer": trainer, "best_model": best}
    AtomicCheckpointSaver(str(folder), checkpoint, save_interval=1, n_saved=2).attach(trainer)
    ResumeCheckpointLoader(str(folder), checkpoint).attach(trainer)
    trainer.run()
    return trainer, evaluator


def test_resumed_run_keeps_the_best_metric_values(tmp_path, caplog):
    """A resumed run compares its validation (and training) key metric with the interrupted run's best, as an
    uninterrupted run does: no "new best" for a worse score, and the best value and its epoch are the old ones."""
    trainer, evaluator = _training_run(tmp_path, [0.3, 0.4], [0.5, 0.8], max_epochs=2)
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.8, 2)
    assert (trainer.state.best_metric, trainer.state.best_metric_epoch) == (0.4, 2)
    saved = torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=True)
    assert saved["best_model"]["best_metric"] == 0.8 and saved["trainer"]["best_metric"] == 0.4

    caplog.clear()  # only the resumed run's log (the first run's may be captured too, as other tests set levels)
    with caplog.at_level(logging.INFO):
        trainer, evaluator = _training_run(tmp_path, [0.2, 0.9], [0.6, 0.7], max_epochs=4)
    assert "resumed from" in caplog.text and trainer.state.iteration == 4
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.8, 2)  # 0.6, 0.7 are not better
    assert (trainer.state.best_metric, trainer.state.best_metric_epoch) == (0.9, 4)  # 0.2 was not, 0.9 is
    assert "new best metric of dice" not in caplog.text and "new best metric of train_dice: 0.2" not in caplog.text
    assert "new best metric of train_dice: 0.9" in caplog.text


def test_resume_from_a_checkpoint_without_best_values(tmp_path, caplog):
    """A checkpoint written before the best values were saved still resumes (the values start afresh)."""
    _training_run(tmp_path, [0.3, 0.4], [0.5, 0.8], max_epochs=2)
    path = tmp_path / "checkpoint_epoch=2.pt"
    old = torch.load(path, weights_only=True)
    for entry in ("best_model", "trainer"):
        del old[entry]["best_metric"], old[entry]["best_metric_epoch"]
    torch.save(old, path)
    with caplog.at_level(logging.INFO):
        trainer, evaluator = _training_run(tmp_path, [0.2], [0.6], max_epochs=3)
    assert trainer.state.iteration == 3 and (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.6, 3)
    # the file record still holds: 0.6 did not replace the 0.8 model
    newest = torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["best_model"]
    assert [score for score, _ in newest["key_metric_saved"]] == [0.8] and newest["best_metric"] == 0.6
