# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""``monai_stlu compare``: several methods and seeds trained on one data set under one protocol, then one table.

Every (method, seed) is trained with the bundle's own command (``train.json``, the preset's protocol file, the
method's file), resumed from its checkpoint when a call is repeated, and evaluated on the test list, as the method's
reference evaluates (largest connected component where its reference keeps it; every row is also evaluated without
it). Each semi-supervised method is compared with the supervised-only run of its own recipe (its method file's
``matched_supervised``: the same LR rule and supervised loss), which is added to the runs when not asked for. The
output folder keeps the settings of its first call (``compare.json``: bundle, preset, data, lists, overrides, code
version, training precision) and refuses a call that would add runs made otherwise, unless ``allow_mixed``.

Reference for the paired test: a two-sided sign-flip permutation test of the mean per-case difference (Fisher's
randomisation test; exact for up to 20 cases).
"""

from __future__ import annotations

import ast
import csv
import errno
import io
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "PRESETS", "METRICS", "FAIRNESS_KEYS", "RUN_ONLY_KEYS", "compare", "method_files", "override_values", "resolved", "comparison_report", "run_method", "paired_sign_flip_p", "bundle_call",
    "code_version", "write_text_atomic", "write_json_atomic", "validation_curve", "stopped_at", "record_segment",
    "machine_facts", "training_precision", "training_minutes", "read_cases", "mean_metrics", "distinct",
]

PRESETS = {"cpu": "cpu_protocol.json", "gpu": "gpu_protocol.json", "bundle": None}
METRICS = ("dice", "jaccard", "hd95_vox", "asd_vox", "hd95_mm", "asd_mm")
# the keys that make two runs comparable: a call whose values differ is refused unless allow_mixed
FAIRNESS_KEYS = ("bundle", "preset", "dataset_dir", "train_list", "test_list", "num_labeled", "overrides", "version",
                 "precision")
# overrides that change how a run is carried out, not what it computes: left out of the fairness record
RUN_ONLY_KEYS = ("max_train_seconds", "progress", "log_interval", "num_workers", "plot_progress", "sw_batch_size")
_VAL_LINE = re.compile(r"Epoch\[(\d+)\] Metrics -- .*val_mean_dice: ([0-9.]+)")
_EPOCH_TIME = re.compile(r"SemiSupervisedTrainer: Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):(\d+(?:\.\d+)?)")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bundle_call(args: Sequence[str], log_path: str) -> None:
    """``python -m monai.bundle ARGS`` with its output appended to ``log_path``.

    Raises:
        RuntimeError: the call failed; the message ends with the log's tail (where the bundle's sentence is).
    """
    with open(log_path, "a") as log:
        log.write(f"\n$ python -m monai.bundle {' '.join(args)}\n")
        log.flush()
        proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        raise RuntimeError(f"monai.bundle {args[0]} failed ({proc.returncode}); see {log_path}: "
                           f"{lines[-1] if lines else 'no output'}")


def code_version() -> str:
    """The package version and, in a git checkout, its commit (``+dirty`` when the work tree differs)."""
    from monai_stlu import __version__

    try:
        head = subprocess.run(["git", "-C", _PACKAGE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", _PACKAGE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return f"{__version__} ({head}{'+dirty' if dirty else ''})"


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole: a partial file, then a rename."""
    tmp = path + ".partial"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str, content: Any) -> None:
    write_text_atomic(path, json.dumps(content, indent=2))


def validation_curve(log_path: str, val_interval: int) -> list[tuple[int, float]]:
    """(iteration, validation Dice) pairs from a training log (the evaluator's ``Epoch[k] Metrics`` lines)."""
    if not os.path.isfile(log_path):
        return []
    points = {}
    with open(log_path) as f:
        for line in f:
            m = _VAL_LINE.search(line)
            if m:
                points[int(m.group(1)) * val_interval] = float(m.group(2))
    return sorted(points.items())


