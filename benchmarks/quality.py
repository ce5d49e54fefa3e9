# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The real-data quality protocol: does a method learn from unlabeled images?

Every (method, seed) is trained with the LA bundle's own command and a protocol override file
(``configs/cpu_protocol.json`` or ``configs/gpu_protocol.json``), selected on the named validation cases, evaluated on
the test list, and cached: an interrupted or repeated run resumes its checkpoint or skips what is done.

    python benchmarks/quality.py run --protocol cpu --methods supervised,mean_teacher,stlu --seeds 0,1
    python benchmarks/quality.py report --protocol cpu
    python benchmarks/quality.py table --archive_dir DIR --tag _half2500 --results_dir OUT   # monai_stlu compare's table
    python benchmarks/quality.py robustness --protocol cpu --sigmas 0.1,0.2,0.3,0.4,0.5   # noisy test images
    python benchmarks/quality.py run --protocol cpu --labeled 4,8,16 --seeds 0            # label-ratio sweep
    python benchmarks/quality.py run --protocol cpu --methods stlu --tag _cascade --override --dropout_placement cascade
    python benchmarks/quality.py bn_check --protocol cpu --seeds 0,1    # BatchNorm statistics from clean passes
    python benchmarks/quality.py margin --protocol cpu --methods cct --seeds 1   # foreground just under the threshold?

``run`` works in ``--work_dir`` (default ``benchmarks/work/quality_<protocol>``, git-ignored): per run its
checkpoints, ``train.log``, ``pseudo_label_quality.csv``, the test metrics and predictions, and ``done.json``. A
training its time limit stops (``--override --max_train_seconds N``) is left to resume, not evaluated, unless
``--evaluate_stopped`` asks for a probe of what the budget reaches.
Every finished run is also kept in ``--archive_dir`` (default ``benchmarks/results/quality_<protocol>_runs``, meant to be
committed): its ``done.json``, ``segments.json``, per-case test metrics, validation curve and pseudo-label quality, a
few KB that outlive the work folder. ``report`` reads the archive (after archiving any finished run of the work folder
it lacks) and writes ``benchmarks/results/quality_<protocol>/``: ``summary.md`` / ``summary.csv`` (Dice, Jaccard, HD95 and
ASD in voxels and mm, mean ± std over cases and seeds, and the per-seed means), ``per_case.csv``,
``learning_curves.png`` (validation Dice against iteration; beside it the pseudo-label quality: Dice of each
semi-supervised method's pseudo-labels against the true labels of "unlabeled" training cases), ``overlay.png`` (an
axial slice through each test case, one row per method: image, ground-truth and predicted contours, the case's
Dice), ``label_sweep.png`` for runs of ``--labeled``; ``robustness`` writes ``robustness.md``, ``bn_check``
writes ``bn_check.md`` and ``margin`` writes ``margin.md``.
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
    METRICS, bundle_call as bundle, comparison_report, mean_metrics, read_cases, resolved, run_method,
    validation_curve, write_text_atomic,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "bundles", "stlu_la", "configs")
METHODS = (
    "supervised", "supervised_ssl4mis", "supervised_uamt", "mean_teacher", "ua_mt", "cps", "mcnet_plus", "bcp", "dtc",
    "sassnet", "ssnet", "dan", "urpc", "cct", "ict", "mcnet", "ml", "mcf", "tracoco", "stlu",
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


def finished_runs(opts: argparse.Namespace, methods: list[str], seeds: list[int]):
    """``(method, seed, run folder)`` of every finished run among ``methods`` x ``seeds`` (others are named, skipped)."""
    for method in methods:
        for seed in seeds:
            out = run_dir(opts.work_dir, method, seed, opts.tag + labeled_tag(opts.num_labeled))
            if os.path.isfile(os.path.join(out, "done.json")):
                yield method, seed, out
            else:
                print(f"{method} seed {seed}: not trained yet, skipped", flush=True)


def robustness(opts: argparse.Namespace, methods: list[str], seeds: list[int], sigmas: list[float]) -> str:
    """Evaluate every finished (method, seed) with Gaussian noise of each ``sigma`` added to the test images; cached
    per sigma. Returns the Dice table (mean over cases and seeds) and writes it to ``robustness.md``."""
    table = {}
    for method, seed, out in finished_runs(opts, methods, seeds):
        for sigma in sigmas:
            folder = os.path.join(out, f"test_noise{sigma:g}")
            if not os.path.isfile(os.path.join(folder, "metrics.csv")):
                args = ["run", "--config_file", config_files(opts.protocol, method, "evaluate.json"),
                        "--dataset_dir", opts.dataset_dir, "--train_list", opts.train_list,
                        "--test_list", opts.test_list, "--seed", str(seed), "--bundle_root",
                        os.path.join(CONFIGS, ".."), "--ckpt_dir", os.path.join(out, "models"),
                        "--output_dir", folder, "--eval_noise_std", str(sigma), "--save_predictions", "false",
                        *opts.override]
                bundle(args, os.path.join(out, "robustness.log"))
            dice = mean_metrics(os.path.join(folder, "metrics.csv"))["dice"]
            table.setdefault(method, {}).setdefault(sigma, []).append(dice)
    lines = ["| method | " + " | ".join(f"σ {s:g}" for s in sigmas) + " |", "|---|" + "---|" * len(sigmas)]
    for method, by_sigma in table.items():
        cells = (by_sigma[s] for s in sigmas)
        lines.append(f"| {method} | " + " | ".join(f"{100 * sum(v) / len(v):.2f}" for v in cells) + " |")
    os.makedirs(opts.results_dir, exist_ok=True)
    with open(os.path.join(opts.results_dir, "robustness.md"), "w") as f:
        f.write("Test Dice % (mean over cases and seeds) with Gaussian noise of std σ added to the z-scored images\n\n")
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def run_parser(opts: argparse.Namespace, method: str, seed: int, out: str, output_subdir: str):
    """The bundle configuration of the finished run in ``out`` as ``run`` ran it (protocol, method, seed, overrides),
    initialised; its outputs go to ``out/output_subdir``."""
    from fire.parser import DefaultParseValue  # how `python -m monai.bundle` reads a command-line value
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_paths(opts.protocol, method))
    it = iter(opts.override)
    parser.update({
        "dataset_dir": opts.dataset_dir, "train_list": opts.train_list, "test_list": opts.test_list,
        "seed": seed, "bundle_root": os.path.join(CONFIGS, ".."), "ckpt_dir": os.path.join(out, "models"),
        "output_dir": os.path.join(out, output_subdir), "progress": False,
        **({"num_labeled": opts.num_labeled} if opts.num_labeled is not None else {}),
        **{k.lstrip("-"): DefaultParseValue(v) for k, v in zip(it, it)},
    })
    parser.get_parsed_content("initialize")
    return parser


