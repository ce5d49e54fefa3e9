# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The real-data quality protocol: does a method learn from unlabeled images?

The training, evaluation and table are ``monai_stlu compare``'s (:py:mod:`monai_stlu.bundle.compare`); this script
adds what the repository's own benchmark needs around them: the LA protocol's defaults, a record of each finished run
kept in the repository (``--archive_dir``), tagged variants (ablations, label-ratio sweeps) and a report with
pictures. Diagnostics of finished runs (noise robustness, BatchNorm statistics, the foreground margin) are in
``benchmarks/probes.py``.

Every (method, seed) is trained with the LA bundle's own command and a protocol override file
(``configs/cpu_protocol.json`` or ``configs/gpu_protocol.json``), selected on the named validation cases, evaluated on
the test list, and cached: an interrupted or repeated run resumes its checkpoint or skips what is done.

    python benchmarks/quality.py run --protocol cpu --methods supervised,mean_teacher,stlu --seeds 0,1
    python benchmarks/quality.py report --protocol cpu
    python benchmarks/quality.py table --archive_dir DIR --tag _half2500 --results_dir OUT   # monai_stlu compare's table
    python benchmarks/quality.py run --protocol cpu --labeled 4,8,16 --seeds 0            # label-ratio sweep
    python benchmarks/quality.py run --protocol cpu --methods dtc,mcnet --seeds 0 --finish_by 21:15 --minutes mcnet=55
    python benchmarks/quality.py run --protocol cpu --methods stlu --tag _cascade --override --dropout_placement cascade

``run`` works in ``--work_dir`` (default ``benchmarks/work/quality_<protocol>``, git-ignored): per run its
checkpoints, ``train.log``, ``pseudo_label_quality.csv``, the test metrics and predictions, and ``done.json``. A
training its time limit stops (``--override --max_train_seconds N``) is left to resume, not evaluated, unless
``--evaluate_stopped`` asks for a probe of what the budget reaches. With ``--finish_by`` a run starts only if it is
expected to end by then (its ``--minutes`` figure, else the longest archived run of the method): a session's runs
finish in the session, as the work folder may not outlive it.
Every finished run is also kept in ``--archive_dir`` (default ``benchmarks/results/quality_<protocol>_runs``, meant to be
committed): its ``done.json``, ``segments.json``, per-case test metrics, validation curve and pseudo-label quality, a
few KB that outlive the work folder. ``report`` reads the archive (after archiving any finished run of the work folder
it lacks) and writes ``benchmarks/results/quality_<protocol>/``: ``summary.md`` / ``summary.csv`` (Dice, Jaccard, HD95 and
ASD in voxels and mm, mean ± std over cases and seeds, and the per-seed means), ``per_case.csv``,
``learning_curves.png`` (validation Dice against iteration; beside it the pseudo-label quality: Dice of each
semi-supervised method's pseudo-labels against the true labels of "unlabeled" training cases), ``overlay.png`` (an
axial slice through each test case, one row per method: image, ground-truth and predicted contours, the case's
Dice), ``label_sweep.png`` for runs of ``--labeled``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import re
import time
from collections import defaultdict

from monai_stlu.bundle.compare import (
    METRICS, comparison_report, mean_metrics, read_cases, resolved, run_method,
    validation_curve, write_text_atomic,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "bundles", "stlu_la", "configs")
METHODS = (
    "supervised", "supervised_ssl4mis", "supervised_uamt", "supervised_ssnet", "mean_teacher", "ua_mt", "cps",
    "mcnet_plus", "bcp", "dtc", "sassnet", "ssnet", "dan", "urpc", "cct", "ict", "mcnet", "ml", "mcf", "tracoco", "stlu",
)
_RUN_NAME = re.compile(r"(.+)_seed(\d+)")  # a run folder: <method><tag>_seed<seed>


def config_paths(protocol: str, method: str, *more: str) -> list[str]:
    files = [os.path.join(CONFIGS, "train.json"), os.path.join(CONFIGS, f"{protocol}_protocol.json")]
    if method != "stlu":
        files.append(os.path.join(CONFIGS, "methods", f"{method}.json"))
    return files + [os.path.join(CONFIGS, m) for m in more]


