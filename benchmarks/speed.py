"""Speed and memory of training and sliding-window evaluation: the package's fast path against plain fp32.

    python benchmarks/speed.py --json OUT.json                 # the full benchmark (LA scale), < 10 min on 2 cores
    python benchmarks/speed.py --small --json OUT.json         # tiny sizes: a numerics check of the fast path (CI)
    python benchmarks/speed.py --loss_curve 200 --json OUT.json  # fp32 vs fast loss curves on the shared LA cases

Every measurement runs in its own process (spawned), so each peak memory figure is that path's own. Data: the real
LA cases of ``--data_dir`` (default ``../shared/data/LA``); synthetic volumes in the same layout when absent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cases(cfg: dict, num_labeled: int = 4) -> tuple[list[dict], dict]:
    """The first ``num_labeled`` training cases (image/label arrays) and the first test case, from h5 files."""
    from monai_stlu.data import h5_split
    from monai_stlu.data.h5_files import read_h5_dataset

    split = h5_split(cfg["data_dir"], cfg["train_list"], cfg["test_list"], num_labeled=num_labeled, num_val=0)
    load = lambda c: {"image": read_h5_dataset(c["image"], "image"), "label": read_h5_dataset(c["image"], "label"), "id": c["id"]}
    return [load(c) for c in split["labeled"]], load(split["test"][0])


def _crops(cases: list[dict], patch, n: int, seed: int, foreground: float = 0.0) -> list[dict]:
    """``n`` random crops; the first ``foreground`` fraction of every three is centred on a random label voxel."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = cases[i % len(cases)]
        img, lab = c["image"], c["label"]
        pad = [(0, max(p - s, 0)) for p, s in zip(patch, img.shape)]
        img, lab = np.pad(img, pad), np.pad(lab, pad)
        fg = np.argwhere(lab == 1) if (i % 3) < round(3 * foreground) else np.empty((0, 3))
        if len(fg):
            centre = fg[rng.integers(len(fg))]
            start = [int(min(max(m - p // 2, 0), s - p)) for m, p, s in zip(centre, patch, img.shape)]
        else:
            start = [int(rng.integers(0, s - p + 1)) for s, p in zip(img.shape, patch)]
        sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
        out.append({"image": img[sl][None].astype(np.float32), "label": lab[sl][None].astype(np.int64)})
    return out


def _make(kind: str, cfg: dict):
    from monai_stlu.engines import STLUMethod, SupervisedMethod
    from monai_stlu.networks import STLUNet, VNet

    torch.manual_seed(0)
    if kind == "stlu":
        return STLUNet(n_filters=cfg["n_filters"]), STLUMethod(gamma=1.0)
    return VNet(n_filters=cfg["n_filters"]), SupervisedMethod()


def train_job(kind: str, fast: bool, cfg: dict, iterations: int, seed: int = 0, perturb: float = 0.0) -> dict:
    """``iterations`` + 1 trainer iterations (the first is warm-up); per-iteration times, losses, peak memory.
    ``perturb``: multiply every initial weight by ``1 + perturb * N(0, 1)`` (a rounding-sized change, for a control)."""
    from ignite.engine import Events
    from monai.data import DataLoader, Dataset

    from monai_stlu.engines import SemiSupervisedTrainer

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    labeled_cases, _ = _cases(cfg)
    crops = _crops(labeled_cases, cfg["patch"], 4 * (iterations + 1), seed)
    base = _rss_mb()
    net, method = _make(kind, cfg)
    if perturb:
        gen = torch.Generator().manual_seed(12345)
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(1 + perturb * torch.randn(p.shape, generator=gen))
    net = net.to(device)
    if kind == "stlu":
        lab = DataLoader(Dataset(crops[0::2]), batch_size=2)
        unl = DataLoader(Dataset([{"image": c["image"]} for c in crops[1::2]]), batch_size=2)
    else:  # the same 4 crops per step, all labeled: one plain V-Net step of the same size as one STLU stream
        lab, unl = DataLoader(Dataset(crops), batch_size=4), None
    trainer = SemiSupervisedTrainer(
        device, 1, lab, net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4), method,
        unlabeled_data_loader=unl, epoch_length=iterations + 1, amp=fast, channels_last=fast, decollate=False,
    )
    times, losses, marks = [], [], {}
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: marks.__setitem__("t", time.perf_counter()))

    def done(e):
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - marks["t"])
        losses.append(float(e.state.output["loss"].detach()))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, done)
    trainer.run()
    return {"times": times[1:], "median_s": statistics.median(times[1:]), "losses": losses,
            "peak_mb": _peak_mb(device), "baseline_mb": base}


