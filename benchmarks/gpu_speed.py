# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Training and evaluation speed of every method, built from the LA bundle's own configs (loaders included).

    python benchmarks/gpu_speed.py --json OUT.json                   # the bundle's full configuration
    python benchmarks/gpu_speed.py --tiny --json OUT.json            # tiny sizes on any device (CI, CPU)

Per method: parameters (the exported network, and what the method adds: a teacher, a second network), seconds per
iteration (median of the timed iterations after warm-up, and their mean), split into the time spent waiting
for the labeled and unlabeled loaders and the time in the step (forward, loss, backward, optimizer; CUDA-synchronised
at iteration boundaries, so the split is exact), peak GPU memory, the step's FLOPs (``torch.utils.flop_counter``,
one iteration) and the achieved fraction of the device's dense half-precision peak (``--peak_tflops``, known for
H100/H200); then sliding-window evaluation seconds per LA-sized volume at stride 18x18x4. The output names the
device, the CPU and the versions.

With ``--override compile true`` (and ``compile_kwargs '{"mode": "reduce-overhead"}'`` for CUDA graphs) the trainer
runs compiled while the bare loop and the FLOP count stay eager: the row then compares the compiled step with the
eager bare step, the GPU issue's measure of the option.

With ``--profile N`` the trainer's iterations (warm-up and timed) run under ``torch.profiler``: the result lists
the N operators with the most self time (host, and device time on CUDA) and the table is printed, to see where
a method's time goes or what a change moved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "bundles", "stlu_la", "configs")
METHODS = (
    "supervised", "mean_teacher", "ua_mt", "cps", "mcnet_plus", "bcp", "dtc", "sassnet", "ssnet", "dan", "urpc",
    "cct", "ict", "mcnet", "ml", "mcf", "tracoco", "stlu",
)
#: dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor figures, without sparsity)
KNOWN_PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def device_facts(device: torch.device) -> dict:
    import monai

    from monai_stlu.utils import cpu_name

    facts = {"device": str(device), "cpu": cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
             "monai": monai.__version__}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["cuda"] = torch.version.cuda
    return facts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_trainer(method: str, overrides: dict):
    from monai.bundle import ConfigParser

    files = [os.path.join(CONFIGS, "train.json")]
    if method != "stlu":
        files.append(os.path.join(CONFIGS, "methods", f"{method}.json"))
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(overrides)
    parser.get_parsed_content("initialize")  # determinism and the patch-size check, as the bundle does
    return parser.get_parsed_content("train#trainer")


def profiled(device: torch.device, top: int):
    """A ``torch.profiler.profile`` context (host activity, and CUDA's on a GPU) when ``top`` > 0, else a null one."""
    if top <= 0:
        return contextlib.nullcontext()
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=activities)


