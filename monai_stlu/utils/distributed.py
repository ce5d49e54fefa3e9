# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Multi-process training (``torchrun``): the process group, DistributedDataParallel wrapping, and keeping the
networks a method owns besides the trained one (CPS's network B, EMA teachers) identical on every rank."""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "is_distributed", "init_distributed", "ddp", "broadcast_module", "average_buffers", "save_rank_networks", "rank",
    "any_rank", "check_shards",
]


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_distributed() -> torch.device:
    """Join ``torchrun``'s process group, NCCL on CUDA and Gloo on CPU (the backend follows the device), and return
    this process's device (``cuda:<LOCAL_RANK>`` or the CPU)."""
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank: one all-reduce of one value (``flag`` itself in a single process), so that
    the ranks take together a decision that starts or ends collective work (a time limit read from each rank's own
    clock would stop one rank an iteration before another, which then waits in its next all-reduce forever)."""
    if not is_distributed():
        return bool(flag)
    cuda = dist.get_backend() == "nccl"
    value = torch.tensor([float(flag)], device=torch.device("cuda", torch.cuda.current_device()) if cuda else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_module(module: nn.Module, src: int = 0) -> nn.Module:
    """Copy rank ``src``'s parameters and buffers to every rank (a no-op in a single process)."""
    if is_distributed():
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src)
    return module


def average_buffers(module: nn.Module) -> nn.Module:
    """Average the floating-point buffers (batch-norm running statistics) over the ranks (a no-op in a single
    process): an EMA teacher's statistics then describe the global batch, and stay equal on every rank."""
    if is_distributed():
        with torch.no_grad():
            for b in module.buffers():
                if b.is_floating_point():
                    dist.all_reduce(b)
                    b.div_(dist.get_world_size())
    return module


def check_shards(num_labeled: int, labeled_batch_size: int, num_val: int, world_size: int | None = None) -> None:
    """Refuse, before any case is loaded, a process count that the split cannot feed: every process draws full
    labeled batches from its share of the labeled cases (the sampler pads the shares to equal size), and every
    process scores at least one validation case (a rank without one has no metric to gather).

    Args:
        num_labeled: labeled cases.
        labeled_batch_size: labeled cases per batch and process.
        num_val: validation cases (0: no validation).
        world_size: processes (default: the running process group's, 1 without one).

    Raises:
        ValueError: naming the numbers and the largest process count that works.
    """
    world = int(world_size) if world_size is not None else (dist.get_world_size() if is_distributed() else 1)

    def fits(w: int) -> bool:
        return math.ceil(num_labeled / w) >= labeled_batch_size and (num_val == 0 or num_val >= w)

    if world <= 1 or fits(world):
        return
    problems = []
    if math.ceil(num_labeled / world) < labeled_batch_size:
        problems.append(f"{num_labeled} labeled cases give each process {math.ceil(num_labeled / world)}, fewer than "
                        f"one batch of {labeled_batch_size}")
    if 0 < num_val < world:
        problems.append(f"{num_val} validation cases leave {world - num_val} processes without one")
    most = max((w for w in range(1, world) if fits(w)), default=1)
    raise ValueError(
        f"under torchrun with {world} processes, " + " and ".join(problems) + f": run at most {most} processes "
        "(--nproc_per_node), or label or validate more cases (--num_labeled, --num_val), or lower "
        "--labeled_batch_size."
    )


def ddp(
    module: nn.Module,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    sync_batchnorm: bool = False,
) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when a process group runs (``device_ids`` on CUDA only), else
    ``module`` itself; its parameters start from rank 0's. The wrapper serves the network's ``forward_*`` entry
    points too (:py:class:`monai_stlu.utils.EntryPointDDP`). With ``channels_last`` the module is put in the
    ``channels_last_3d`` memory format first: DDP lays its gradient buckets out by the parameters' strides when it
    wraps, so a later change of format would cost a copy per parameter and step (and a stride warning).

    Batch normalisation is per rank by default (each process normalises with its own batch's statistics, as the
    single-GPU references do with their batch); ``sync_batchnorm`` converts every BatchNorm layer to
    ``torch.nn.SyncBatchNorm`` first (statistics over the global batch), which torch runs on GPUs only.

    Raises:
        ValueError: ``sync_batchnorm`` in a multi-process run on a device other than CUDA.
    """
    from monai_stlu.utils import as_bool
    from monai_stlu.utils.fast_path import module_to_channels_last

    if as_bool(channels_last):
        module = module_to_channels_last(module)
    if not is_distributed() or isinstance(module, nn.parallel.DistributedDataParallel):
        return module
    from monai_stlu.utils.entry_point_ddp import EntryPointDDP

    device = torch.device(device) if device is not None else next(module.parameters()).device
    if as_bool(sync_batchnorm):
        if device.type != "cuda":
            raise ValueError(
                f"sync_batchnorm true needs CUDA GPUs (torch's SyncBatchNorm does not run on {device.type}): leave it "
                "false, and each process normalises with its own batch's statistics."
            )
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return EntryPointDDP(module, device_ids=[device] if device.type == "cuda" else None)


def save_rank_networks(folder: str | None, network: nn.Module, method: nn.Module) -> str | None:
    """Write this rank's parameters of the trained network and of every network the method owns (teachers, second
    networks) to ``<folder>/rank<r>.pt``, to check that ranks stay in sync. Nothing when ``folder`` is None.
    (Batch-norm running statistics follow DDP: rank 0's are broadcast at each forward; EMA teachers' are averaged
    over the ranks after each update.)"""
    if not folder:
        return None
    from monai_stlu.networks.utils import unwrap

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"rank{rank()}.pt")
    state = {f"network.{k}": v.detach() for k, v in unwrap(network).named_parameters()}
    state.update({f"method.{k.replace('.module.', '.')}": v.detach() for k, v in method.named_parameters()})
    torch.save(state, path)
    return path