def eval_job(fast: bool, cfg: dict, weights: str) -> dict:
    """Sliding-window evaluation of one test volume: the one-window fp32 loop, or the package's inferer."""
    from benchmarks.window_loop import window_loop
    from monai_stlu.inferers import StrideSlidingWindowInferer
    from monai_stlu.networks import VNet

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    _, case = _cases(cfg)
    image = torch.from_numpy(case["image"])[None, None].float().to(device)
    net = VNet(n_filters=cfg["n_filters"]).to(device)
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    base = _rss_mb()
    t = time.perf_counter()
    if fast:
        inferer = StrideSlidingWindowInferer(cfg["patch"], cfg["stride"], sw_batch_size=cfg["sw_batch_size"], amp=True,
                                             channels_last=True)
        net = net.to(memory_format=torch.channels_last_3d)
        with torch.no_grad():
            prob = inferer(image, net)[0]
    else:
        prob = window_loop(net, image, cfg["patch"], cfg["stride"])
    elapsed = time.perf_counter() - t
    pred = prob.argmax(0).cpu().numpy().astype(np.uint8)
    np.save(weights + (".fast.npy" if fast else ".loop.npy"), pred)
    dice_vs_label = 2 * ((pred == 1) & (case["label"] == 1)).sum() / max((pred == 1).sum() + (case["label"] == 1).sum(), 1)
    return {"seconds": elapsed, "peak_mb": _peak_mb(device), "baseline_mb": base, "dice_vs_label": float(dice_vs_label),
            "volume_shape": list(case["image"].shape), "case": case["id"]}


def data_job(cfg: dict, iterations: int = 10) -> dict:
    """The LA bundle's own loaders (cached, full pipeline): cache fill time and time per iteration's two batches."""
    from monai.bundle import ConfigParser

    torch.set_num_threads(cfg["threads"])
    parser = ConfigParser()
    cdir = os.path.join(REPO_ROOT, "bundles", "stlu_la", "configs")
    parser.read_config([os.path.join(cdir, "train.json")])
    parser.update({"bundle_root": os.path.join(REPO_ROOT, "bundles", "stlu_la"), "dataset_dir": cfg["data_dir"],
                   "train_list": cfg["train_list"], "test_list": cfg["test_list"], "patch_size": list(cfg["patch"]),
                   "num_val": 1})
    t = time.perf_counter()
    lab, unl = parser.get_parsed_content("train#dataloader"), parser.get_parsed_content("train#unlabeled_dataloader")
    fill = time.perf_counter() - t
    def cycle(loader):
        while True:
            yield from loader

    li, ui = cycle(lab), cycle(unl)
    t = time.perf_counter()
    for _ in range(iterations):
        next(li), next(ui)
    return {"cache_fill_s": fill, "data_per_iteration_s": (time.perf_counter() - t) / iterations,
            "cached_cases": len(lab.dataset) + len(unl.dataset)}