def training_minutes(log_path: str) -> tuple[float, int] | None:
    """(minutes, segments) of the training that made a run, from its log: the trainer's epoch times (each with its
    validation), the last one logged for an epoch a resumed run repeated, summed; segments = 1 + the resumes. None
    without epochs."""
    if not os.path.isfile(log_path):
        return None
    epochs: dict[int, float] = {}
    segments = 1
    with open(log_path) as f:
        for line in f:
            segments += "resumed from" in line
            m = _EPOCH_TIME.search(line)
            if m:
                epochs[int(m.group(1))] = int(m.group(2)) * 60 + int(m.group(3)) + float(m.group(4)) / 60
    return (sum(epochs.values()), segments) if epochs else None


def stopped_at(ckpt_dir: str) -> tuple[int, int] | None:
    """``(iteration, planned iterations)`` when the newest checkpoint of a training that exited normally stops short
    of its plan (its time limit ended it), None when it trained to the end. Read from the trainer's own state."""
    import torch

    from monai_stlu.handlers import latest_checkpoint

    newest = latest_checkpoint(ckpt_dir)
    if newest is None:
        return None
    trainer = torch.load(newest, map_location="cpu", weights_only=True)["trainer"]
    planned = int(trainer.get("max_iters") or int(trainer["max_epochs"]) * int(trainer["epoch_length"]))
    return (int(trainer["iteration"]), planned) if int(trainer["iteration"]) < planned else None


def machine_facts(precision: str) -> dict:
    """Where a training segment runs: the CPU's name (and GPU's), the threads, torch and the training precision."""
    import torch

    from monai_stlu.utils import cpu_name

    facts = {"cpu": cpu_name()}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    facts.update(threads=torch.get_num_threads(), torch=torch.__version__, precision=precision)
    return facts


def record_segment(out: str, commit: str, machine: dict | None = None) -> list[dict]:
    """Append ``commit`` (:py:func:`code_version`), the time and ``machine`` (:py:func:`machine_facts`) to
    ``segments.json`` in the run folder; return every segment so far, in order (a resumed run has several). A folder
    with a training log but no record says ``"unrecorded"`` first."""
    path = os.path.join(out, "segments.json")
    segments = []
    if os.path.isfile(path):
        with open(path) as f:
            segments = json.load(f)
    elif os.path.isfile(os.path.join(out, "train.log")):
        segments.append({"commit": "unrecorded", "started": None})
    segments.append({"commit": commit, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **(machine or {})})
    write_json_atomic(path, segments)
    return segments


def distinct(segments: Sequence[Mapping], key: str) -> list:
    """The distinct values of ``key`` over the segments that recorded it, in order."""
    return list(dict.fromkeys(s[key] for s in segments if key in s))


def read_cases(path: str) -> list[dict]:
    """The foreground rows of a bundle's ``metrics.csv``."""
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get("class", "1") == "1"]


