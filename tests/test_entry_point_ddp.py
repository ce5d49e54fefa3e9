"""The DDP wrapper serves a network's other entry points (``forward_sdf``, ``forward_all``, ``forward_embedding``)
through DDP's own forward, in one process with a one-rank Gloo group (the two-rank runs of every method are in
tests/test_distributed.py, long suite)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from monai_stlu.utils import EntryPointDDP, ddp


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.aux = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.body(x))

    def forward_aux(self, x):  # an entry point that calls forward itself, as SDFVNet's and MC-Net's do
        return self.forward(x), self.aux(self.body(x))


@pytest.fixture()
def group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_entry_points_run_inside_ddps_forward_with_the_same_gradients(group):
    torch.manual_seed(0)
    plain = TwoHeads()
    wrapped = EntryPointDDP(TwoHeads())  # what ddp() builds under torchrun (one rank here: ddp() leaves it plain)
    wrapped.module.load_state_dict(plain.state_dict())
    assert ddp(plain) is plain
    calls = []
    wrapped.register_forward_pre_hook(lambda module, args: calls.append(module))  # DDP's own forward ran
    x = torch.randn(5, 3)
    out, aux = wrapped.forward_aux(x)
    (out.sum() + aux.sum()).backward()
    ref_out, ref_aux = plain.forward_aux(x)
    (ref_out.sum() + ref_aux.sum()).backward()
    assert calls == [wrapped] and torch.equal(out, ref_out) and torch.equal(aux, ref_aux)
    for (name, p), q in zip(wrapped.module.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad), name
    assert "forward" not in vars(wrapped.module)  # the network's own forward is back
    assert torch.equal(wrapped(x), plain(x))
    assert wrapped.aux is wrapped.module.aux  # other attributes are the network's own
    assert hasattr(wrapped, "forward_aux") and not hasattr(wrapped, "forward_nothing")
    with pytest.raises(AttributeError):
        wrapped.no_such_head


def test_a_process_count_the_split_cannot_feed_is_refused_with_the_numbers():
    """The LA defaults (8 labeled cases in batches of 2, 4 validation cases) feed at most 4 processes; 8 are refused
    before any case is loaded, naming the numbers and the largest count that works."""
    from monai_stlu.utils import check_shards

    for world in (1, 2, 4):
        check_shards(8, 2, 4, world_size=world)
    with pytest.raises(ValueError) as err:
        check_shards(8, 2, 4, world_size=8)
    assert str(err.value) == (
        "under torchrun with 8 processes, 8 labeled cases give each process 1, fewer than one batch of 2 and 4 "
        "validation cases leave 4 processes without one: run at most 4 processes (--nproc_per_node), or label or "
        "validate more cases (--num_labeled, --num_val), or lower --labeled_batch_size.")
    with pytest.raises(ValueError, match="5 processes, 4 validation cases leave 1 processes without one: run at most 4"):
        check_shards(16, 2, 4, world_size=5)
    check_shards(16, 2, 0, world_size=8)  # no validation: the labeled shares alone