def config_files(protocol: str, method: str, *more: str) -> str:
    """The ``--config_file`` argument of the bundle command."""
    return "[" + ",".join(f"'{f}'" for f in config_paths(protocol, method, *more)) + "]"


def run_dir(work_dir: str, method: str, seed: int, tag: str = "") -> str:
    return os.path.join(work_dir, f"{method}{tag}_seed{seed}")


def labeled_tag(num_labeled: int | None) -> str:
    return "" if num_labeled is None else f"_l{num_labeled}"


def archive_run(opts: argparse.Namespace, folder: str) -> str:
    """Copy a finished run's record from its work folder into ``opts.archive_dir`` (a folder of the same name):
    ``test_metrics.csv`` (the per-case test metrics), ``validation.csv`` (iteration, Dice: the curve the run wrote, or
    read from its log for an older run folder),
    ``pseudo_label_quality.csv`` and ``segments.json`` where the run has them, then ``done.json``, which marks the
    record complete. Each file is written whole (a partial file, then a rename). Returns the archived folder."""
    dest = os.path.join(opts.archive_dir, os.path.basename(os.path.normpath(folder)))
    os.makedirs(dest, exist_ok=True)
    if not os.path.isfile(os.path.join(folder, "validation.csv")):  # a run folder from before run_method wrote it
        curve = validation_curve(os.path.join(folder, "train.log"),
                                 int(run_setting(opts.protocol, folder, "val_interval")))
        text = io.StringIO()
        csv.writer(text).writerows([("iteration", "dice"), *curve])
        write_text_atomic(os.path.join(dest, "validation.csv"), text.getvalue())
    for src, name in (("validation.csv", "validation.csv"), (os.path.join("test", "metrics.csv"), "test_metrics.csv"),
                      (os.path.join("test_without_largest_component", "metrics.csv"),
                       "test_metrics_without_largest_component.csv"),
                      (os.path.join("train", "pseudo_label_quality.csv"), "pseudo_label_quality.csv"),
                      ("segments.json", "segments.json"), ("done.json", "done.json")):
        if os.path.isfile(os.path.join(folder, src)):
            with open(os.path.join(folder, src), newline="") as f:
                write_text_atomic(os.path.join(dest, name), f.read())
    return dest


def archived_runs(opts: argparse.Namespace) -> dict[str, dict[int, str]]:
    """method (with its tag) -> seed -> archived run folder, for every record in ``opts.archive_dir``; first archives
    each finished run of ``opts.work_dir`` whose record is missing or older than its ``done.json``."""
    for name in sorted(os.listdir(opts.work_dir)) if os.path.isdir(opts.work_dir) else []:
        done = os.path.join(opts.work_dir, name, "done.json")
        kept = os.path.join(opts.archive_dir, name, "done.json")
        if _RUN_NAME.fullmatch(name) and os.path.isfile(done) and (
                not os.path.isfile(kept) or os.path.getmtime(kept) < os.path.getmtime(done)):
            archive_run(opts, os.path.join(opts.work_dir, name))
    runs: dict[str, dict[int, str]] = defaultdict(dict)
    for name in sorted(os.listdir(opts.archive_dir)) if os.path.isdir(opts.archive_dir) else []:
        m = _RUN_NAME.fullmatch(name)
        if m and os.path.isfile(os.path.join(opts.archive_dir, name, "done.json")):
            runs[m.group(1)][int(m.group(2))] = os.path.join(opts.archive_dir, name)
    return runs


def best_validation(folder: str) -> float:
    """The best validation Dice (0-1) of an archived run: the maximum of its curve, else the ``best_val_dice`` its
    ``done.json`` holds (a record rebuilt from an earlier report, whose log was lost), else NaN."""
    path = os.path.join(folder, "validation.csv")
    if os.path.isfile(path):
        with open(path) as f:
            values = [float(r["dice"]) for r in csv.DictReader(f)]
        if values:
            return max(values)
    with open(os.path.join(folder, "done.json")) as f:
        return float(json.load(f).get("best_val_dice", "nan"))