def mean_metrics(path: str) -> dict[str, float]:
    rows = read_cases(path)
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in METRICS}


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override_values(args: Sequence[str]) -> dict[str, Any]:
    """``--key value`` (and ``--key=value``) pairs as the bundle reads them: Python literals where they parse."""
    values = {}
    for i, name in enumerate(args):
        if not str(name).startswith("--"):
            continue
        name, eq, text = str(name)[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or str(args[i + 1]).startswith("--"):
                continue
            text = str(args[i + 1])
        values[name] = _literal(text)
    return values


def resolved(files: Sequence[str], args: Sequence[str], *keys: str) -> list[Any]:
    """``keys`` as the bundle resolves them from ``files`` and the ``--key value`` arguments ``args``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(files))
    parser.update(override_values(args))
    return [parser.get_parsed_content(k) for k in keys]


def training_precision(files: Sequence[str], args: Sequence[str]) -> str:
    """The precision the bundle trains in on this machine: ``amp`` and ``amp_dtype`` resolved as the trainer resolves
    them (:py:func:`monai_stlu.utils.autocast_dtype` on the bundle's device), e.g. ``"float32"``."""
    import torch

    from monai_stlu.utils import as_bool, autocast_dtype

    amp, amp_dtype = resolved(files, args, "amp", "amp_dtype")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = autocast_dtype(device, amp_dtype) if as_bool(amp) else None
    return str(dtype or torch.float32).replace("torch.", "")


def method_files(configs: str, method: str, preset: str | None, *more: str) -> list[str]:
    """The config files of one run: ``train.json``, the preset's protocol file, the method's file (none for the
    bundle's own ``stlu``), then ``more`` (e.g. ``evaluate.json``)."""
    files = [os.path.join(configs, "train.json")]
    if PRESETS.get(preset or "bundle"):
        files.append(os.path.join(configs, PRESETS[preset]))
    if method != "stlu":
        files.append(os.path.join(configs, "methods", f"{method}.json"))
    return files + [os.path.join(configs, m) for m in more]


def _config_arg(files: Sequence[str]) -> str:
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def run_method(
    configs: str, preset: str | None, method: str, seed: int, out: str, args: Sequence[str],
    evaluate_stopped: bool = False, summary_extra: Mapping[str, Any] | None = None,
) -> dict | None:
    """Train one method with one seed in ``out`` (resuming its checkpoint), then evaluate it on the test list;
    cached by ``out/done.json``.

    Args:
        configs: the bundle's ``configs`` folder.
        preset: a key of :py:data:`PRESETS`.
        method: a method file's name, or ``stlu``.
        seed: the run's seed.
        out: the run's folder (``models/``, ``train/``, ``test/``, logs, ``segments.json``, ``done.json``).
        args: the bundle arguments of every call (data, lists, overrides: ``--key value`` pairs).
        evaluate_stopped: evaluate a training its time limit stopped (else it is left for the same call to resume).
        summary_extra: more items for ``done.json``.

    Returns:
        the run's summary (what ``done.json`` holds), or None when its time limit stopped it before the end.
    """
    done = os.path.join(out, "done.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    train_files = method_files(configs, method, preset)
    common = [*args, "--seed", str(seed), "--ckpt_dir", os.path.join(out, "models"),
              "--bundle_root", os.path.dirname(configs)]
    segments = record_segment(out, code_version(), machine_facts(training_precision(train_files, common)))
    commits, precisions = distinct(segments, "commit"), distinct(segments, "precision")
    for what, values in (("version of the code", commits), ("precision", precisions)):
        if len(values) > 1:
            print(f"note: {out} was trained with more than one {what}: {', '.join(values)} (see its segments.json)",
                  flush=True)
    start = time.time()
    bundle_call(["run", "training", "--config_file", _config_arg(train_files), *common,
                 "--output_dir", os.path.join(out, "train")], os.path.join(out, "train.log"))
    trained = time.time()
    stopped = stopped_at(os.path.join(out, "models"))
    if stopped is not None and not evaluate_stopped:
        print(f"{out}: stopped by its time limit at iteration {stopped[0]} of {stopped[1]}, not evaluated; the same "
              "command resumes it.", flush=True)
        return None
    eval_files = method_files(configs, method, preset, "evaluate.json")
    bundle_call(["run", "--config_file", _config_arg(eval_files), *common, "--output_dir", os.path.join(out, "test")],
                os.path.join(out, "eval.log"))
    from monai_stlu.utils import as_bool

    keeps_lcc, val_interval, max_iterations, matched = resolved(
        train_files, common, "largest_component", "val_interval", "max_iterations", "matched_supervised")
    summary = {"method": method, "seed": seed, "matched_supervised": matched, "commit": commits[-1],
               "commits": commits, "precisions": precisions, "cpus": distinct(segments, "cpu"),
               "train_minutes": (trained - start) / 60, "val_interval": int(val_interval),
               "max_iterations": int(max_iterations), "largest_component": as_bool(keeps_lcc), **(summary_extra or {})}
    if as_bool(keeps_lcc):  # every row is also evaluated without the largest-component step
        unprocessed = os.path.join(out, "test_without_largest_component")
        bundle_call(["run", "--config_file", _config_arg(eval_files), *common, "--largest_component", "false",
                     "--output_dir", unprocessed], os.path.join(out, "eval.log"))
        summary["test_without_largest_component"] = mean_metrics(os.path.join(unprocessed, "metrics.csv"))
    summary["eval_minutes"] = (time.time() - trained) / 60
    summary["test"] = mean_metrics(os.path.join(out, "test", "metrics.csv"))
    if stopped is not None:
        summary["stopped_at_iteration"] = stopped[0]
    timing = training_minutes(os.path.join(out, "train.log"))
    if timing:
        summary["train_minutes_all_segments"], summary["train_segments"] = timing
    curve = validation_curve(os.path.join(out, "train.log"), int(val_interval))
    text = io.StringIO()
    csv.writer(text).writerows([("iteration", "dice"), *curve])
    write_text_atomic(os.path.join(out, "validation.csv"), text.getvalue())
    write_json_atomic(done, summary)
    return summary


def paired_sign_flip_p(differences: Sequence[float], draws: int = 100_000) -> float:
    """Two-sided p-value of a sign-flip permutation test that the mean of paired ``differences`` is zero: the share
    of sign assignments whose absolute mean is at least the observed one (all 2^n for n <= 20, else ``draws``
    random ones from a fixed generator, the observed assignment counted)."""
    import numpy as np

    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0 or not np.any(d):
        return 1.0
    observed = abs(d.mean()) - 1e-12 * max(1.0, float(np.abs(d).max()))
    if d.size <= 20:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(draws, d.size))
        signs = np.vstack([np.ones((1, d.size)), signs])
    return float(np.mean(np.abs(signs @ d / d.size) >= observed))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5


def _finished(out: str) -> dict[str, dict[int, tuple[str, dict]]]:
    """method -> seed -> (run folder, summary) of every finished run in ``out/runs``."""
    runs: dict[str, dict[int, tuple[str, dict]]] = {}
    root = os.path.join(out, "runs")
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        done = os.path.join(root, name, "done.json")
        if os.path.isfile(done):
            with open(done) as f:
                summary = json.load(f)
            runs.setdefault(summary["method"], {})[int(summary["seed"])] = (os.path.join(root, name), summary)
    return runs


def _test_metrics(folder: str) -> str:
    """A run's per-case test metrics: ``test/metrics.csv`` in a run folder, ``test_metrics.csv`` in an archived one."""
    inside = os.path.join(folder, "test", "metrics.csv")
    return inside if os.path.isfile(inside) else os.path.join(folder, "test_metrics.csv")


def _curve(folder: str, summary: Mapping[str, Any]) -> list[tuple[int, float]]:
    """A run's validation curve: its ``validation.csv``, else read from its training log."""
    path = os.path.join(folder, "validation.csv")
    if os.path.isfile(path):
        with open(path) as f:
            return [(int(r["iteration"]), float(r["dice"])) for r in csv.DictReader(f)]
    return validation_curve(os.path.join(folder, "train.log"), int(summary.get("val_interval", 1)))


def _case_dice(runs: Mapping[int, tuple[str, dict]], seeds: Sequence[int]) -> dict[str, float]:
    """case -> test Dice (%) averaged over ``seeds``."""
    per_case: dict[str, list[float]] = {}
    for seed in seeds:
        for row in read_cases(_test_metrics(runs[seed][0])):
            per_case.setdefault(row["case"], []).append(100 * float(row["dice"]))
    return {c: sum(v) / len(v) for c, v in per_case.items() if len(v) == len(seeds)}


def _at_fraction(curve: Sequence[tuple[int, float]], fraction: float, total: int) -> float | None:
    """The validation Dice at the last validation at or before ``fraction`` of the run."""
    points = [d for i, d in curve if i <= fraction * total]
    return points[-1] if points else None


def comparison_report(
    out: str, order: Sequence[str] | None = None, runs: Mapping[str, Mapping[int, tuple[str, dict]]] | None = None,
    configs: str | None = None,
) -> str:
    """Write ``comparison.md`` (the table and the verdict), ``summary.csv``, ``per_case.csv`` and, with matplotlib,
    ``learning_curves.png`` in ``out``; return the Markdown.

    Args:
        out: the comparison folder.
        order: the methods' order in the table (others follow, sorted).
        runs: method -> seed -> (run folder, its ``done.json``); default the finished runs in ``out/runs``. Archived
            runs (``test_metrics.csv``, ``validation.csv``) are read too.
        configs: a bundle's configs folder: each run is paired with the supervised run its method file names now
            (else the one its record names), and a record without its budget reads it from its overrides.
    """
    from monai_stlu.utils.settings_check import top_level_values

    runs = _finished(out) if runs is None else runs
    for method, seeds in runs.items():
        # which supervised run shares a method's recipe is a label, not a training setting: with ``configs`` the
        # current method file's, so that a recipe added since (supervised_ssnet) pairs the runs recorded before it
        current = top_level_values(method_files(configs, method, None)) if configs else {}
        for _, summary in seeds.values():
            if "max_iterations" not in summary:
                summary["max_iterations"] = int(override_values(summary.get("override") or []).get(
                    "max_iterations", summary.get("max_iterations", 0)))
            if configs:
                summary["matched_supervised"] = current.get("matched_supervised", summary.get("matched_supervised"))
    if not runs:
        raise ValueError(f"{out}: no finished run to report (runs/*/done.json); run the comparison first.")
    methods = [m for m in (order or []) if m in runs] + sorted(m for m in runs if m not in (order or []))
    rows, per_case_rows, csv_rows, curves = [], [], [], {}
    stats: dict[str, dict[str, Any]] = {}
    for method in methods:
        seeds = sorted(runs[method])
        summaries = [runs[method][s][1] for s in seeds]
        seed_dice = [100 * s["test"]["dice"] for s in summaries]
        dice_m, dice_s = _mean_std(seed_dice)
        metrics = {k: _mean_std([s["test"][k] * (100 if k in ("dice", "jaccard") else 1) for s in summaries])
                   for k in METRICS}
        raw = [100 * s.get("test_without_largest_component", s["test"])["dice"] for s in summaries]
        at60, best = [], []
        for seed, s in zip(seeds, summaries):
            curve = _curve(runs[method][seed][0], s)
            curves.setdefault(method, []).append(curve)
            if curve:
                best.append(100 * max(d for _, d in curve))
                v = _at_fraction(curve, 0.6, s["max_iterations"])
                at60.append(100 * v if v is not None else math.nan)
            for row in read_cases(_test_metrics(runs[method][seed][0])):
                per_case_rows.append([method, seed, row["case"], *(row[k] for k in METRICS)])
        versions = sorted({c for s in summaries for c in s.get("commits", [s.get("commit", "?")])})
        precisions = sorted({p for s in summaries for p in s.get("precisions", [])})
        stats[method] = {"seeds": seeds, "dice": dice_m, "matched": summaries[0].get("matched_supervised")}
        matched = stats[method]["matched"]
        gain = "—"
        if matched and matched != method and matched in runs:
            common = sorted(set(seeds) & set(runs[matched]))
            a, b = _case_dice(runs[method], common), _case_dice(runs[matched], common)
            cases = sorted(set(a) & set(b))
            if common and cases:
                diff = [a[c] - b[c] for c in cases]
                d, p = sum(diff) / len(diff), paired_sign_flip_p(diff)
                stats[method].update(gain=d, p=p, cases=len(cases))
                gain = f"{d:+.2f} (p {p:.3f}, {len(cases)} cases, seeds {','.join(map(str, common))})"
        conv = "—"
        if at60 and best and not any(math.isnan(v) for v in at60):
            gap = sum(best) / len(best) - sum(at60) / len(at60)
            conv = f"{sum(at60) / len(at60):.2f} / {sum(best) / len(best):.2f} ({'yes' if gap <= 2.0 else 'no'})"
        minutes = sum(s.get("train_minutes_all_segments", s.get("train_minutes", 0.0)) for s in summaries) / len(summaries)
        spread = f" ± {dice_s:.2f}" if len(seeds) > 1 else ""
        rows.append(f"| {method} | `{matched}` | {','.join(map(str, seeds))} | {dice_m:.2f}{spread} | "
                    f"{metrics['jaccard'][0]:.2f} | {metrics['hd95_mm'][0]:.2f} | {metrics['asd_mm'][0]:.2f} | "
                    f"{sum(raw) / len(raw):.2f} | {gain} | {conv} | {minutes:.1f} | {', '.join(precisions)} | "
                    f"{', '.join(versions)} |")
        csv_rows += [[method, k, *metrics[k], len(seeds)] for k in METRICS]
    head = ("| method | its recipe's supervised run | seeds | test Dice % (mean ± std over seeds) | Jaccard % | "
            "HD95 mm | ASD mm | Dice % without the largest component | gain over its supervised run, Dice points "
            "(paired sign-flip p) | validation Dice % at 60 % / best (converged: within 2) | training min | "
            "precision | code |")
    lines = [head, "|" + "---|" * 13, *rows, "", *_verdict(stats, runs)]
    text = "\n".join(lines) + "\n"
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "comparison.md"), text)
    buf = io.StringIO()
    csv.writer(buf).writerows([["method", "metric", "mean", "std_over_seeds", "seeds"], *csv_rows])
    write_text_atomic(os.path.join(out, "summary.csv"), buf.getvalue())
    buf = io.StringIO()
    csv.writer(buf).writerows([["method", "seed", "case", *METRICS], *per_case_rows])
    write_text_atomic(os.path.join(out, "per_case.csv"), buf.getvalue())
    _plot_curves(curves, os.path.join(out, "learning_curves.png"))
    return text


