# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Write per-case Dice / Jaccard / HD95 / ASD (voxels and mm) and a mean +- std summary as CSV."""

from __future__ import annotations

import csv
import logging
import math
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.utils import IgniteInfo, min_version, optional_import

from monai_stlu.data.image_files import case_id
from monai_stlu.metrics.segmentation_metrics import METRIC_NAMES, segmentation_metrics
from monai_stlu.utils.distributed import is_distributed

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["SegmentationMetricsSaver", "write_csv_atomic"]


def write_csv_atomic(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV through a temporary file in the same folder, then rename it into place, readable as any new file
    of this process (created with the process's umask, which is never changed: colleagues read the metrics)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp_{os.getpid()}_{uuid.uuid4().hex}.csv")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies, as to any new file
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _spacing(x: Any) -> list[float] | None:
    if isinstance(x, MetaTensor) and x.meta.get("spacing_known", True):
        return [float(s) for s in x.pixdim]
    return None


def _case_name(item: dict, fallback: str) -> str:
    if "id" in item:
        return str(item["id"])
    image = item.get("image")
    if isinstance(image, MetaTensor) and "filename_or_obj" in image.meta:
        return case_id(str(image.meta["filename_or_obj"]))
    return fallback


class SegmentationMetricsSaver:
    """Compute, for every evaluated case and foreground class, Dice, Jaccard, HD95 and ASD with the published
    tables' (medpy) definitions (see :py:func:`monai_stlu.metrics.segmentation_metrics`), in voxels and, where the
    voxel spacing is known, in mm; at the end, write ``metrics.csv`` (one row per case and class) and
    ``metrics_summary.csv`` (mean and std per class and metric) atomically, and log the summary.

    It reads the decollated evaluator output: ``pred`` and ``label`` as class-index maps of shape (1, *spatial)
    (apply ``AsDiscreted(keys="pred", argmax=True)`` in the postprocessing).

    Args:
        output_dir: folder for the CSV files.
        num_classes: number of classes including background; classes ``1..num_classes-1`` are scored.
        filename: per-case CSV name.
        summary_filename: summary CSV name.
        output_transform: maps ``engine.state.output`` (a list of dicts) to that list; identity by default.

    Raises:
        TypeError: when ``output_dir`` is not a string.
    """

    def __init__(
        self,
        output_dir: str,
        num_classes: int = 2,
        filename: str = "metrics.csv",
        summary_filename: str = "metrics_summary.csv",
        output_transform: Callable[[Any], list[dict]] = lambda x: x,
    ) -> None:
        if not isinstance(output_dir, (str, os.PathLike)):
            raise TypeError(f"output_dir must be a path string, got {type(output_dir).__name__}.")
        self.output_dir = str(output_dir)
        self.num_classes = int(num_classes)
        self.filename = filename
        self.summary_filename = summary_filename
        self.output_transform = output_transform
        self.rows: list[dict[str, Any]] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        items = self.output_transform(engine.state.output)
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(items)
        for i, item in enumerate(items):
            pred, label = item["pred"], item["label"]
            spacing = _spacing(label) or _spacing(pred)
            name = _case_name({**batch[i], **item} if i < len(batch) else item, f"case_{len(self.rows)}")
            p = torch.as_tensor(pred).detach().cpu().numpy()[0]
            y = torch.as_tensor(label).detach().cpu().numpy()[0]
            self.add_case(name, p, y, spacing)

    def add_case(self, name: str, pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None) -> None:
        """Score one case (class-index maps of the spatial shape) for every foreground class."""
        for c in range(1, self.num_classes):
            vox = segmentation_metrics(pred == c, label == c)
            row: dict[str, Any] = {"case": name, "class": c, "empty_pred": bool((pred == c).sum() == 0)}
            row.update({"dice": vox["dice"], "jaccard": vox["jaccard"]})
            row.update({"hd95_vox": vox["hd95"], "asd_vox": vox["asd"]})
            if spacing is not None:
                mm = segmentation_metrics(pred == c, label == c, spacing=spacing)
                row.update({"hd95_mm": mm["hd95"], "asd_mm": mm["asd"]})
            else:
                row.update({"hd95_mm": math.nan, "asd_mm": math.nan})
            self.rows.append(row)

    @property
    def columns(self) -> list[str]:
        return ["case", "class", "dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm", "empty_pred"]

    def summary(self) -> list[dict[str, Any]]:
        """Mean and (population) std over cases, per class and metric."""
        out = []
        for c in sorted({r["class"] for r in self.rows}):
            rows = [r for r in self.rows if r["class"] == c]
            for m in self.columns[2:8]:
                values = np.array([r[m] for r in rows], dtype=float)
                out.append({"class": c, "metric": m, "mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)})
        return out

    def write(self, engine: Engine | None = None) -> None:
        """Write both CSV files atomically and log ``metric: mean +- std``. In a multi-process evaluation every
        process scored its share: rank 0 gathers the rows (in case order) and writes; the others write nothing."""
        if is_distributed():
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, self.rows)
            if dist.get_rank() > 0:
                return
            self.rows = sorted((r for rows in gathered for r in rows), key=lambda r: (str(r["case"]), r["class"]))
        if not self.rows:
            self.logger.warning("SegmentationMetricsSaver: no case was evaluated, nothing written.")
            return
        write_csv_atomic(
            os.path.join(self.output_dir, self.filename), self.columns, [[r[k] for k in self.columns] for r in self.rows]
        )
        summary = self.summary()
        write_csv_atomic(
            os.path.join(self.output_dir, self.summary_filename),
            ["class", "metric", "mean", "std", "n"],
            [[s["class"], s["metric"], s["mean"], s["std"], s["n"]] for s in summary],
        )
        for s in summary:
            self.logger.info(f"class {s['class']} {s['metric']}: {s['mean']:.4f} +- {s['std']:.4f} (n={s['n']})")
        if engine is not None:
            engine.state.metric_details["segmentation_summary"] = summary
