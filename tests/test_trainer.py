from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from conftest import sphere_cases
from monai_stlu.engines import SemiSupervisedTrainer, STLUMethod
from monai_stlu.handlers import RampUpHandler
from monai_stlu.networks import STLUNet


def make_trainer(max_epochs=10, epoch_length=4, amp=False, channels_last=False, n_unlabeled=4):
    labeled = DataLoader(Dataset(sphere_cases(8, seed=0)), batch_size=2, shuffle=True)
    unlabeled = DataLoader(Dataset(sphere_cases(n_unlabeled, seed=1, with_label=False)), batch_size=2, shuffle=True)
    net = STLUNet(n_filters=4)
    method = STLUMethod()
    trainer = SemiSupervisedTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=labeled,
        unlabeled_data_loader=unlabeled,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9),
        method=method,
        epoch_length=epoch_length,
        train_handlers=[RampUpHandler(method, "gamma", 1.0, ramp_length=10, iterations_per_step=1)],
        amp=amp,
        channels_last=channels_last,
    )
    history = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(dict(e.state.output[0])))
    return trainer, history


def test_supervised_loss_drops_on_spheres():
    trainer, history = make_trainer(max_epochs=10, epoch_length=4)  # 40 iterations, 2 labeled loader passes each 4
    trainer.run()
    assert trainer.state.iteration == 40
    sup = np.array([h["sup"] for h in history])
    assert np.isfinite(sup).all() and np.isfinite([h["unsup"] for h in history]).all()
    assert sup[-5:].mean() < 0.6 * sup[:5].mean(), sup
    first = history[0]
    for key in ("image", "label", "pred", "loss", "sup", "unsup", "gamma"):
        assert key in first
    assert first["pred"].shape == (2, 32, 32, 32)  # decollated: one item, channel-first
    assert history[0]["gamma"] == pytest.approx(np.exp(-5))
    assert history[-1]["gamma"] == 1.0


def test_unlabeled_loader_is_cycled():
    trainer, history = make_trainer(max_epochs=1, epoch_length=6, n_unlabeled=2)  # 1 unlabeled batch, 6 iterations
    trainer.run()
    assert len(history) == 6


def test_fast_path_runs_and_stays_finite():
    trainer, history = make_trainer(max_epochs=2, epoch_length=3, amp=True, channels_last=True)
    trainer.run()
    assert all(np.isfinite(h["sup"]) for h in history)
    assert trainer.network.backbone.head.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_argument_errors():
    net = STLUNet(n_filters=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = DataLoader(Dataset(sphere_cases(2)), batch_size=2)
    with pytest.raises(TypeError, match="SemiSupervisedMethod"):
        SemiSupervisedTrainer("cpu", 1, loader, net, opt, method=torch.nn.Identity(), unlabeled_data_loader=loader)
    with pytest.raises(ValueError, match="unlabeled_data_loader"):
        SemiSupervisedTrainer("cpu", 1, loader, net, opt, method=STLUMethod())


class _Indexed(torch.utils.data.Dataset):
    """Sphere cases that also say which case they are."""

    def __init__(self, cases):
        self.cases = cases

    def __len__(self):
        return len(self.cases)

    def __getitem__(self, i):
        return {**self.cases[i], "index": i}


def _sharded_passes(rank, iterations=24):
    """The case indices a trainer draws per pass of its labeled loader (8 cases, batches of 2) sharded for ``rank`` of
    2, as under torchrun (DistributedSampler: 2 batches a pass), in 6-iteration epochs."""
    from monai.data import DistributedSampler

    from monai_stlu.engines import SupervisedMethod

    cases = _Indexed(sphere_cases(8, size=16, seed=0))
    labeled = DataLoader(cases, batch_size=2, sampler=DistributedSampler(cases, num_replicas=2, rank=rank))
    net = torch.nn.Conv3d(1, 2, 1)
    trainer = SemiSupervisedTrainer("cpu", max_epochs=iterations // 6, train_data_loader=labeled, network=net,
                                    optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=SupervisedMethod(),
                                    epoch_length=6)
    drawn = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: drawn.append(e.state.batch["index"].tolist()))
    trainer.run()
    return [drawn[i] + drawn[i + 1] for i in range(0, len(drawn), 2)]


def test_sharded_loaders_draw_a_new_order_every_pass_on_every_rank():
    """Under torchrun each pass of a sharded loader has its own order (set_epoch before every pass, not once per
    6-iteration epoch while the loader restarts three times in it), and in every pass the two ranks' shards together
    are all the cases, each once."""
    from monai_stlu.engines import set_pass

    rank0, rank1 = _sharded_passes(0), _sharded_passes(1)
    assert len(rank0) == 12  # 24 iterations, 2 batches a pass
    for a, b in zip(rank0, rank1):
        assert sorted(a + b) == list(range(8))  # a partition in every pass
    assert len({tuple(p) for p in rank0}) > 6  # orders change between passes (one fixed order would give 1)
    # the unlabeled loader is seeded by the same rule when it restarts (next_unlabeled)
    from monai.data import DistributedSampler

    cases = list(range(8))
    loader = DataLoader(cases, batch_size=2, sampler=DistributedSampler(cases, num_replicas=2, rank=0))
    orders = []
    for batches_drawn in range(0, 24, 2):
        set_pass(loader, batches_drawn)
        orders.append(tuple(int(x) for batch in loader for x in batch))
    assert len(set(orders)) > 6