def kept_network(parser, out: str):
    """The run's network with the weights it kept (``models/model.pt``, the best on validation)."""
    import torch

    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(os.path.join(out, "models", "model.pt"), map_location="cpu", weights_only=True))
    return network


def validation_probabilities(network, parser):
    """Per validation case (the model-selection cases), the network's class probabilities ``(C, *spatial)`` from the
    bundle's validation inferer, in float32, and the foreground mask ``label > 0``."""
    import torch

    loader, inferer = parser.get_parsed_content("validate#dataloader"), parser.get_parsed_content("validate#inferer")
    device = parser.get_parsed_content("device")
    network.eval()
    with torch.no_grad():
        for batch in loader:
            probs = torch.softmax(inferer(batch["image"].to(device), network).float(), dim=1).cpu()
            yield from zip(probs, torch.as_tensor(batch["label"])[:, 0] > 0)


def validation_dice(network, parser) -> float:
    """Mean Dice of the argmax foreground over the validation cases, as validation in training scores it."""
    from monai_stlu.metrics import dice_score
    from monai_stlu.utils import argmax

    dice = [dice_score(argmax(p, 0) > 0, lab) for p, lab in validation_probabilities(network, parser)]
    return sum(dice) / len(dice)


def bn_check(opts: argparse.Namespace, methods: list[str], seeds: list[int], batches: int) -> str:
    """Validation Dice of each finished (method, seed) model as trained, and after its BatchNorm running statistics
    are recomputed from clean forward passes (no mixing, dropout or teacher) over ``batches`` labeled and unlabeled
    training batches. A diagnostic of the train/eval gap that perturbation-based methods can open (their BatchNorm
    layers only ever see perturbed features in training); validation cases only. Writes ``bn_check.md``."""
    import copy

    import torch

    lines = ["| method | seed | validation Dice as trained | after BN recomputed from clean passes | change |",
             "|---|---|---|---|---|"]
    for method, seed, out in finished_runs(opts, methods, seeds):
        parser = run_parser(opts, method, seed, out, "bn_check")
        network = kept_network(parser, out)
        device = parser.get_parsed_content("device")
        before = validation_dice(network, parser)
        clean = copy.deepcopy(network).train()
        for m in clean.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the passes
            elif isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.eval()
        loaders = [parser.get_parsed_content("train#dataloader")]
        if parser.get_parsed_content("method").uses_unlabeled:
            loaders.append(parser.get_parsed_content("train#unlabeled_dataloader"))
        with torch.no_grad():
            for loader in loaders:
                done = 0
                while done < batches:
                    for batch in loader:
                        clean(torch.as_tensor(batch["image"]).to(device))  # one tensor: the plain network
                        done += 1
                        if done == batches:
                            break
        after = validation_dice(clean, parser)
        lines.append(f"| {method}{opts.tag} | {seed} | {100 * before:.2f} | {100 * after:.2f} | {100 * (after - before):+.2f} |")
        print(lines[-1], flush=True)
    os.makedirs(opts.results_dir, exist_ok=True)
    with open(os.path.join(opts.results_dir, "bn_check.md"), "w") as f:
        f.write(f"Validation Dice % (the model-selection cases) as trained and after BatchNorm statistics recomputed from "
                f"{batches} clean batches per training loader\n\n" + "\n".join(lines) + "\n")
    return "\n".join(lines)


