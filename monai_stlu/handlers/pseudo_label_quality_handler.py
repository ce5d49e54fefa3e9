# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Measure confirmation bias directly: Dice of a method's pseudo-labels on "unlabeled" cases whose labels are known."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.metrics.segmentation_metrics import dice_score
from monai_stlu.utils.fast_path import argmax

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["PseudoLabelQualityHandler"]


class PseudoLabelQualityHandler:
    """Every ``interval`` iterations, predict ``cases`` (unlabeled training cases whose true labels exist, as in the
    LA benchmark) with the network that makes the method's targets (its EMA teacher, or the network itself:
    ``method.pseudo_label_network``), in eval mode with ``inferer``, and append the mean foreground Dice of the argmax
    against the true labels to ``output_file`` (CSV: ``iteration, dice``), logged as ``pseudo_label_dice``.

    Falling pseudo-label Dice while the supervised loss falls is confirmation bias. For STLU-Net and CPS the
    pseudo-labels of training are argmaxes of the train-mode streams on crops; the eval-mode whole-volume prediction
    measured here is their closest whole-case proxy.

    Args:
        cases: dicts with ``image`` and ``label`` (paths or arrays) for ``transform``.
        transform: loads a case to channel-first tensors (the validation preprocessing).
        inferer: e.g. the validation sliding-window inferer.
        output_file: the CSV to append to (created with a header; rows are appended, so a resumed run continues it).
        interval: iterations between measurements.
        device: where to predict.
    """

    def __init__(
        self,
        cases: Sequence[dict],
        transform: Callable,
        inferer: Callable,
        output_file: str,
        interval: int = 500,
        device: str | torch.device = "cpu",
    ) -> None:
        self.cases = list(cases)
        self.transform = transform
        self.inferer = inferer
        self.output_file = output_file
        self.interval = int(interval)
        self.device = torch.device(device)
        self._loaded: list[dict] | None = None

    def attach(self, engine: Engine) -> None:
        if self.cases:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    @torch.no_grad()
    def measure(self, network: torch.nn.Module) -> float:
        """Mean foreground Dice of ``network``'s argmax prediction over the cases."""
        if self._loaded is None:
            self._loaded = [self.transform(dict(c)) for c in self.cases]
        was_training = network.training
        network.eval()
        try:
            scores = []
            for case in self._loaded:
                image = torch.as_tensor(case["image"])[None].to(self.device)
                pred = argmax(self.inferer(image, network), dim=1)[0].cpu()
                label = torch.as_tensor(case["label"])[0].cpu()  # on the device with data_on_device
                scores.append(dice_score(pred.numpy() > 0, label.numpy() > 0))
        finally:
            network.train(was_training)
        return float(sum(scores) / len(scores))

    def __call__(self, engine: Engine) -> None:
        method = getattr(engine, "method", None)
        network = method.pseudo_label_network(engine.network) if method is not None else engine.network
        dice = self.measure(network)
        folder = os.path.dirname(os.path.abspath(self.output_file))
        os.makedirs(folder, exist_ok=True)
        new = not os.path.isfile(self.output_file)
        with open(self.output_file, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["iteration", "dice"])
            writer.writerow([engine.state.iteration, f"{dice:.6f}"])
        logging.getLogger(__name__).info(f"iteration {engine.state.iteration}: pseudo_label_dice {dice:.4f}")