def _verdict(stats: Mapping[str, Mapping[str, Any]], runs: Mapping) -> list[str]:
    """A few sentences: the highest mean test Dice, whether the runner-up is distinguishable from it on these
    cases, and which semi-supervised methods beat the supervised run of their own recipe (and which fall below it)."""
    ranked = sorted(stats, key=lambda m: -stats[m]["dice"])
    best = ranked[0]
    lines = [f"**Which method.** Highest mean test Dice: **{best}** ({stats[best]['dice']:.2f} %, "
             f"{len(stats[best]['seeds'])} seed(s))."]
    if len(ranked) > 1:
        second = ranked[1]
        common = sorted(set(stats[best]["seeds"]) & set(stats[second]["seeds"]))
        a, b = _case_dice(runs[best], common), _case_dice(runs[second], common)
        cases = sorted(set(a) & set(b))
        if cases:
            diff = [a[c] - b[c] for c in cases]
            p = paired_sign_flip_p(diff)
            lines.append(f"Next: {second} ({stats[second]['dice']:.2f} %); per case {best} is "
                         f"{sum(diff) / len(diff):+.2f} points (paired p {p:.3f} over {len(cases)} cases): "
                         + ("a difference these cases support." if p < 0.05 else
                            "not distinguishable on these cases; more seeds or test cases would be needed."))
    gains = [m for m in ranked if "gain" in stats[m]]
    if gains:
        helped = [m for m in gains if stats[m]["gain"] > 0 and stats[m]["p"] < 0.05]
        harmed = [m for m in gains if stats[m]["gain"] < 0 and stats[m]["p"] < 0.05]
        lines.append("Gain from the unlabeled images (against the supervised run of the same recipe, p < 0.05): "
                     + (", ".join(f"{m} {stats[m]['gain']:+.2f}" for m in helped) if helped else "none")
                     + ("; below that run (p < 0.05): " + ", ".join(f"{m} {stats[m]['gain']:+.2f}" for m in harmed)
                        if harmed else "")
                     + "; no difference shown: "
                     + (", ".join(m for m in gains if m not in helped and m not in harmed) or "none") + ".")
    lines.append("The test cases choose nothing here: models are selected on the validation cases; the test list "
                 "only scores them.")
    return lines


