"""Micro-benchmarks behind BENCHMARKS.md "Host time": the pieces of an iteration's host time, each timed alone.

    OMP_NUM_THREADS=1 python benchmarks/host_micro.py --json OUT.json

- ``argmax``: ``torch.argmax`` against ``monai_stlu.utils.argmax`` (the indices of ``torch.max``) over the channel
  dimension, at the 32^3 host-time batch and the CPU protocol's batch;
- ``ema``: one ``EMATeacherHandler.update`` for the 2- and 16-filter V-Net;
- ``loader``: one labeled batch (two 32^3 crops with rotations and flips, from the bundle's own training dataset on
  synthetic LA-sized volumes) with and without the cached-volume copy (``copy_cache``) and MONAI's metadata tracking;
- ``pass_start``: the first batch of a pass of the unlabeled loader with two worker processes, with and without
  ``persistent_workers``.

Medians of repeated calls on this machine's CPU (named in the output); the machine is shared, so compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_argmax(repeats: int) -> list[dict]:
    from monai_stlu.utils import argmax

    rows = []
    for shape in [(2, 2, 32, 32, 32), (4, 2, 96, 96, 64)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        assert torch.equal(argmax(x, 1), torch.argmax(x, 1))
        rows.append({"shape": list(shape), "torch_argmax_ms": median_ms(lambda: torch.argmax(x, 1), repeats),
                     "max_indices_ms": median_ms(lambda: argmax(x, 1), repeats)})
    return rows


def time_ema(repeats: int) -> list[dict]:
    from monai_stlu.handlers import EMATeacherHandler
    from monai_stlu.networks import VNet

    rows = []
    for filters in (2, 16):
        student = VNet(n_filters=filters)
        handler = EMATeacherHandler(copy.deepcopy(student), student)
        rows.append({"n_filters": filters, "update_ms": median_ms(lambda: handler.update(10), repeats)})
    return rows


def build_trainer(method: str, data: str, tmp: str, overrides: dict):
    import gpu_speed  # on the path from main()

    base = {"bundle_root": tmp, "dataset_dir": data, "num_val": 0, "num_labeled": 8, "progress": False,
            "device": torch.device("cpu"), "max_iterations": 4, "val_interval": 4, "patch_size": [32, 32, 32],
            "n_filters": 2, "val_stride": [16, 16, 16], "eval_stride": [16, 16, 16]}
    return gpu_speed.build_trainer(method, {**base, **overrides})


def time_loader(data: str, tmp: str, batches: int) -> list[dict]:
    from monai.data import DataLoader, set_track_meta

    dataset = build_trainer("supervised", data, tmp, {}).data_loader.dataset
    rows = []
    for copy_cache, track_meta in [(True, True), (False, True), (False, False)]:
        dataset.copy_cache = copy_cache
        set_track_meta(track_meta)
        try:
            loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=0)
            it = iter(loader)

            def one_batch():
                nonlocal it
                try:
                    next(it)
                except StopIteration:
                    it = iter(loader)
                    next(it)

            rows.append({"copy_cache": copy_cache, "track_meta": track_meta,
                         "batch_ms": median_ms(one_batch, batches)})
        finally:
            set_track_meta(True)
    return rows


def time_pass_start(data: str, tmp: str, passes: int) -> list[dict]:
    from monai.data import ThreadDataLoader

    trainer = build_trainer("mean_teacher", data, tmp, {"patch_size": [96, 96, 64]})
    dataset = trainer.unlabeled_data_loader.dataset
    rows = []
    for persistent in (False, True):
        loader = ThreadDataLoader(dataset, batch_size=2, shuffle=True, drop_last=True, num_workers=2, buffer_size=1,
                                  persistent_workers=persistent)
        starts = []
        for _ in range(passes + 1):
            start = time.perf_counter()
            it = iter(loader)
            next(it)
            starts.append(time.perf_counter() - start)
            for _ in it:
                pass
        # the first pass starts the workers either way; the later ones show what persistence saves
        rows.append({"persistent_workers": persistent, "first_pass_ms": 1000 * starts[0],
                     "later_pass_start_ms": [1000 * s for s in starts[1:]]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from monai_stlu.data import write_synthetic_la

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from gpu_speed import device_facts

    results = {"facts": device_facts(torch.device("cpu")), "threads": torch.get_num_threads()}
    results["argmax"] = time_argmax(args.repeats)
    results["ema"] = time_ema(args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_la(os.path.join(tmp, "data"), num_train=40, num_test=1, shape=(176, 144, 88))
        results["loader"] = time_loader(data, tmp, 5 * args.repeats)
        results["pass_start"] = time_pass_start(data, tmp, 3)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