def run_one(opts: argparse.Namespace, method: str, seed: int) -> dict | None:
    """Train (resuming any checkpoint), then evaluate on the test list, as ``monai_stlu compare`` does
    (:py:func:`monai_stlu.bundle.compare.run_method`); cached by ``done.json``, archived when finished. A training
    stopped by its time limit (``--override --max_train_seconds N``) is not evaluated: returns None, and the same
    command resumes it; with ``--evaluate_stopped`` (a probe of what a time budget reaches) it is evaluated, and its
    ``done.json`` says where it stopped (``stopped_at_iteration``)."""
    out = run_dir(opts.work_dir, method, seed, opts.tag + labeled_tag(opts.num_labeled))
    args = ["--dataset_dir", opts.dataset_dir, "--train_list", opts.train_list, "--test_list", opts.test_list,
            *(["--num_labeled", str(opts.num_labeled)] if opts.num_labeled is not None else []), *opts.override]
    extra = {"protocol": opts.protocol, "num_labeled": opts.num_labeled, "override": opts.override}
    already = os.path.isfile(os.path.join(out, "done.json"))
    summary = run_method(CONFIGS, opts.protocol, method, seed, out, args, opts.evaluate_stopped, extra)
    if summary is not None and not already:
        archive_run(opts, out)
    return summary


def run_setting(protocol: str, folder: str, key: str):
    """A setting as the run in ``folder`` had it: ``train.json`` and the protocol's config (whose schedules are
    expressions of ``max_iterations``) with the run's own overrides from its ``done.json``, resolved as the bundle
    resolves them."""
    with open(os.path.join(folder, "done.json")) as f:
        override = json.load(f).get("override") or []
    return resolved(config_paths(protocol, "stlu"), override, key)[0]


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5