def head_can_score_foreground(network) -> bool | None:
    """Whether the network's segmentation head (its first module named ``head``: a 1x1 convolution on the last
    decoder features, which are a ReLU output and so non-negative) can score some foreground class above the
    background for some input. For weights ``W`` and bias ``b`` the logit difference ``(W_c - W_0) . h + b_c - b_0``
    is positive for some ``h >= 0`` exactly when ``b_c > b_0`` or some entry of ``W_c - W_0`` is positive. ``False``
    means no image can produce a foreground voxel; ``None`` when the network has no such head. A one-channel head
    (:py:class:`~monai_stlu.networks.nets.SDFVNet`'s foreground logit against a background fixed at 0) is read with
    ``W_0 = 0, b_0 = 0``."""
    import torch

    head = next((m for name, m in network.named_modules() if name.rsplit(".", 1)[-1] == "head"), None)
    if not isinstance(head, torch.nn.modules.conv._ConvNd):
        return None
    w = head.weight.detach().flatten(1)
    b = head.bias.detach() if head.bias is not None else torch.zeros(head.out_channels)
    if head.out_channels == 1:
        w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b])
    return bool(((w[1:] - w[:1]).amax(dim=1).gt(0) | (b[1:] - b[:1]).gt(0)).any())


def margin(opts: argparse.Namespace, methods: list[str], seeds: list[int]) -> str:
    """Where each finished (method, seed) model puts the foreground probability inside the true label of the
    validation cases, and whether its head can score foreground at all: tells a model that learned nothing from one
    whose foreground probability sits just under the argmax threshold. Validation cases only, nothing is chosen from
    it. Writes ``margin.md``."""
    import torch

    from monai_stlu.metrics import dice_score
    from monai_stlu.utils import argmax

    lines = ["| method | seed | validation Dice | median foreground probability inside the label | label voxels at "
             "0.4-0.5 | label voxels at >= 0.5 | head can score foreground |", "|---|---|---|---|---|---|---|"]
    for method, seed, out in finished_runs(opts, methods, seeds):
        parser = run_parser(opts, method, seed, out, "margin")
        network = kept_network(parser, out)
        dice, inside = [], []
        for probs, label in validation_probabilities(network, parser):
            dice.append(dice_score(argmax(probs, 0) > 0, label))
            inside.append((1 - probs[0])[label])
        fg = torch.cat(inside)
        reach = {True: "yes", False: "no", None: "n/a"}[head_can_score_foreground(network)]
        lines.append(f"| {method}{opts.tag} | {seed} | {100 * sum(dice) / len(dice):.2f} | {float(fg.median()):.3f} | "
                     f"{100 * float(((fg >= 0.4) & (fg < 0.5)).float().mean()):.1f} % | "
                     f"{100 * float((fg >= 0.5).float().mean()):.1f} % | {reach} |")
        print(lines[-1], flush=True)
    os.makedirs(opts.results_dir, exist_ok=True)
    with open(os.path.join(opts.results_dir, "margin.md"), "w") as f:
        f.write("The kept model's foreground probability (1 - background) inside the true label of the validation cases"
                " (all their label voxels pooled), and whether its head can score a foreground class above the background"
                " on any non-negative features\n\n" + "\n".join(lines) + "\n")
    return "\n".join(lines)






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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report", "table", "robustness", "bn_check", "margin"])
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
    parser.add_argument("--evaluate_stopped", action="store_true",
                        help="run: evaluate a training its time limit stopped (a probe); by default it is left to resume")
    parser.add_argument("--labeled", default=None,
                        help="label-ratio sweep: comma-separated labeled counts (runs tagged _lN), e.g. 4,8,16")
    parser.add_argument("--sigmas", default="0.1,0.2,0.3,0.4,0.5", help="robustness: noise std values")
    parser.add_argument("--bn_batches", type=int, default=20, help="bn_check: clean batches per training loader")
    parser.add_argument("--override", nargs=argparse.REMAINDER, default=[],
                        help="further bundle overrides, e.g. --override --max_iterations 4 (must come last)")
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
    if opts.command == "run":
        for count in counts:
            opts.num_labeled = count
            for seed in seeds:
                for method in methods:
                    label = f"{method}{opts.tag}{labeled_tag(count)} seed {seed}"
                    print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
                    result = run_one(opts, method, seed)
                    if result is None:
                        continue
                    print(f"[{time.strftime('%H:%M:%S')}] {label}: test Dice {result['test']['dice']:.4f} "
                          f"({result.get('train_minutes_all_segments', result['train_minutes']):.1f} min training in "
                          f"{result.get('train_segments', 1)} segment(s))", flush=True)
    elif opts.command == "bn_check":
        opts.num_labeled = counts[0]
        print(bn_check(opts, methods, seeds, opts.bn_batches))
    elif opts.command == "margin":
        opts.num_labeled = counts[0]
        print(margin(opts, methods, seeds))
    elif opts.command == "table":
        print(comparison_table(opts))
    elif opts.command == "robustness":
        opts.num_labeled = counts[0]
        print(robustness(opts, methods, seeds, [float(s) for s in opts.sigmas.split(",")]))
    else:
        print(report(opts))


if __name__ == "__main__":
    main()
