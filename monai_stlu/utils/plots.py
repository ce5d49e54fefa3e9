# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Pictures of a run, as nnU-Net's ``progress.png``: training curves from the run's TensorBoard events and a
per-case Dice chart from its ``metrics.csv``."""

from __future__ import annotations

import csv
import glob
import os
from collections import defaultdict

from monai.utils import optional_import

__all__ = ["read_scalars", "plot_run", "per_case_dice"]

plt, has_matplotlib = optional_import("matplotlib.pyplot")
EventAccumulator, has_tensorboard = optional_import(
    "tensorboard.backend.event_processing.event_accumulator", name="EventAccumulator"
)

# panels of progress.png: title and the scalar tags drawn in it
PANELS = (
    ("losses", ("loss", "sup", "unsup")),
    ("unsupervised weight (gamma)", ("gamma",)),
    ("learning rate", ("lr",)),
    ("Dice", ("val_mean_dice", "train_mean_dice")),
)


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``run_dir`` (recursive): ``{tag: [(step, value), ...]}``,
    sorted by step (later files win for a repeated step, as a resumed run rewrites them)."""
    if not has_tensorboard:
        raise RuntimeError("reading a run's curves needs tensorboard: pip install tensorboard")
    files = sorted(glob.glob(os.path.join(run_dir, "**", "events.out.tfevents.*"), recursive=True), key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard event file (a training run writes them to <output_dir>/runs).")
    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    for path in files:
        events = EventAccumulator(path, size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for e in events.Scalars(tag):
                scalars[tag][int(e.step)] = float(e.value)
    return {tag: sorted(v.items()) for tag, v in scalars.items()}


def plot_run(run_dir: str, out_dir: str | None = None, metrics: str | None = None) -> list[str]:
    """Write ``progress.png`` (loss terms, gamma, learning rate, validation and training Dice against iterations,
    titled with the best validation Dice) when ``run_dir`` holds TensorBoard events, and ``per_case_dice.png`` (each
    case's Dice, titled with the mean ± std and drawn with the mean) when there is a ``metrics.csv``.

    Args:
        run_dir: a run's output folder (``eval/<method>``: its ``runs/`` events and, after an evaluation, its
            ``metrics.csv``), or the folder ``monai_stlu evaluate`` wrote its ``metrics.csv`` to.
        out_dir: where to write the pictures (default ``run_dir``).
        metrics: the ``metrics.csv`` to chart (default ``<run_dir>/metrics.csv`` when it exists).

    Returns:
        the files written.

    Raises:
        FileNotFoundError: neither events nor a ``metrics.csv``.
    """
    if not has_matplotlib:
        raise RuntimeError("plots need matplotlib: pip install matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    out_dir = out_dir or run_dir
    metrics = metrics or os.path.join(run_dir, "metrics.csv")
    try:
        scalars = read_scalars(run_dir)
    except FileNotFoundError:
        if not os.path.isfile(metrics):
            raise FileNotFoundError(
                f"{run_dir}: no TensorBoard event file (a training run writes them to <output_dir>/runs) and no "
                "metrics.csv (written by an evaluation) to draw."
            ) from None
        scalars = {}
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if scalars:
        written.append(_progress(scalars, run_dir, os.path.join(out_dir, "progress.png")))
    if os.path.isfile(metrics):
        written.append(per_case_dice(metrics, os.path.join(out_dir, "per_case_dice.png")))
    return written


def _progress(scalars: dict[str, list[tuple[int, float]]], run_dir: str, path: str) -> str:
    panels = [(title, [t for t in tags if t in scalars]) for title, tags in PANELS]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, tags) in zip(axes[:, 0], panels):
        for tag in tags:
            steps, values = zip(*scalars[tag])
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=tag)
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("iteration")
    heading = os.path.basename(os.path.normpath(run_dir))
    if "val_mean_dice" in scalars:
        step, best = max(scalars["val_mean_dice"], key=lambda sv: sv[1])
        heading += f": best validation Dice {best:.4f} at iteration {step}"
    fig.suptitle(heading)
    fig.tight_layout()
    return _save(fig, path)


def per_case_dice(metrics: str, path: str, class_index: str = "1") -> str:
    """A bar chart of each case's Dice of one class from a ``metrics.csv``, with its mean; returns ``path``."""
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if r.get("class", class_index) == class_index]
    if not rows:
        raise ValueError(f"{metrics}: no row of class {class_index}.")
    dice = [float(r["dice"]) for r in rows]
    mean = sum(dice) / len(dice)
    std = (sum((d - mean) ** 2 for d in dice) / len(dice)) ** 0.5
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(rows) + 2), 3.5))
    ax.bar([r["case"] for r in rows], dice)
    ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.4f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"Dice (class {class_index})")
    ax.set_title(f"per-case Dice: {mean:.4f} ± {std:.4f} (n={len(rows)})")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    tmp = path + ".partial.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