def profile_rows(averages, device: torch.device, top: int) -> list[dict]:
    """The ``top`` operators of a profile's ``key_averages()`` by self host time: name, calls, self host seconds (and
    self device seconds on CUDA)."""
    rows = []
    for e in sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        row = {"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6}
        if device.type == "cuda":
            row["self_device_s"] = getattr(e, "self_device_time_total", 0.0) / 1e6
        rows.append(row)
    return rows


def time_method(
    method: str, overrides: dict, warmup: int, timed: int, device: torch.device, peak: float | None, profile: int = 0
) -> dict:
    from ignite.engine import Events

    trainer = build_trainer(method, overrides)
    marks: dict[str, float] = {}
    waits, steps, totals = [], [], []
    next_unlabeled = trainer.next_unlabeled

    def timed_unlabeled():
        start = time.perf_counter()
        batch = next_unlabeled()
        sync(device)
        marks["wait"] += time.perf_counter() - start
        return batch

    trainer.next_unlabeled = timed_unlabeled

    @trainer.on(Events.GET_BATCH_STARTED)
    def _batch_started(engine):
        sync(device)
        marks["start"] = time.perf_counter()
        marks["wait"] = 0.0

    @trainer.on(Events.GET_BATCH_COMPLETED)
    def _batch_completed(engine):
        marks["wait"] += time.perf_counter() - marks["start"]

    @trainer.on(Events.ITERATION_COMPLETED)
    def _iteration_completed(engine):
        sync(device)
        total = time.perf_counter() - marks["start"]
        if engine.state.iteration > warmup:
            totals.append(total)
            waits.append(marks["wait"])
            steps.append(total - marks["wait"])

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with profiled(device, profile) as prof:
        trainer.run()
    result = {
        "method": method,
        "compiled": bool(getattr(trainer, "compile", False)),
        "s_per_iteration": statistics.median(totals),
        # the mean keeps what the median hides: a loader pass ending every few iterations (8 labeled cases in
        # batches of 2), or a worker process started for each pass
        "mean_s_per_iteration": statistics.fmean(totals),
        "loader_wait_s": statistics.median(waits),
        "step_s": statistics.median(steps),
        "timed_iterations": len(totals),
    }
    if profile > 0:
        averages = prof.key_averages()
        result["profile"] = profile_rows(averages, device, profile)
        print(averages.table(sort_by="self_cpu_time_total", row_limit=profile), flush=True)
    result.update(bare_loop(trainer, warmup, timed, device))
    result["layers_overhead"] = result["s_per_iteration"] / result["bare_s_per_iteration"] - 1.0
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    result["parameters"] = sum(p.numel() for p in trainer.network.parameters())
    result["method_parameters"] = sum(p.numel() for p in trainer.method.parameters())  # teacher, second network
    result["step_tflop"] = step_flops(trainer) / 1e12
    if peak:
        result["fraction_of_peak"] = result["step_tflop"] / result["step_s"] / peak
    return result


@contextlib.contextmanager
def eager(trainer):
    """Run the trainer's compiled modules eagerly for a while (``nn.Module.compile`` keeps the compiled call on the
    module as ``_compiled_call_impl``; without it the module calls its own forward)."""
    from monai_stlu.networks.utils import unwrap

    modules = getattr(trainer, "compiled_modules", [])
    saved = [m.__dict__.get("_compiled_call_impl") for m in modules]
    # the compiled entry points (forward_sdf, ...) are instance attributes over the class's own methods
    entries = [{k: unwrap(m).__dict__.pop(k) for k in list(unwrap(m).__dict__) if k.startswith("forward_")}
               for m in modules]
    for m in modules:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, impl, entry in zip(modules, saved, entries):
            m._compiled_call_impl = impl
            unwrap(m).__dict__.update(entry)


def method_extras(trainer, labeled_batch: dict, image_u) -> dict:
    """The further batch entries a method reads (TraCoCo's translated crops), as the trainer passes them."""
    if not trainer.method.batch_keys:
        return {}
    return {"extras": trainer.batch_extras(labeled_batch, trainer._unlabeled_batch if image_u is not None else None)}


def bare_loop(trainer, warmup: int, timed: int, device: torch.device) -> dict:
    """The same method (network calls and loss), backward and optimizer step in a plain PyTorch loop on tensors already
    on the device, with the method's own after-step work (SASSNet's and DAN's discriminator step, which they run on
    ``MODEL_COMPLETED``): no loaders, transforms or other handlers (EMA updates, ramps, metrics, logging).
    Beside the trainer's time it shows what our layers add per iteration."""
    from monai_stlu.utils.fast_path import as_plain_tensor, autocast

    first = next(iter(trainer.data_loader))
    x = trainer._compute_view(first["image"].to(device))
    y = as_plain_tensor(first["label"]).to(device)  # plain tensors, as the trainer hands them to the method
    xu = trainer.next_unlabeled() if trainer.method.uses_unlabeled else None
    extras = method_extras(trainer, first, xu)
    network, method, optimizer = trainer.network, trainer.method, trainer.optimizer
    after_step = getattr(method, "discriminator_step", None)
    network.train()
    method.train()
    times = []
    with eager(trainer):  # the bare step is eager PyTorch, also when the trainer runs compiled
        for i in range(warmup + timed):
            sync(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, enabled=trainer.amp, dtype=trainer.amp_dtype or torch.float32):
                loss = method(network, x, y, xu, **extras)["loss"]
            loss.backward()
            optimizer.step()
            if after_step is not None:  # the method's own after-step work: SASSNet's and DAN's discriminator step
                after_step(trainer)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {"bare_s_per_iteration": statistics.median(times)}


def step_flops(trainer) -> float:
    """FLOPs of one training iteration (forward, loss and backward of the method) on fresh batches."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = next(iter(trainer.data_loader))
    image, label = trainer.prepare_batch(batch, trainer.state.device, trainer.non_blocking)
    image = trainer._compute_view(image)
    image_u = trainer.next_unlabeled() if trainer.method.uses_unlabeled else None
    extras = method_extras(trainer, batch, image_u)
    counter = FlopCounterMode(display=False)
    from monai_stlu.utils.fast_path import as_plain_tensor, autocast

    with eager(trainer), counter:
        with autocast(trainer.state.device, enabled=trainer.amp, dtype=trainer.amp_dtype or torch.float32):
            loss = trainer.method(trainer.network, image, as_plain_tensor(label), image_u, **extras)["loss"]
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_evaluation(overrides: dict, shape: tuple[int, ...], device: torch.device, repeats: int = 2) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.path.join(CONFIGS, "train.json"), os.path.join(CONFIGS, "evaluate.json")])
    parser.update({**overrides, "amp": True})
    inferer = parser.get_parsed_content("validate#inferer")
    network = parser.get_parsed_content("network").eval()
    x = torch.randn(1, 1, *shape, device=device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            inferer(x, network)
            sync(device)
            times.append(time.perf_counter() - start)
    return {"volume": list(shape), "stride": list(inferer.stride), "s_per_volume": statistics.median(times[1:])}


def parse_value(text: str):
    """A command-line override value: JSON where it parses (numbers, lists, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: checks that the benchmark runs, not speed")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--dataset_dir", default=None, help="LA h5 layout; default: synthetic volumes")
    ap.add_argument("--peak_tflops", type=float, default=None, help="the device's dense half-precision peak")
    ap.add_argument("--skip_evaluation", action="store_true", help="time training only (no sliding-window volume)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="profile the trainer's iterations; list the N operators with the most self time")
    ap.add_argument("--override", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ... bundle overrides (last)")
    args = ap.parse_args(argv)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    facts = device_facts(device)
    peak = args.peak_tflops or next((v for k, v in KNOWN_PEAKS.items() if k in facts.get("gpu", "")), None)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.dataset_dir
        if data is None:
            from monai_stlu.data import write_synthetic_la

            shape = (48, 48, 32) if args.tiny else (176, 144, 88)
            data = write_synthetic_la(os.path.join(tmp, "data"), num_train=12 if args.tiny else 20, num_test=1,
                                      shape=shape)
        overrides = {"bundle_root": tmp, "dataset_dir": data, "num_val": 0, "num_labeled": 4 if args.tiny else 8,
                     "progress": False, "log_interval": 10**6, "bcp_pretrain_iterations": 0, "device": device}
        warmup, timed = (1, 2) if args.tiny else (args.warmup, args.iterations)
        overrides.update({"max_iterations": warmup + timed, "val_interval": warmup + timed})
        if args.tiny:
            overrides.update({"patch_size": [32, 32, 32], "n_filters": 4, "uncertainty_passes": 2,
                              "val_stride": [16, 16, 16], "eval_stride": [16, 16, 16],
                              "labeled_batch_size": 2, "unlabeled_batch_size": 2})
        it = iter(args.override)
        overrides.update({k.lstrip("-"): parse_value(v) for k, v in zip(it, it)})
        results = {"facts": facts, "peak_tflops": peak, "warmup": warmup, "timed": timed, "methods": []}
        for method in [m for m in args.methods.split(",") if m]:
            r = time_method(method, dict(overrides), warmup, timed, device, peak, args.profile)
            results["methods"].append(r)
            print(json.dumps(r), flush=True)
        sup = next((r for r in results["methods"] if r["method"] == "supervised"), None)
        for r in results["methods"]:
            if sup:
                r["x_supervised"] = r["s_per_iteration"] / sup["s_per_iteration"]
        shape = (48, 48, 32) if args.tiny else (176, 144, 88)
        if not args.skip_evaluation:
            results["evaluation"] = time_evaluation(overrides, shape, device)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results.get("evaluation")))
    return results


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