def _in_process(fn, *args):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground Dice of two predictions; 1.0 when both are empty (they agree)."""
    a, b = a == 1, b == 1
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def _training_comparison(cfg: dict, repeats: int) -> dict:
    """STLU and supervised training iterations, fp32 and fast, each in its own process."""
    jobs, out = {}, {}
    for kind in ("stlu", "supervised"):
        for fast in (False, True):
            name = f"{kind}_{'fast' if fast else 'fp32'}"
            jobs[name] = r = _in_process(train_job, kind, fast, cfg, repeats)
            print(f"{name}: {r['median_s']:.2f} s/iteration, peak {r['peak_mb']:.0f} MB", flush=True)
            out.update({f"{name}_iteration_s": r["median_s"], f"{name}_iteration_times_s": r["times"],
                        f"{name}_peak_mb": r["peak_mb"], f"{name}_first_loss": r["losses"][0]})
    out.update(
        stlu_speedup_vs_fp32=jobs["stlu_fp32"]["median_s"] / jobs["stlu_fast"]["median_s"],
        stlu_vs_supervised_step=jobs["stlu_fast"]["median_s"] / jobs["supervised_fast"]["median_s"],
        stlu_fp32_vs_supervised_fp32=jobs["stlu_fp32"]["median_s"] / jobs["supervised_fp32"]["median_s"],
        stlu_first_loss_abs_diff=abs(jobs["stlu_fp32"]["losses"][0] - jobs["stlu_fast"]["losses"][0]),
    )
    return out


def _evaluation_comparison(cfg: dict, args: argparse.Namespace, tmp: str) -> dict:
    """One test volume through the one-window fp32 loop and the package's inferer, with a fitted or given model."""
    weights = os.path.join(tmp, "vnet.pt")
    if args.ckpt:
        eval_cfg, fit_loss = dict(cfg, n_filters=_vnet_weights_from(args.ckpt, weights)), None
    else:
        eval_cfg, fit_loss = cfg, _in_process(_fit_and_save, cfg, args.fit_iterations, weights)
    loop = _in_process(eval_job, False, eval_cfg, weights)
    fast = _in_process(eval_job, True, eval_cfg, weights)
    pred_loop, pred_fast = np.load(weights + ".loop.npy"), np.load(weights + ".fast.npy")
    return dict(
        eval_loop_s=loop["seconds"], eval_fast_s=fast["seconds"],
        eval_speedup_vs_window_loop=loop["seconds"] / fast["seconds"], eval_dice_agreement=_dice(pred_loop, pred_fast),
        eval_foreground_voxels_loop=int((pred_loop == 1).sum()), eval_voxels_differing=int((pred_loop != pred_fast).sum()),
        eval_loop_peak_mb=loop["peak_mb"], eval_fast_peak_mb=fast["peak_mb"],
        eval_dice_vs_label_loop=loop["dice_vs_label"], eval_dice_vs_label_fast=fast["dice_vs_label"],
        eval_volume_shape=loop["volume_shape"], eval_case=loop["case"],
        eval_model=args.ckpt or f"V-Net fitted {args.fit_iterations} iterations on {cfg['fit_cases']} cases",
        fit_last10_loss=fit_loss,
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--data_dir", default=os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "LA"))
    ap.add_argument("--train_list", default="subset_train.list")
    ap.add_argument("--test_list", default="subset_test.list")
    ap.add_argument("--small", action="store_true", help="tiny sizes: checks numerics, not speed")
    ap.add_argument("--repeats", type=int, default=3, help="timed training iterations per path (after one warm-up)")
    ap.add_argument("--fit_iterations", type=int, default=150,
                    help="V-Net fitting iterations before the evaluation (ignored with --ckpt)")
    ap.add_argument("--fit_cases", type=int, default=4, help="training cases the V-Net is fitted on")
    ap.add_argument("--eval_only", action="store_true", help="only the evaluation comparison (fit or --ckpt, then both paths)")
    ap.add_argument("--ckpt", default=None,
                    help="evaluate this trained V-Net/STLU-Net checkpoint (e.g. a bundle's models/model.pt) instead of fitting one")
    ap.add_argument("--loss_curve", type=int, default=0, help="only compare fp32 and fast STLU losses over N iterations")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = {"device": device, "threads": args.threads, "data_dir": args.data_dir, "train_list": args.train_list,
           "test_list": args.test_list, "n_filters": 16, "patch": [112, 112, 80], "stride": [18, 18, 4], "sw_batch_size": 4,
           "fit_patch": [64, 64, 48], "fit_cases": args.fit_cases}
    with tempfile.TemporaryDirectory(prefix="stlu_speed_") as tmp:  # weights, predictions, synthetic data
        out = _run(args, cfg, tmp)
    tmp_json = args.json + ".tmp"
    with open(tmp_json, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp_json, args.json)
    _print_table(out)
    return out


def _run(args: argparse.Namespace, cfg: dict, tmp: str) -> dict:
    if not os.path.isfile(os.path.join(args.data_dir, args.train_list)):
        from monai_stlu.data import write_synthetic_la

        print(f"no LA data at {args.data_dir}: using synthetic volumes in the same layout")
        cfg.update(data_dir=write_synthetic_la(os.path.join(tmp, "synth"), 8, 2, shape=(160, 140, 88)),
                   train_list="train.list", test_list="test.list")
    if args.small:
        cfg.update(n_filters=4, patch=[48, 48, 32], stride=[24, 24, 16], fit_patch=[48, 48, 32])
    from monai_stlu.utils import cpu_supports_bf16

    out: dict = {"device": cfg["device"], "cpu_bf16": cpu_supports_bf16(), "torch": torch.__version__, "threads": args.threads,
                 "machine": platform.processor() or platform.machine(), "config": cfg}

    if args.loss_curve:
        # fp32 and the fast path from the same weights and crops, and a control: fp32 again from weights changed at
        # float32 rounding level (1e-6 relative), which shows how far two fp32 runs drift apart on their own
        cfg_lc = dict(cfg, n_filters=cfg["n_filters"] if args.small else 8, patch=cfg["patch"] if args.small else [64, 64, 48])
        runs = {"fp32": _in_process(train_job, "stlu", False, cfg_lc, args.loss_curve - 1),
                "fast": _in_process(train_job, "stlu", True, cfg_lc, args.loss_curve - 1),
                "control": _in_process(train_job, "stlu", False, cfg_lc, args.loss_curve - 1, 0, 1e-6)}
        a, b, c = (np.array(runs[k]["losses"]) for k in ("fp32", "fast", "control"))
        w = min(10, len(a))
        ma = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")
        blocks = lambda x: x[: len(x) // w * w].reshape(-1, w).mean(1)
        out.update(loss_curve_config=cfg_lc, loss_fp32=a.tolist(), loss_fast=b.tolist(), loss_control=c.tolist(),
                   loss_max_abs_diff=float(np.abs(a - b).max()),
                   loss_moving_avg_max_abs_diff=float(np.abs(ma(a) - ma(b)).max()),
                   loss_block_mean_abs_diff=float(np.abs(blocks(a) - blocks(b)).mean()),
                   loss_first_abs_diff=float(abs(a[0] - b[0])),
                   control_moving_avg_max_abs_diff=float(np.abs(ma(a) - ma(c)).max()),
                   control_block_mean_abs_diff=float(np.abs(blocks(a) - blocks(c)).mean()),
                   loss_curve_fp32_s_per_iteration=runs["fp32"]["median_s"],
                   loss_curve_fast_s_per_iteration=runs["fast"]["median_s"])
    else:
        if not args.eval_only:
            out.update(_training_comparison(cfg, args.repeats))
        out.update(_evaluation_comparison(cfg, args, tmp))
        if not args.eval_only:
            data = _in_process(data_job, cfg)
            out.update(data_cache_fill_s=data["cache_fill_s"], data_per_iteration_s=data["data_per_iteration_s"],
                       data_to_compute_ratio=data["data_per_iteration_s"] / out["stlu_fast_iteration_s"],
                       data_cached_cases=data["cached_cases"])
    return out


def _fit_and_save(cfg: dict, iterations: int, path: str) -> float:
    """Fit a V-Net briefly so that the evaluation compares the predictions of a model that segments something:
    float32 (the model under comparison does not depend on the training precision; with ``--small``, 150 bf16
    iterations gave a model that marked 3,700 voxels of the test volume, float32 ones 134,000: a comparison of
    inference paths on a model that marks nothing says little), SGD lr 0.05, batches of 4 crops of ``fit_patch`` from ``fit_cases`` training cases, two in three
    centred on the label. Saves the
    weights atomically; returns the mean loss of the last 10 iterations."""
    from ignite.engine import Events
    from monai.data import DataLoader, Dataset

    from monai_stlu.engines import SemiSupervisedTrainer, SupervisedMethod
    from monai_stlu.networks import VNet

    torch.set_num_threads(cfg["threads"])
    labeled_cases, _ = _cases(cfg, cfg["fit_cases"])
    crops = _crops(labeled_cases, cfg["fit_patch"], 4 * iterations, seed=1, foreground=2 / 3)
    torch.manual_seed(0)
    net = VNet(n_filters=cfg["n_filters"]).to(cfg["device"])
    trainer = SemiSupervisedTrainer(
        cfg["device"], 1, DataLoader(Dataset(crops), batch_size=4, shuffle=True), net,
        torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4), SupervisedMethod(),
        epoch_length=iterations, amp=False, channels_last=True, decollate=False,
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    trainer.run()
    _save_atomic({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return float(np.mean(losses[-10:]))


def _save_atomic(state: dict, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _vnet_weights_from(ckpt: str, path: str) -> int:
    """Save the V-Net weights of a trained checkpoint (a V-Net or STLU-Net state dict, or a bundle checkpoint
    holding one under ``"model"``) to ``path``; return its ``n_filters``."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    if "encoder.0.0.weight" not in state:
        raise ValueError(f"{ckpt}: not a V-Net / STLU-Net state dict (no 'encoder.0.0.weight' key).")
    _save_atomic(state, path)
    return int(state["encoder.0.0.weight"].shape[0])


def _print_table(out: dict) -> None:
    rows = [(k, v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    width = max(len(k) for k, _ in rows)
    print(f"\ndevice: {out['device']} (bf16 CPU: {out['cpu_bf16']}), torch {out['torch']}, threads {out['threads']}")
    for k, v in rows:
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
