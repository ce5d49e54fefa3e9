# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Refuse a checkpoint that does not fit the run being built, with one sentence instead of a state-dict key dump."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from monai_stlu.networks.utils import unwrap

__all__ = [
    "CheckpointMismatchError",
    "describe_state_dict",
    "describe_module",
    "check_state_dict_fits",
    "check_run_matches",
    "check_checkpoint_fits",
    "MODEL_WAYS_OUT",
]

_WAYS_OUT = (
    "train into another output folder (--output_subdir NAME, or another --bundle_root) "
    "or start afresh with --resume false"
)
# loading a trained model (evaluation, inference, export): the training remedies do not apply
MODEL_WAYS_OUT = (
    "point --ckpt_dir (or --output_subdir; monai_stlu predict: --model) at a model of this network, or build the "
    "network the model was trained with (the same method and network keys, e.g. --n_filters 8 for a quick.json model)"
)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint was written by another method, network or configuration than the one being built."""


# each backbone family: (a key only it has, its first convolution's weight, its 1x1 head's weight or None)
_FAMILIES = (
    ("VNet", "encoder.0.0.weight", "encoder.0.0.weight", "head.weight"),
    ("DynUNet", "input_block.conv1.conv.weight", "input_block.conv1.conv.weight", "output_block.conv.conv.weight"),
    ("SegResNet", "convInit.conv.weight", "convInit.conv.weight", "conv_final.2.conv.weight"),
    ("UNet", "model.0.conv.unit0.conv.weight", "model.0.conv.unit0.conv.weight", None),
)


def describe_state_dict(state: Mapping[str, Any]) -> str:
    """A short description of the network a state dict belongs to, e.g. ``"STLUNet (n_filters 16, 2 classes)"`` or
    ``"STLUNet on DynUNet (n_filters 16, 1 input channel, 2 classes)"``.

    Recognises this package's V-Net family and the MONAI backbones (:py:func:`monai_stlu.networks.nets.build_backbone`)
    by their key names; anything else is described by its tensor count.
    """
    keys = [k for k in state if isinstance(state[k], torch.Tensor)]
    wrapper, prefix = "", ""
    if any(k.startswith("extra_heads.") for k in keys):
        wrapper, prefix = "MCNetPlus", "backbone."
    elif any(k.startswith("backbone.") for k in keys):
        wrapper, prefix = "STLUNet", "backbone."
    for family, marker, first_key, head_key in _FAMILIES:
        if prefix + marker in state:
            break
    else:
        return f"a network with {len(keys)} tensors"
    name = wrapper or family
    if wrapper and family != "VNet":
        name = f"{wrapper} on {family}"
    first, head = state.get(prefix + first_key), state.get(prefix + head_key) if head_key else None
    details = []
    if isinstance(first, torch.Tensor) and first.dim() >= 2:
        details.append(f"n_filters {first.shape[0]}, {first.shape[1]} input channel{'s' if first.shape[1] != 1 else ''}")
    if isinstance(head, torch.Tensor):
        details.append(f"{head.shape[0]} classes")
    return f"{name} ({', '.join(details)})" if details else name


def describe_module(module: nn.Module) -> str:
    """:py:func:`describe_state_dict` of a module's own state dict."""
    return describe_state_dict(unwrap(module).state_dict())


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    exp = {k: tuple(v.shape) for k, v in expected.items() if isinstance(v, torch.Tensor)}
    got = {k: tuple(v.shape) for k, v in found.items() if isinstance(v, torch.Tensor)}
    missing, unexpected = sorted(set(exp) - set(got)), sorted(set(got) - set(exp))
    shapes = sorted(k for k in set(exp) & set(got) if exp[k] != got[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensors (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} tensors of another shape (first: {shapes[0]} {list(got[shapes[0]])} "
                     f"instead of {list(exp[shapes[0]])})")
    return "; ".join(parts)


def check_state_dict_fits(
    module: nn.Module,
    state: Mapping[str, Any],
    path: str,
    written_by: str | None = None,
    ways_out: str = _WAYS_OUT,
) -> None:
    """Raise :py:class:`CheckpointMismatchError` when ``state`` cannot be loaded strictly into ``module``.

    Args:
        module: the network being built (``DataParallel``/DDP wrappers are looked through).
        state: the state dict read from ``path``.
        path: the checkpoint file, named in the message.
        written_by: what wrote the file (e.g. ``"an STLUMethod run"``); default: the network the keys describe.
        ways_out: the remedies named at the end of the sentence (training's by default; :py:data:`MODEL_WAYS_OUT`
            where a trained model is loaded).

    Raises:
        CheckpointMismatchError: one sentence naming the file, what wrote it, what is being built, and the two ways
            out (another output folder, or ``--resume false``).
    """
    expected = unwrap(module).state_dict()
    diff = _differences(expected, state)
    if not diff:
        return
    raise CheckpointMismatchError(
        f"{path} was written by {written_by or describe_state_dict(state)} and does not fit the "
        f"{describe_module(module)} being built ({diff}): {ways_out}."
    )


def check_run_matches(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any], path: str, ways_out: str = _WAYS_OUT
) -> None:
    """Raise :py:class:`CheckpointMismatchError` when a checkpoint's run record names another method or bundle.

    Args:
        saved: the ``run_info`` record read from the checkpoint (None for files written before it existed).
        current: the record of the run being built.
        path: the checkpoint file, named in the message.
    """
    if not saved:
        return
    for key in ("bundle", "method"):
        if saved.get(key) and current.get(key) and saved[key] != current[key]:
            raise CheckpointMismatchError(
                f"{path} was written by a {saved.get('method')} run of bundle {saved.get('bundle')} "
                f"({saved.get('network', 'network unknown')}) and does not fit the {current.get('method')} run of "
                f"bundle {current.get('bundle')} being built: {ways_out}."
            )


def check_checkpoint_fits(
    load_dict: Mapping[str, Any], checkpoint: Mapping[str, Any], path: str, ways_out: str = _WAYS_OUT
) -> None:
    """Check a whole checkpoint against the objects a loader will restore from it: the ``run_info`` records (when
    both have one), then every ``nn.Module`` entry (network, method with its teacher or second network).

    A flat state dict (``model.pt``, saved from a one-entry ``save_dict``) is checked against that one module.

    Raises:
        CheckpointMismatchError: as :py:func:`check_state_dict_fits` and :py:func:`check_run_matches`.
    """
    info = load_dict.get("run_info")
    if info is not None and hasattr(info, "state_dict"):
        check_run_matches(checkpoint.get("run_info"), info.state_dict(), path, ways_out)
    modules = {k: v for k, v in load_dict.items() if isinstance(v, nn.Module)}
    if len(load_dict) == 1 and len(modules) == 1 and next(iter(modules)) not in checkpoint:
        checkpoint = {next(iter(modules)): checkpoint}  # a flat state dict
    record = checkpoint.get("run_info") or {}
    for key, module in modules.items():
        if key not in checkpoint:
            raise CheckpointMismatchError(f"{path} has no {key!r} entry, so it was not written by this bundle's "
                                          f"training: {ways_out}.")
        written_by = f"a {record['method']} run ({record.get('network', '')})" if record.get("method") else None
        check_state_dict_fits(module, checkpoint[key], path, written_by=written_by, ways_out=ways_out)
