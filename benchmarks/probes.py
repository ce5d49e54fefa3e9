# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Diagnostics of finished quality-protocol runs (``benchmarks/quality.py run``), read from their work folders.

    python benchmarks/probes.py robustness --protocol cpu --sigmas 0.1,0.2,0.3,0.4,0.5   # noisy test images
    python benchmarks/probes.py bn_check --protocol cpu --seeds 0,1    # BatchNorm statistics from clean passes
    python benchmarks/probes.py margin --protocol cpu --methods cct --seeds 1   # foreground just under the threshold?

The arguments are ``quality.py``'s (the same ``--work_dir``, ``--tag``, ``--labeled`` and ``--override`` name the same
runs). ``robustness`` evaluates each finished (method, seed) on the test list with Gaussian noise added to the images
and writes ``robustness.md``; ``bn_check`` scores each kept model on the validation cases as trained and after its
BatchNorm statistics are recomputed from clean forward passes (``bn_check.md``); ``margin`` reports where the kept
model puts the foreground probability inside the true label, and whether its head can score foreground at all
(``margin.md``). All three write to ``--results_dir``; nothing here chooses a model, and only ``robustness`` reads
the test cases.
"""

from __future__ import annotations

import argparse
import os

from monai_stlu.bundle.compare import bundle_call as bundle, mean_metrics

try:  # run as a script (benchmarks/ on the path) or imported as benchmarks.probes
    from quality import CONFIGS, arguments, config_files, config_paths, labeled_tag, options, run_dir
except ImportError:  # imported as benchmarks.probes
    from benchmarks.quality import CONFIGS, arguments, config_files, config_paths, labeled_tag, options, run_dir


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


def main(argv: list[str] | None = None) -> None:
    parser = arguments(["robustness", "bn_check", "margin"], __doc__)
    parser.add_argument("--sigmas", default="0.1,0.2,0.3,0.4,0.5", help="robustness: noise std values")
    parser.add_argument("--bn_batches", type=int, default=20, help="bn_check: clean batches per training loader")
    opts, methods, seeds, _ = options(parser, argv)
    if opts.command == "bn_check":
        print(bn_check(opts, methods, seeds, opts.bn_batches))
    elif opts.command == "margin":
        print(margin(opts, methods, seeds))
    else:
        print(robustness(opts, methods, seeds, [float(s) for s in opts.sigmas.split(",")]))


if __name__ == "__main__":
    main()