def _plot_curves(curves: Mapping[str, list], path: str) -> None:
    """Validation Dice against iteration, one colour per method, one line per seed (nothing without matplotlib)."""
    from monai.utils import optional_import

    matplotlib, has_mpl = optional_import("matplotlib")
    if not has_mpl:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, seeds) in enumerate(curves.items()):
        for j, curve in enumerate(c for c in seeds if c):
            ax.plot(*zip(*curve), color=f"C{i % 10}", linestyle=["-", "--", ":", "-."][(i // 10) % 4], marker="o",
                    markersize=3, alpha=0.85, label=method if j == 0 else None)
    ax.set(xlabel="iteration", ylabel="validation Dice", title="validation Dice (each seed a line)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path + ".partial.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def compare(
    bundle: str = "stlu_la",
    dataset_dir: str | None = None,
    methods: str | Sequence[str] = "supervised,mean_teacher,stlu",
    seeds: str | Sequence[int] = "0,1,2",
    preset: str = "cpu",
    o: str = "compare",
    train_list: str | None = None,
    test_list: str | None = None,
    num_labeled: int | None = None,
    allow_mixed: bool = False,
    report_only: bool = False,
    **overrides: Any,
) -> str:
    """Train and evaluate ``methods`` x ``seeds`` under one protocol on your data, then write the comparison.

    Args:
        bundle: ``stlu_la``, ``stlu_pancreas``, ``stlu_brats`` or a bundle folder.
        dataset_dir: the data folder, in the bundle's layout (default: the bundle's).
        methods: comma-separated method files of the bundle (``configs/methods``) or ``stlu``; the supervised run of
            each method's recipe is added.
        seeds: comma-separated seeds; every method runs every seed.
        preset: ``cpu`` or ``gpu`` (the bundle's ``cpu_protocol.json`` / ``gpu_protocol.json``: crops, filters,
            iterations, float32 on the CPU) or ``bundle`` (the bundle's own settings).
        o: the output folder: ``runs/<method>_seed<seed>/`` and ``comparison.md``, ``summary.csv``, ``per_case.csv``,
            ``learning_curves.png``. The same call again resumes what is unfinished.
        train_list: the training list in ``dataset_dir`` (default: the preset's when the folder has it, else the
            bundle's).
        test_list: the test list (the same rule).
        num_labeled: labeled cases (default: the preset's or the bundle's).
        allow_mixed: add runs to a folder made with other settings, code or precision (the table names each run's).
        report_only: write the table from the finished runs, train nothing.
        overrides: further bundle keys for every run, e.g. ``--max_iterations 2000`` (part of the settings).

    Returns:
        the comparison as Markdown (also in ``o/comparison.md``).
    """
    from monai_stlu.cli import _bundle_configs, _check_bundle_command, _override_args
    from monai_stlu.utils.settings_check import top_level_values

    configs = _bundle_configs(bundle)
    out = os.path.abspath(str(o))
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(errno.ENOTDIR, f"{out}: -o names a file; give a folder (new, or one to resume).")
    if report_only:
        return comparison_report(out)
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not one of {sorted(PRESETS)}.")
    preset_file = os.path.join(configs, PRESETS[preset]) if PRESETS[preset] else None
    if preset_file and not os.path.isfile(preset_file):
        raise FileNotFoundError(f"{preset_file}: the bundle has no {preset} preset; give --preset bundle, or write that "
                                "file (the LA bundle's is an example).")
    known = sorted(os.path.basename(p)[:-5] for p in os.listdir(os.path.join(configs, "methods")) if p.endswith(".json"))
    asked = _as_list(methods)
    unknown = [m for m in asked if m not in known and m != "stlu"]
    if not asked or unknown:
        raise ValueError(f"--methods {','.join(unknown) or '(none)'}: not a method of {configs}/methods; "
                         f"the methods are {', '.join(sorted({'stlu', *known}))}.")
    seed_list = []
    for s in _as_list(seeds):
        if not s.isdigit():
            raise ValueError(f"--seeds {s!r}: seeds are whole numbers, e.g. --seeds 0,1,2.")
        seed_list.append(int(s))
    if not seed_list:
        raise ValueError("--seeds (none): give at least one seed, e.g. --seeds 0,1,2.")
    order = []
    for method in asked:
        matched = top_level_values(method_files(configs, method, preset)).get("matched_supervised")
        order += [m for m in (matched, method) if m and m not in order]
    preset_values = top_level_values([os.path.join(configs, "train.json")] + ([preset_file] if preset_file else []))
    data = os.path.abspath(str(dataset_dir)) if dataset_dir is not None else None
    if data and not os.path.isdir(data):
        raise FileNotFoundError(errno.ENOENT, f"{data}: no such folder (--dataset_dir).")
    data_root = data or str(preset_values.get("dataset_dir", ""))
    lists = {}
    for key, given in (("train_list", train_list), ("test_list", test_list)):
        default = str(preset_values.get(key, ""))
        name = str(given) if given is not None else default
        if data and not os.path.isfile(os.path.join(data, name)):
            if given is not None or not os.path.isfile(os.path.join(data, "train.list" if key == "train_list" else "test.list")):
                raise FileNotFoundError(f"{os.path.join(data, name)}: no such {key.replace('_', ' ')}; give "
                                        f"--{key} NAME (a file in --dataset_dir).")
            name = "train.list" if key == "train_list" else "test.list"
        lists[key] = name
    args = [*(["--dataset_dir", data] if data else []), "--train_list", lists["train_list"],
            "--test_list", lists["test_list"], *(["--num_labeled", str(int(num_labeled))] if num_labeled else [])]
    val_ids = preset_values.get("val_ids")
    listing = os.path.join(data_root, lists["train_list"])
    if isinstance(val_ids, list) and os.path.isfile(listing):  # the preset's named validation cases, if this data has them
        with open(listing) as f:
            listed = {line.strip() for line in f if line.strip()}
        if not set(val_ids) <= listed:
            args += ["--val_ids", "[]"]  # (None would be dropped by the bundle runner): the bundle's num_val split
    args += _override_args(overrides)
    settings = {"bundle": os.path.basename(os.path.dirname(configs)), "preset": preset, "dataset_dir": data_root,
                "train_list": lists["train_list"], "test_list": lists["test_list"], "num_labeled": num_labeled,
                "overrides": dict(zip(*[iter(_override_args({k: v for k, v in overrides.items()
                                                              if k not in RUN_ONLY_KEYS}))] * 2)),
                "version": code_version(),
                "precision": training_precision(method_files(configs, "stlu", preset), args)}
    for method in order:  # what each run's command line would refuse (a misspelled key, --max_iterations abc)
        _check_bundle_command(["monai.bundle", "run", "training", "--config_file",
                               _config_arg(method_files(configs, method, preset)), *args])
    os.makedirs(out, exist_ok=True)
    record = os.path.join(out, "compare.json")
    if os.path.isfile(record):
        with open(record) as f:
            first = json.load(f)
        before, now = dict(first.get("overrides") or {}), settings["overrides"]
        changed = [f"{k} {first.get(k)!r} there, {settings[k]!r} now" for k in FAIRNESS_KEYS
                   if k != "overrides" and first.get(k) != settings[k]]
        changed += [f"{k.lstrip('-')} {before.get(k, '(not given)')} there, {now.get(k, '(not given)')} now"
                    for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if changed and not allow_mixed:
            what = "; ".join(changed)
            raise ValueError(f"{record}: its runs were made otherwise ({what}); use a new -o folder, or "
                             "--allow_mixed to add runs anyway (the table names each run's code and precision).")
    else:
        write_json_atomic(record, settings)
    stopped = []
    for seed in seed_list:
        for method in order:
            label = f"{method} seed {seed}"
            print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
            result = run_method(configs, preset, method, seed, os.path.join(out, "runs", f"{method}_seed{seed}"), args)
            if result is None:
                stopped.append(label)
            else:
                print(f"[{time.strftime('%H:%M:%S')}] {label}: test Dice {100 * result['test']['dice']:.2f} %",
                      flush=True)
    if not _finished(out):
        text = f"{out}: no run has finished yet ({', '.join(stopped)} stopped by the time limit); the same command " \
               "resumes them."
        print(text)
        return text
    text = comparison_report(out, order)
    if stopped:
        text += f"\nNot finished (stopped by the time limit; the same command resumes them): {', '.join(stopped)}.\n"
    print(text)
    return text