def report(opts: argparse.Namespace) -> str:
    """Tables and pictures from every archived run (:py:func:`archived_runs`)."""
    out = opts.results_dir
    os.makedirs(out, exist_ok=True)
    runs = archived_runs(opts)  # method (with its tag) -> seed -> archived run folder
    if not runs:
        raise SystemExit(f"no finished run in {opts.work_dir} or {opts.archive_dir}: run `python benchmarks/quality.py run` first.")
    per_case, lines = [], []
    header = ("| method | seeds | Dice % | Jaccard % | HD95 (vox) | ASD (vox) | HD95 (mm) | ASD (mm) | per-seed Dice % "
              "| per-seed best validation Dice % | Dice % without the largest-component step |")
    lines += [header, "|" + "---|" * 11]
    csv_rows = []
    for method in sorted(runs, key=lambda m: (METHODS.index(m) if m in METHODS else 99, m)):
        rows_all, seed_means, seed_val, raw = [], [], [], []
        for seed, folder in sorted(runs[method].items()):
            rows = read_cases(os.path.join(folder, "test_metrics.csv"))
            unprocessed = os.path.join(folder, "test_metrics_without_largest_component.csv")
            raw += [100 * float(r["dice"]) for r in read_cases(unprocessed)] if os.path.isfile(unprocessed) else []
            rows_all += rows
            seed_means.append(100 * sum(float(r["dice"]) for r in rows) / len(rows))
            # the figure model selection saw (validation cases only): what variants are compared on
            seed_val.append(100 * best_validation(folder))
            per_case += [{"method": method, "seed": seed, **{k: r[k] for k in ("case", *METRICS)}} for r in rows]
        cells = []
        for k in METRICS:
            scale = 100 if k in ("dice", "jaccard") else 1
            m, s = mean_std([scale * float(r[k]) for r in rows_all])
            cells.append(f"{m:.2f} ± {s:.2f}")
            csv_rows.append([method, k, m, s, len(rows_all)])
        csv_rows.append([method, "best_val_dice", *mean_std([v / 100 for v in seed_val]), len(seed_val)])
        lines.append(f"| {method} | {len(runs[method])} | " + " | ".join(cells) + " | "
                     + ", ".join(f"{v:.2f}" for v in seed_means) + " | " + ", ".join(f"{v:.2f}" for v in seed_val)
                     + " | " + ("{:.2f} ± {:.2f}".format(*mean_std(raw)) if raw else "(not post-processed)") + " |")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "metric", "mean", "std", "n"])
        w.writerows(csv_rows)
    with open(os.path.join(out, "per_case.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["method", "seed", "case", *METRICS])
        w.writeheader()
        w.writerows(per_case)
    plots(opts, runs, out)
    label_sweep_plot(runs, out)
    return "\n".join(lines)


def comparison_table(opts: argparse.Namespace) -> str:
    """``monai_stlu compare``'s table (gain over each method's matched supervised run with the paired test, the
    convergence check, the verdict) for the archived runs of ``opts.tag``, written to ``opts.results_dir``."""
    runs: dict[str, dict[int, tuple[str, dict]]] = defaultdict(dict)
    for tagged, seeds in archived_runs(opts).items():
        if not tagged.endswith(opts.tag) or (opts.tag and tagged == opts.tag):
            continue
        method = tagged[: len(tagged) - len(opts.tag)] if opts.tag else tagged
        if method not in METHODS:
            continue
        for seed, folder in seeds.items():
            with open(os.path.join(folder, "done.json")) as f:
                runs[method][seed] = (folder, json.load(f))
    if not runs:
        raise SystemExit(f"no archived run tagged {opts.tag!r} in {opts.archive_dir}.")
    return comparison_report(opts.results_dir, METHODS, runs, CONFIGS)


def line_styles(n: int) -> list[tuple[str, str]]:
    """``n`` (colour, line style) pairs, all different: the ten ``tab10`` colours, then again dashed, dotted, ..."""
    dashes = ["-", "--", ":", "-."]
    return [(f"C{i % 10}", dashes[(i // 10) % len(dashes)]) for i in range(n)]


def label_sweep_plot(runs: dict, out: str) -> None:
    """Test Dice against the labeled count, a line per method, for runs made with ``--num_labeled`` (tag ``_lN``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = defaultdict(dict)
    for name, seeds in runs.items():
        m = re.fullmatch(r"(.+)_l(\d+)", name)
        if not m:
            continue
        dice = [mean_metrics(os.path.join(f, "test_metrics.csv"))["dice"] for f in seeds.values()]
        points[m.group(1)][int(m.group(2))] = 100 * sum(dice) / len(dice)
    if not points:
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for (color, dash), (method, by_count) in zip(line_styles(len(points)), sorted(points.items())):
        counts = sorted(by_count)
        ax.plot(counts, [by_count[c] for c in counts], color=color, linestyle=dash, marker="o", label=method)
    ax.set(xlabel="labeled training cases", ylabel="test Dice %", title="label-ratio sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "label_sweep.png"), dpi=110)
    plt.close(fig)


def plots(opts: argparse.Namespace, runs: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(method, seed, folder) for method, seeds in sorted(runs.items()) for seed, folder in sorted(seeds.items())]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for (color, dash), (method, seed, folder) in zip(line_styles(len(labels)), labels):
        style = {"color": color, "linestyle": dash, "marker": "o", "markersize": 4, "label": f"{method} seed {seed}"}
        for ax, name in zip(axes, ("validation.csv", "pseudo_label_quality.csv")):
            if os.path.isfile(os.path.join(folder, name)):
                with open(os.path.join(folder, name)) as f:
                    pts = [(int(r["iteration"]), float(r["dice"])) for r in csv.DictReader(f)]
                if pts:
                    ax.plot(*zip(*pts), **style)
    axes[0].set(title="validation Dice (model selection cases)", xlabel="iteration", ylabel="Dice")
    axes[1].set(title="pseudo-label Dice on 'unlabeled' training cases", xlabel="iteration", ylabel="Dice")
    for ax in axes:
        ax.grid(alpha=0.3)
    # one legend for both panels (the same style is the same run in each), outside them so no curve is hidden
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "learning_curves.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    overlay(opts, runs, out, plt)


def overlay(opts: argparse.Namespace, runs: dict, out: str, plt) -> list[str]:
    """An axial slice through the centre of each test case's label (columns), one row per main method (its first
    seed; tagged variants are left out) whose predictions are in the work folder (the archive keeps no images):
    image, ground truth (white), the method's prediction (red) and its Dice on that case under the panel. Returns the
    methods drawn, one row each; draws nothing where none has predictions."""
    import h5py
    import nibabel as nib
    import numpy as np

    with open(os.path.join(opts.dataset_dir, opts.test_list)) as f:
        cases = [line.strip() for line in f if line.strip()]
    main = []  # (method, archived folder, predictions folder); variants (ablations, sweeps) would crowd it
    for method, seeds in sorted(runs.items()):
        predictions = os.path.join(opts.work_dir, os.path.basename(seeds[min(seeds)]), "test", "predictions")
        if method in METHODS and os.path.isdir(predictions):
            main.append((method, seeds[min(seeds)], predictions))
    if not main:
        return []
    dice = {m: {r["case"]: float(r["dice"]) for r in read_cases(os.path.join(folder, "test_metrics.csv"))}
            for m, folder, _ in main}
    fig, axes = plt.subplots(len(main), len(cases), figsize=(2.2 * len(cases), 2.3 * len(main)), squeeze=False)
    for col, case in enumerate(cases):
        with h5py.File(os.path.join(opts.dataset_dir, "2018LA_Seg_Training Set", case, "mri_norm2.h5")) as f:
            image, label = f["image"][()], f["label"][()]
        z = int(np.round(np.nonzero(label)[2].mean())) if label.any() else image.shape[2] // 2
        for row, (method, _, predictions) in enumerate(main):
            ax = axes[row][col]
            ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
            ax.contour(label[:, :, z].T, levels=[0.5], colors="white", linewidths=1.0)
            found = sorted(glob.glob(os.path.join(predictions, f"{case}_seg*.nii.gz")))
            if found:
                pred = np.asarray(nib.load(found[0]).dataobj)[:, :, z]
                if pred.any():
                    ax.contour(pred.T, levels=[0.5], colors="red", linewidths=0.9)
            score = f" {100 * dice[method][case]:.1f}" if case in dice[method] else ""
            ax.set_title(f"{case[:8]} z={z}" if row == 0 else "", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{method}{score}", fontsize=7, labelpad=2)
    fig.suptitle("test cases: ground truth (white), prediction (red); method and its Dice % under each panel", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overlay.png"), dpi=80)
    plt.close(fig)
    return [m for m, _, _ in main]


def expected_minutes(opts: argparse.Namespace, method: str, estimates: dict[str, float]) -> float | None:
    """The minutes a run of ``method`` is expected to take, training and test evaluation: its ``--minutes`` figure,
    else the longest archived run of the method with this tag (all its training segments and its evaluation), else
    None (unknown)."""
    if method in estimates:
        return estimates[method]
    spans = []
    for folder in archived_runs(opts).get(method + opts.tag + labeled_tag(opts.num_labeled), {}).values():
        with open(os.path.join(folder, "done.json")) as f:
            done = json.load(f)
        spans.append(done.get("train_minutes_all_segments", done.get("train_minutes", 0)) + done.get("eval_minutes", 0))
    return max(spans) if spans else None


def deadline(text: str, now: float | None = None) -> float:
    """``--finish_by`` as a POSIX time: ``HH:MM`` (today, local time) or an ISO date and time."""
    import datetime

    try:
        if re.fullmatch(r"\d{1,2}:\d{2}", text):
            today = datetime.datetime.fromtimestamp(time.time() if now is None else now)
            hour, minute = map(int, text.split(":"))
            return today.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise SystemExit(f"--finish_by {text!r}: give a time as HH:MM (today) or YYYY-MM-DDTHH:MM.") from None


def arguments(commands: list[str], description: str | None = None) -> argparse.ArgumentParser:
    """The command line of this script and of ``probes.py`` (which reads the same runs): ``commands`` are the choices
    of the first argument."""
    parser = argparse.ArgumentParser(description=description or __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=commands)
    parser.add_argument("--protocol", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--methods", default="supervised,mean_teacher,stlu", help=f"comma-separated, of {METHODS}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--dataset_dir", default=os.environ.get("STLU_SHARED_LA", os.path.join(REPO, "..", "shared", "data", "LA")))
    parser.add_argument("--train_list", default="train.list")
    parser.add_argument("--test_list", default="subset_test.list")
    parser.add_argument("--work_dir", default=None)
    parser.add_argument("--results_dir", default=None)
    parser.add_argument("--archive_dir", default=None,
                        help="the finished runs' records (default benchmarks/results/quality_<protocol>_runs)")
    parser.add_argument("--tag", default="", help="a suffix of the run folders, for variants (ablations)")
    parser.add_argument("--labeled", default=None,
                        help="label-ratio sweep: comma-separated labeled counts (runs tagged _lN), e.g. 4,8,16")
    parser.add_argument("--override", nargs=argparse.REMAINDER, default=[],
                        help="further bundle overrides, e.g. --override --max_iterations 4 (must come last)")
    return parser


def options(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[int], list]:
    """Parsed arguments with the folders' defaults filled in, the methods, the seeds and the labeled counts (``[None]``
    without ``--labeled``); exits with one sentence on an unknown method or a data folder without the training list."""
    opts = parser.parse_args(argv)
    opts.work_dir = opts.work_dir or os.path.join(REPO, "benchmarks", "work", f"quality_{opts.protocol}")
    opts.results_dir = opts.results_dir or os.path.join(REPO, "benchmarks", "results", f"quality_{opts.protocol}")
    opts.archive_dir = opts.archive_dir or os.path.join(REPO, "benchmarks", "results", f"quality_{opts.protocol}_runs")
    methods = [m for m in opts.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    if not os.path.isfile(os.path.join(opts.dataset_dir, opts.train_list)):
        raise SystemExit(f"no {opts.train_list} in {opts.dataset_dir}: pass --dataset_dir (the LA h5 layout).")
    seeds = [int(s) for s in opts.seeds.split(",")]
    counts = [int(c) for c in opts.labeled.split(",")] if opts.labeled else [None]
    opts.num_labeled = counts[0]
    return opts, methods, seeds, counts


def main(argv: list[str] | None = None) -> None:
    parser = arguments(["run", "report", "table"])
    parser.add_argument("--evaluate_stopped", action="store_true",
                        help="run: evaluate a training its time limit stopped (a probe); by default it is left to resume")
    parser.add_argument("--finish_by", default=None,
                        help="run: start a run only if it is expected to end by this time (HH:MM today, or "
                             "YYYY-MM-DDTHH:MM): a session's runs must finish in it; runs already done are read as usual")
    parser.add_argument("--minutes", default="",
                        help="run with --finish_by: expected minutes per method, e.g. ua_mt=65,dtc=27 (default: the "
                             "longest archived run of the method under this tag; a method with neither is started)")
    opts, methods, seeds, counts = options(parser, argv)
    try:
        estimates = {k: float(v) for k, v in (item.split("=") for item in opts.minutes.split(",") if item)}
    except ValueError:
        raise SystemExit(f"--minutes {opts.minutes!r}: give method=minutes pairs, e.g. ua_mt=65,dtc=27.") from None
    end = deadline(opts.finish_by) if opts.finish_by else None
    if opts.command == "run":
        for count in counts:
            opts.num_labeled = count
            for seed in seeds:
                for method in methods:
                    label = f"{method}{opts.tag}{labeled_tag(count)} seed {seed}"
                    done = os.path.isfile(os.path.join(run_dir(opts.work_dir, method, seed, opts.tag + labeled_tag(count)),
                                                       "done.json"))
                    minutes = expected_minutes(opts, method, estimates) if end is not None and not done else None
                    if minutes is not None and time.time() + 60 * minutes > end:
                        print(f"[{time.strftime('%H:%M:%S')}] {label}: expected to take {minutes:.0f} min, would end "
                              f"after {opts.finish_by}; not started", flush=True)
                        continue
                    print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
                    result = run_one(opts, method, seed)
                    if result is None:
                        continue
                    print(f"[{time.strftime('%H:%M:%S')}] {label}: test Dice {result['test']['dice']:.4f} "
                          f"({result.get('train_minutes_all_segments', result['train_minutes']):.1f} min training in "
                          f"{result.get('train_segments', 1)} segment(s))", flush=True)
    elif opts.command == "table":
        print(comparison_table(opts))
    else:
        print(report(opts))


if __name__ == "__main__":
    main()
