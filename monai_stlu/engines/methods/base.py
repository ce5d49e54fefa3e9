# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The slot a semi-supervised method fills in :py:class:`monai_stlu.engines.SemiSupervisedTrainer`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["SemiSupervisedMethod"]


class SemiSupervisedMethod(nn.Module):
    """Base class of a method's per-iteration loss, the strategy the trainer calls once per iteration.

    A method is an ``nn.Module`` so that any state it owns (an EMA teacher, a second network) moves with
    ``.to(device)`` and is saved and restored by ``CheckpointSaver``/checkpoint loading through ``state_dict``.

    Subclasses implement :py:meth:`forward` and may override :py:meth:`attach` to register their own ignite
    handlers (an EMA update, say) or extra parameters on the trainer's optimizer.

    Attributes:
        uses_unlabeled: whether the trainer must draw an unlabeled batch every iteration.
        ramp_attribute: the name of the weight a :py:class:`monai_stlu.handlers.RampUpHandler` without an explicit
            attribute ramps up (STLU-Net's ``gamma``, a consistency weight), or None when the method has none.
        batch_keys: further entries of the loaders' batches the method reads (TraCoCo's translated crop): the trainer
            passes them, on its device, as ``extras={"labeled": {...}, "unlabeled": {...}}`` to :py:meth:`forward`;
            empty for every method that needs the images only.
    """

    uses_unlabeled: bool = True
    ramp_attribute: str | None = None
    batch_keys: tuple[str, ...] = ()

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Called once by the trainer's constructor; the default does nothing."""

    def forward(  # type: ignore[override]
        self,
        network: nn.Module,
        image_labeled: torch.Tensor,
        label: torch.Tensor,
        image_unlabeled: torch.Tensor | None,
    ) -> dict[str, Any]:
        """Compute the loss of one iteration.

        Args:
            network: the trainer's network, in train mode.
            image_labeled: labeled images (B, C, *spatial).
            label: their class-index labels (B, 1, *spatial).
            image_unlabeled: unlabeled images, or None when ``uses_unlabeled`` is False.

        Returns:
            a dict with ``"pred"`` (logits of the labeled images), ``"loss"`` (the scalar to back-propagate) and
            any further loss terms as floats for logging.
        """
        raise NotImplementedError

    def pseudo_label_network(self, network: nn.Module) -> nn.Module:
        """The network whose predictions on unlabeled images are the method's targets: an EMA teacher where the
        method has one (``teacher`` attribute), else the trained network itself. Used to measure pseudo-label
        quality (:py:class:`monai_stlu.handlers.PseudoLabelQualityHandler`)."""
        teacher = getattr(self, "teacher", None)
        return teacher if isinstance(teacher, nn.Module) else network

    def compiled_modules(self) -> list[nn.Module]:
        """The method's own modules that the trainer compiles beside its network when asked to
        (``SemiSupervisedTrainer(compile=True)``): every direct child with parameters (an EMA teacher, CPS's second
        network, a discriminator); losses without parameters run as they are."""
        return [m for m in self.children() if next(m.parameters(), None) is not None]

    @staticmethod
    def term(value: torch.Tensor | float) -> torch.Tensor | float:
        """A loss term for ``engine.state.output``: detached (no graph kept) and left on its device, so an iteration
        makes no host synchronisation for logging; handlers convert it when they log
        (:py:func:`monai_stlu.handlers.loss_terms`)."""
        return value.detach() if isinstance(value, torch.Tensor) else float(value)
