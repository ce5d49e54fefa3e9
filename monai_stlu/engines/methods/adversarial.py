# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The adversarial part SASSNet and DAN share: a discriminator told labeled from unlabeled cases by their maps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.engines.utils import IterationEvents
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.networks.nets.fc_discriminator import FCDiscriminator
from monai_stlu.utils.distributed import ddp
from monai_stlu.utils.fast_path import autocast

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["AdversarialMethod"]


class AdversarialMethod(SemiSupervisedMethod):
    """Base of the methods whose unsupervised term fools a discriminator ``D(map, image)`` (class 1: "labeled").

    Each iteration, as the references (SASSNet's ``train_gan_sdfloss.py``, SSL4MIS's
    ``train_adversarial_network_3D.py``):

    1. the segmentation step (the trainer's): ``D`` in eval mode and frozen,
       ``adversarial = CE(D(map(x_u), x_u), 1)`` on the unlabeled cases, added with ``consistency_weight`` (set by
       the bundles' :py:class:`monai_stlu.handlers.RampUpHandler`) to the subclass's supervised loss;
    2. after the optimizer step (``IterationEvents.MODEL_COMPLETED``): the segmentation network in eval mode and
       without gradient maps the whole batch again, ``D`` in train mode takes one Adam step on
       ``CE(D(map(x), x), [1] * labeled + [0] * unlabeled)``.

    ``D`` and its Adam state belong to the method: saved in the training checkpoint and restored on resume; under
    torchrun its gradients are averaged over the processes. Subclasses implement :py:meth:`segment` (the map
    ``D`` scores, plus anything the supervised loss needs) and :py:meth:`supervised`.

    Args:
        map_channels: channels of the map ``D`` scores.
        in_channels: image channels.
        ndf: ``D``'s first-layer channels (64 in the references).
        d_lr: ``D``'s Adam learning rate (``1e-4``).
        d_betas: ``D``'s Adam betas (``(0.9, 0.99)``).
        consistency_weight: initial weight of the adversarial term (the ramp handler overwrites it).
    """

    ramp_attribute = "consistency_weight"

    def __init__(
        self,
        map_channels: int = 1,
        in_channels: int = 1,
        ndf: int = 64,
        d_lr: float = 1e-4,
        d_betas: tuple[float, float] = (0.9, 0.99),
        consistency_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.discriminator: nn.Module = FCDiscriminator(3, map_channels, in_channels, ndf)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=d_lr, betas=tuple(d_betas))
        self.consistency_weight = float(consistency_weight)
        self._batch: tuple[torch.Tensor, int] | None = None

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Register the discriminator step after each optimizer step (and wrap ``D`` for torchrun)."""
        self.discriminator = ddp(self.discriminator)
        self._amp = (engine.state.device, engine.amp, engine.amp_dtype or torch.float32)
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.discriminator_step)

    def segment(self, network: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass of ``network``: at least ``"logits"`` and ``"map"`` (what ``D`` scores)."""
        raise NotImplementedError

    def supervised(self, out: dict[str, torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The supervised loss terms on the labeled part ``out`` (``"sup"`` is the total)."""
        raise NotImplementedError

    @staticmethod
    def targets(n_labeled: int, n_unlabeled: int, device: torch.device) -> torch.Tensor:
        """``[1] * n_labeled + [0] * n_unlabeled``: the class ``D`` should give each case."""
        return torch.cat([torch.ones(n_labeled, dtype=torch.long), torch.zeros(n_unlabeled, dtype=torch.long)]).to(device)

    def forward(  # type: ignore[override]
        self, network: nn.Module, image_labeled: torch.Tensor, label: torch.Tensor, image_unlabeled: torch.Tensor | None
    ) -> dict[str, Any]:
        if image_unlabeled is None:
            raise ValueError(f"{type(self).__name__} needs an unlabeled batch every iteration.")
        b = image_labeled.shape[0]
        x = torch.cat([image_labeled, image_unlabeled], dim=0)
        out = self.segment(network, x)
        terms = self.supervised({k: v[:b] for k, v in out.items()}, label)
        d = self.discriminator
        d.eval()
        d.requires_grad_(False)  # the segmentation step moves the segmenter only
        try:
            scores = d(out["map"][b:].float(), image_unlabeled.float())
        finally:
            d.requires_grad_(True)
        adversarial = F.cross_entropy(scores.float(), self.targets(len(scores), 0, scores.device))
        sup = terms.pop("sup")
        loss = sup + self.consistency_weight * adversarial
        self._batch = (x.detach(), b)
        result = {"pred": out["logits"][:b], "loss": loss, "sup": self.term(sup)}
        result.update({k: self.term(v) for k, v in terms.items()})
        result.update({"unsup": self.term(adversarial), "consistency_weight": self.consistency_weight})
        return result

    def discriminator_step(self, engine: SemiSupervisedTrainer) -> None:
        """One Adam step of ``D`` on the batch of the last segmentation step, ``engine.network`` in eval mode."""
        if self._batch is None:
            return
        x, b = self._batch
        self._batch = None
        network = engine.network
        network.eval()
        device, amp, dtype = self._amp
        with torch.no_grad(), autocast(device, enabled=amp, dtype=dtype):
            maps = self.segment(network, x)["map"]
        network.train()
        self.discriminator.train()
        self.d_optimizer.zero_grad(set_to_none=True)
        scores = self.discriminator(maps.float(), x.float())
        d_loss = F.cross_entropy(scores, self.targets(b, len(x) - b, scores.device))
        d_loss.backward()
        self.d_optimizer.step()
        if isinstance(getattr(engine.state, "output", None), dict):
            engine.state.output["d_loss"] = self.term(d_loss)

    def get_extra_state(self) -> dict[str, Any]:
        """``D``'s Adam state travels with the method's state dict (the training checkpoint)."""
        return {"d_optimizer": self.d_optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state and "d_optimizer" in state:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
