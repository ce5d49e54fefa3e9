# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""One training loop for every semi-supervised method: labeled batch + cycled unlabeled batch + a method."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.engines.workflow import Workflow
from monai.transforms import Transform
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.utils.best_metric import BEST_METRIC_KEYS, best_metric_state, restore_best_metric
from monai_stlu.utils.flags import as_bool
from monai_stlu.utils.fast_path import (
    as_plain_tensor, autocast, autocast_dtype, module_to_channels_last, to_channels_last,
)

if TYPE_CHECKING:
    from ignite.engine import EventEnum, Events
    from ignite.metrics import Metric
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["SemiSupervisedTrainer", "compile_entry_points", "set_pass"]


def set_pass(loader: Any, batches_drawn: int) -> None:
    """Seed a sharded loader's order for the pass that starts after ``batches_drawn`` batches: its sampler's
    ``set_epoch(batches_drawn // len(loader))``, the same number on every rank (each draws one batch per iteration)
    and after a resume; a loader without ``set_epoch`` (a single process) is left alone."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch") and hasattr(loader, "__len__") and len(loader) > 0:
        sampler.set_epoch(int(batches_drawn) // len(loader))


def compile_entry_points(module: torch.nn.Module, compile_kwargs: Mapping[str, Any]) -> list[str]:
    """Compile ``module``'s ``forward_*`` methods with ``torch.compile`` (``nn.Module.compile`` covers ``forward``
    only), as instance attributes: the module keeps its type and ``state_dict``. Under DistributedDataParallel the
    entry points run inside DDP's forward (:py:class:`monai_stlu.utils.EntryPointDDP`) and stay eager: a warning
    names them. Returns the names compiled."""
    import logging

    from monai_stlu.networks.utils import unwrap

    target = unwrap(module)
    names = sorted(n for n in dir(type(target)) if n.startswith("forward_") and callable(getattr(type(target), n)))
    if not names:
        return []
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        logging.getLogger(__name__).warning(
            f"compile: under DistributedDataParallel only {type(target).__name__}.forward is compiled; "
            f"{', '.join(names)} run eager.")
        return []
    for name in names:
        target.__dict__[name] = torch.compile(getattr(target, name), **dict(compile_kwargs))
    return names


class SemiSupervisedTrainer(Trainer):
    """Semi-supervised training: each iteration takes a labeled batch from ``train_data_loader`` and an
    unlabeled batch from ``unlabeled_data_loader`` (cycled independently), and lets ``method`` compute the loss.

    The argument names follow ``monai.engines.SupervisedTrainer``; the per-method logic lives in a
    :py:class:`monai_stlu.engines.methods.SemiSupervisedMethod` (STLU-Net, Mean Teacher, ...), so the loop is
    written once. ``engine.state.output`` holds ``image``, ``label``, ``pred``, ``loss`` and every loss term the
    method reports (``sup``, ``unsup``, ``gamma``, ...), ready for ``StatsHandler``/``TensorBoardStatsHandler``.

    Mixed precision: with ``amp=True`` the forward pass runs under ``torch.autocast`` in bf16 (no scaler) on GPUs and
    CPUs that support it, in fp16 with a gradient scaler on older GPUs, and in fp32 elsewhere (``amp_dtype``).
    ``channels_last=True`` keeps the network and 5-D inputs in ``channels_last_3d`` memory format.

    Args:
        device: the device to train on.
        max_epochs: number of epochs; with ``epoch_length`` this sets the iteration budget.
        train_data_loader: the labeled data loader (dicts with ``image`` and ``label``).
        network: the network to train.
        optimizer: optimizer of ``network`` (a method may add parameter groups for its own networks).
        method: the semi-supervised method (the loss strategy).
        unlabeled_data_loader: the unlabeled data loader (dicts with ``image``), cycled; may be None for methods
            with ``uses_unlabeled = False``.
        epoch_length: iterations per epoch, default ``len(train_data_loader)``; the labeled loader restarts
            whenever it runs out, so an epoch can be longer than the loader.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: parses ``(image, label)`` from a labeled batch, as in ``SupervisedTrainer``.
        iteration_update: replaces :py:meth:`_iteration` when given.
        postprocessing: transforms applied to the (decollated) output.
        key_train_metric: the key training metric.
        additional_metrics: further ignite metrics.
        metric_cmp_fn: compares key metric values, default greater is better.
        train_handlers: ignite handlers with ``attach``.
        amp: mixed precision as described above.
        channels_last: use ``channels_last_3d`` memory format.
        event_names: extra ignite events to register.
        event_to_attr: event-to-state-attribute mapping for ``event_names``.
        decollate: decollate the output after each iteration.
        optim_set_to_none: ``optimizer.zero_grad(set_to_none=...)``.
        to_kwargs: further ``Tensor.to`` arguments for ``prepare_batch``.
        amp_kwargs: further ``torch.autocast`` arguments.
        amp_dtype: ``"auto"`` (bf16 on GPUs and CPUs that support it, fp16 with a gradient scaler on older GPUs,
            float32 on other CPUs), or ``"bfloat16"``/``"float16"``/``"float32"`` to force one; see
            :py:func:`monai_stlu.utils.autocast_dtype`.
        compile: compile the network and the method's own networks (an EMA teacher, a second network, a
            discriminator: :py:meth:`SemiSupervisedMethod.compiled_modules`) with ``torch.compile``, in place
            (``nn.Module.compile``: the modules keep their type and ``state_dict`` keys, so checkpoints, resumption and
            export are unchanged), after the method has attached (a teacher copied from the network is its own
            module). The step's shapes are static (fixed crops and batch sizes); the first iterations pay the
            compilation. As ``monai.engines.SupervisedTrainer``'s ``compile``. The networks' other entry points
            (``forward_sdf``, ``forward_all``, ``forward_embedding``, which DTC, SASSNet, CCT, URPC, MC-Net(+) and
            SS-Net call) are compiled too (:py:func:`compile_entry_points`); under DistributedDataParallel they run
            eager, and a warning says so.
        compile_kwargs: ``torch.compile`` arguments, e.g. ``{"mode": "reduce-overhead"}`` for CUDA graphs on a GPU.

    Raises:
        TypeError: when ``method`` is not a ``SemiSupervisedMethod``.
        ValueError: when the method needs unlabeled data and no ``unlabeled_data_loader`` is given.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        method: SemiSupervisedMethod,
        unlabeled_data_loader: Iterable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        channels_last: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        amp_dtype: str | torch.dtype | None = "auto",
        compile: bool = False,
        compile_kwargs: dict | None = None,
    ) -> None:
        if not isinstance(method, SemiSupervisedMethod):
            raise TypeError(f"method must be a SemiSupervisedMethod, got {type(method).__name__}.")
        if method.uses_unlabeled and unlabeled_data_loader is None:
            raise ValueError(f"{type(method).__name__} trains on unlabeled data: pass an unlabeled_data_loader.")
        if hasattr(train_data_loader, "__len__") and len(train_data_loader) == 0:  # type: ignore[arg-type]
            size = len(train_data_loader.dataset) if hasattr(train_data_loader, "dataset") else "?"  # type: ignore
            raise ValueError(
                f"the labeled data loader yields no batch: {size} labeled cases for batches of "
                f"{getattr(train_data_loader, 'batch_size', '?')} (incomplete batches dropped); label more cases or "
                "use a smaller labeled_batch_size."
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=None,  # registered below, once the method is in place (handlers may ramp engine.method)
            amp=as_bool(amp),
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.channels_last = channels_last = as_bool(channels_last)
        if channels_last and not isinstance(network, torch.nn.parallel.DistributedDataParallel):
            network = module_to_channels_last(network)  # a wrapped one was converted before DDP (utils.ddp)
        self.network = network
        self.optimizer = optimizer
        self.method = method.to(self.state.device)
        if channels_last:  # its own networks are wrapped later (attach), after this
            module_to_channels_last(self.method)
        self.unlabeled_data_loader = unlabeled_data_loader
        self._unlabeled_iter: Iterator | None = None
        self._unlabeled_batch: Any = None  # the last unlabeled batch drawn (its further entries: batch_extras)
        # a sharded (DistributedSampler) loader draws a new order for every pass, on every rank alike: ignite restarts
        # the labeled loader within an epoch (an epoch is a validation interval), which MONAI's once-per-epoch
        # set_epoch does not reach, and the unlabeled loader restarts in next_unlabeled
        self.add_event_handler(Events.DATALOADER_STOP_ITERATION,
                               lambda engine: set_pass(engine.data_loader, engine.state.iteration))
        self.optim_set_to_none = optim_set_to_none
        self.amp_dtype = autocast_dtype(self.state.device, self.amp_kwargs.pop("dtype", None) or amp_dtype)
        self.method.attach(self)
        self.compile = as_bool(compile)
        #: the modules compiled in place (empty unless ``compile``): the network, then the method's own networks
        self.compiled_modules: list[torch.nn.Module] = [network, *self.method.compiled_modules()] if self.compile else []
        for module in self.compiled_modules:
            module.compile(**(compile_kwargs or {}))
            compile_entry_points(module, compile_kwargs or {})
        #: CUDA graphs (``mode`` "reduce-overhead"/"max-autotune"): a graph's outputs are overwritten by its next
        #: replay, so each iteration starts a new step and keeps its own copy of the prediction it reports
        self.cuda_graphs = self.compile and str((compile_kwargs or {}).get("mode", "")) in ("reduce-overhead",
                                                                                              "max-autotune")
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    def run(self) -> None:  # type: ignore[override]
        """Run training; a gradient scaler is used only for fp16 autocast on CUDA."""
        use_scaler = self.amp and self.state.device.type == "cuda" and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        Workflow.run(self)

    def state_dict(self) -> dict:
        """ignite's engine state (iteration, epoch, ...) plus the best training key-metric value and its epoch, so
        that a resumed run does not call its first training Dice a new best."""
        state = super().state_dict()
        state.update(best_metric_state(self))
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore :py:meth:`state_dict`'s entry; one written without the best value (an older checkpoint) loads
        as before."""
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in BEST_METRIC_KEYS})
        restore_best_metric(self, state_dict)

    def next_unlabeled(self) -> torch.Tensor:
        """The next unlabeled image batch on the trainer's device, restarting the loader when it runs out."""
        if self.unlabeled_data_loader is None:
            raise ValueError("no unlabeled_data_loader was given.")
        if self._unlabeled_iter is None:  # the first pass, or the pass a resumed run is in
            set_pass(self.unlabeled_data_loader, self.state.iteration)
            self._unlabeled_iter = iter(self.unlabeled_data_loader)
        try:
            batch = next(self._unlabeled_iter)
        except StopIteration:
            set_pass(self.unlabeled_data_loader, self.state.iteration)
            self._unlabeled_iter = iter(self.unlabeled_data_loader)
            try:
                batch = next(self._unlabeled_iter)
            except StopIteration as e:
                loader = self.unlabeled_data_loader
                size = len(loader.dataset) if hasattr(loader, "dataset") and hasattr(loader.dataset, "__len__") else "?"
                raise ValueError(
                    f"the unlabeled_data_loader yields no batch: {size} unlabeled cases for batches of "
                    f"{getattr(loader, 'batch_size', '?')} (incomplete batches dropped); use fewer labeled or "
                    "validation cases, or a smaller unlabeled_batch_size."
                ) from e
        self._unlabeled_batch = batch
        image = batch[Keys.IMAGE] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
        return self._to_device(image)

    def batch_extras(self, labeled: dict, unlabeled: dict | None) -> dict[str, dict[str, torch.Tensor]]:
        """The entries named by the method's ``batch_keys`` of this iteration's labeled and unlabeled batches, on the
        trainer's device (images among them in the network's memory format).

        Raises:
            KeyError: naming an entry a batch lacks (the method's transforms were not applied).
        """
        out: dict[str, dict[str, torch.Tensor]] = {}
        for part, batch in (("labeled", labeled), ("unlabeled", unlabeled)):
            if batch is None:
                continue
            missing = [k for k in self.method.batch_keys if not isinstance(batch, dict) or k not in batch]
            if missing:
                raise KeyError(f"{type(self.method).__name__} reads {missing} from each {part} batch, which the "
                               "loader does not give: add the method's own transforms (its method file).")
            out[part] = {k: self._to_device(batch[k]) for k in self.method.batch_keys}
        return out

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)
        return self._compute_view(x)

    def _compute_view(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor the network computes on: a plain tensor, in channels-last format when enabled."""
        x = as_plain_tensor(x)
        return to_channels_last(x) if self.channels_last else x

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One semi-supervised iteration: draw batches, let the method compute the loss, step the optimizer.

        Returns:
            ``engine.state.output``: ``image``, ``label``, ``pred``, ``loss``, the method's loss terms and ``lr``.

        Raises:
            ValueError: when ``batchdata`` is None.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        # plain tensors from here on: the metadata is not needed past the loader, and every operation on a MetaTensor
        # (the train metric's post-processing included) pays for carrying it
        label = as_plain_tensor(batch[1])
        engine.state.output = {Keys.IMAGE: as_plain_tensor(batch[0]), Keys.LABEL: label}
        image = engine._compute_view(batch[0])
        image_u = engine.next_unlabeled() if engine.method.uses_unlabeled else None

        engine.network.train()
        engine.method.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        extras = {}
        if engine.method.batch_keys:
            extras["extras"] = engine.batch_extras(batchdata, engine._unlabeled_batch if image_u is not None else None)
        with autocast(engine.state.device, enabled=engine.amp, dtype=engine.amp_dtype or torch.float32):
            result = engine.method(engine.network, image, label, image_u, **extras)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        if engine.cuda_graphs and isinstance(result.get(Keys.PRED), torch.Tensor):
            # DAN/SASSNet run the network again (their discriminator step) before the metrics read the prediction
            result[Keys.PRED] = result[Keys.PRED].detach().clone()
        engine.state.output.update(result)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss = result[Keys.LOSS]
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.state.output["lr"] = float(engine.optimizer.param_groups[0]["lr"])  # the rate this step used, logged
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
