# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""TraCoCo: two networks co-trained with translated crops, confident regional cross-entropy and 3D CutMix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.engines.methods.base import SemiSupervisedMethod
from monai_stlu.engines.methods.utils import cutmix, cutmix_boxes, reinitialize
from monai_stlu.losses.confident_regional_ce_loss import ConfidentRegionalCELoss
from monai_stlu.losses.seg_dice_loss import SegDiceLoss
from monai_stlu.losses.translation_consistency_loss import TranslationConsistencyLoss
from monai_stlu.networks.utils import unwrap
from monai_stlu.utils.distributed import ddp
from monai_stlu.utils.fast_path import at_least_float32

if TYPE_CHECKING:
    from monai_stlu.engines.semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["TraCoCoMethod"]


class TraCoCoMethod(SemiSupervisedMethod):
    """Translation Consistent Co-training of network A (the trainer's, saved and exported) and network B (a copy
    with its own initialisation, owned by the method, in the optimizer as a second parameter group). Each network
    ``m``, with ``o`` the other, on the labeled and unlabeled crops ``x`` of a batch, their translated crops ``x'``
    (:py:class:`monai_stlu.data.RandTranslatedCropd`) and fresh noise ``U(-noise, noise)`` on every input:

    ``L_m = 0.5 (CE + Dice)(m(x)^l, y) + w(t) [CRC(m(x~)^u, o(x)^u) + 0.3 KL_overlap(m(x), m(x')) + 0.1 NegEntropy]``

    where ``o(x)`` runs without gradient and without noise, ``x~`` is ``x`` for A and a 3D CutMix of ``x`` (with the
    same boxes pasted into ``o(x)``) for B, CRC is :py:class:`monai_stlu.losses.ConfidentRegionalCELoss` and the
    translation terms :py:class:`monai_stlu.losses.TranslationConsistencyLoss`; ``L = L_A + L_B`` (disjoint
    parameters: each network gets its own loss's gradient, as the reference's two optimisers). Both networks are in
    training mode throughout, the pseudo-labelling passes included (as the reference). Dice: the squared foreground
    form. ``consistency_weight`` is set by a :py:class:`monai_stlu.handlers.RampUpHandler`: the reference ramps
    per iteration over 40 of its epochs (``40 * num_labeled / labeled_batch_size`` iterations) to 0.3 with 8
    labeled cases, 1.0 with more. Evaluated: network A (the reference validates each network on its own).

    Reference:
        Liu Y. et al., "Translation Consistent Semi-supervised Segmentation for 3D Medical Images", IEEE TMI 2024
        (``yyliu01/TraCoCo``, ``Code/VnetLA/train.py``, ``Configs/config.py``, ``scripts/train_la.sh``).

    Args:
        sup_loss_dice: the supervised Dice, default the reference's ``dice_loss`` (``SegDiceLoss()``).
        crc: the unlabeled loss, default ``ConfidentRegionalCELoss(0.65, 0.1)``.
        translation: the translated-crop terms, default ``TranslationConsistencyLoss(0.3, 0.1)``.
        noise: half-width of the uniform input noise (0.2).
        cutmix_alpha: the Beta parameter of CutMix's mixing ratio (4).
        consistency_weight: initial weight of the unlabeled terms (the ramp handler overwrites it).
        seed_b: initialisation seed of network B.
    """

    ramp_attribute = "consistency_weight"
    batch_keys = ("image_translated", "translation")

    def __init__(
        self,
        sup_loss_dice: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        crc: nn.Module | None = None,
        translation: nn.Module | None = None,
        noise: float = 0.2,
        cutmix_alpha: float = 4.0,
        consistency_weight: float = 0.0,
        seed_b: int = 20221,
    ) -> None:
        super().__init__()
        self.sup_loss_dice = SegDiceLoss() if sup_loss_dice is None else sup_loss_dice
        self.crc = ConfidentRegionalCELoss() if crc is None else crc
        self.translation = TranslationConsistencyLoss() if translation is None else translation
        self.noise, self.cutmix_alpha = float(noise), float(cutmix_alpha)
        self.consistency_weight = float(consistency_weight)
        self.seed_b = seed_b
        self.network_b: nn.Module | None = None

    def attach(self, engine: SemiSupervisedTrainer) -> None:
        """Create network B (same architecture, its own initialisation) and add it to the optimizer."""
        if self.network_b is None:
            self.network_b = ddp(reinitialize(copy.deepcopy(unwrap(engine.network)), self.seed_b))
        engine.optimizer.add_param_group({"params": list(self.network_b.parameters())})

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """``x + U(-noise, noise)``, drawn anew for every forward pass."""
        return x + torch.zeros_like(x).uniform_(-self.noise, self.noise) if self.noise > 0 else x

    def branch(
        self,
        model: nn.Module,
        other: nn.Module,
        x: torch.Tensor,
        x_translated: torch.Tensor,
        translation: torch.Tensor,
        label: torch.Tensor,
        mix: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """One network's loss (``mix``: its unlabeled input is CutMixed, as network B's); returns the loss, its
        terms and the network's logits of the labeled crops."""
        n = label.shape[0]
        out = model(self.noisy(x))
        out_translated = model(self.noisy(x_translated))
        trans = self.translation(out, out_translated, translation)
        logits = at_least_float32(out[:n])
        sup = 0.5 * (F.cross_entropy(logits, label[:, 0].long()) + self.sup_loss_dice(logits, label))
        with torch.no_grad():
            pseudo = other(x)
        if mix:
            perm, boxes = cutmix_boxes(x.shape[0], x.shape[2], x.shape[3], self.cutmix_alpha)
            x, pseudo = cutmix([x, pseudo], perm, boxes)
        crc = self.crc(model(self.noisy(x))[n:], pseudo[n:])
        loss = sup + self.consistency_weight * (crc + trans)
        return loss, {"sup": sup, "crc": crc, "translation": trans}, out[:n]

    def forward(  # type: ignore[override]
        self,
        network: nn.Module,
        image_labeled: torch.Tensor,
        label: torch.Tensor,
        image_unlabeled: torch.Tensor | None,
        extras: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, Any]:
        if image_unlabeled is None or self.network_b is None:
            raise ValueError("TraCoCoMethod needs an unlabeled batch and must be attached to a trainer.")
        if not extras or "labeled" not in extras or "unlabeled" not in extras:
            raise ValueError("TraCoCoMethod needs the translated crops of both batches (RandTranslatedCropd in the "
                             "training transforms: its method file).")
        x = torch.cat([image_labeled, image_unlabeled], dim=0)
        x_t = torch.cat([extras["labeled"]["image_translated"], extras["unlabeled"]["image_translated"]], dim=0)
        shift = torch.cat([extras["labeled"]["translation"], extras["unlabeled"]["translation"]], dim=0)
        loss_a, terms_a, pred = self.branch(network, self.network_b, x, x_t, shift, label, mix=False)
        loss_b, terms_b, _ = self.branch(self.network_b, network, x, x_t, shift, label, mix=True)
        return {
            "pred": pred,
            "loss": loss_a + loss_b,
            "sup": self.term(terms_a["sup"] + terms_b["sup"]),
            "unsup": self.term(terms_a["crc"] + terms_b["crc"]),
            "translation": self.term(terms_a["translation"] + terms_b["translation"]),
            "consistency_weight": self.consistency_weight,
        }
