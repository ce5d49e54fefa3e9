"""One command for a GPU slot: check the CUDA path, time every method, time STLU-Net with validation, probe quality.

    # here, once: python benchmarks/stage_device.py   (cases, lists and wheels into the git-ignored .stage/)
    # on the GPU machine (device tool, carry [".stage"]), from the repository root:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .stage/wheels/*.whl && export PYTHONPATH=/tmp/site:.
    python3 benchmarks/device_check.py --out $OUT --stage .stage
    # anywhere, in CI (CPU, tiny sizes: checks the command, not speed; two to four minutes):
    python benchmarks/device_check.py --out DIR --tiny

Parts, each given a share of ``--budget_s`` (540 s: a 10-minute command with room to start) and each recorded even
when a later one fails or the slot ends:

a. ``pytest -m cuda tests`` (the CUDA tests; they skip without a GPU);
b. the speed table of every method at the bundle's full configuration (``benchmarks/gpu_speed.py``: s/iteration,
   loader wait and step, peak memory, FLOPs and fraction of peak; one LA-sized volume at stride 18x18x4);
c. STLU-Net for ``--iterations`` iterations with two validations on the staged cases, extrapolated to the paper's
   15,000 iterations with validation every 500;
e. the compile option: supervised-only and STLU-Net timed again with ``compile true`` (on a GPU with
   ``{"mode": "reduce-overhead"}``: Inductor kernels and CUDA graphs; in ``--tiny`` with the quick ``aot_eager``
   backend), against the eager bare step, in a subprocess with its own time limit (it runs before d, which takes
   the time left);
d. a quality probe: supervised-only, Mean Teacher and STLU-Net trained side by side on the one device for the time
   left (``max_train_seconds``), selected on the 4 validation cases, evaluated on the 8 ``subset_test.list`` cases.

Everything lands in ``--out``: ``device_check.json``, ``device_check.md`` and the logs (well under 16 MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "bundles", "stlu_la", "configs")
PROBE_METHODS = ("supervised", "mean_teacher", "stlu")
TINY = {"patch_size": [32, 32, 32], "n_filters": 4, "val_stride": [16, 16, 16], "eval_stride": [16, 16, 16],
        "sw_batch_size": 2}


class Clock:
    """The command's budget: what is left, and the share a part may take."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.perf_counter(), float(budget_s)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def record(out: dict, path: str) -> None:
    """Write the results so far (a part that breaks or a slot that ends keeps what came before)."""
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2, default=str)
    os.replace(tmp, path)


def start_group(cmd: list[str], stdout, env: dict | None = None) -> subprocess.Popen:
    """``cmd`` started in a process group of its own, so that :py:func:`stop_group` reaches its children too
    (pytest's workers, torchrun's ranks), which would otherwise hold the GPU after a time-out."""
    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to ``proc``'s whole process group, SIGKILL to what is left after ``grace`` seconds."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; its children may not be
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def wait_group(proc: subprocess.Popen, timeout: float) -> int | str:
    """``proc``'s exit code, or "timeout" after stopping its whole group at ``timeout`` seconds."""
    try:
        return proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return "timeout"


def run_logged(cmd: list[str], log: str, timeout: float, env: dict | None = None) -> dict:
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = wait_group(start_group(cmd, f, env), timeout)
    with open(log) as f:
        tail = f.read()[-600:]
    return {"rc": rc, "seconds": round(time.perf_counter() - start, 1), "log": os.path.basename(log), "tail": tail}


def prepare_data(args: argparse.Namespace, work: str) -> dict:
    """The LA cases to train on: the staged ones unpacked, a given folder, or (tiny, nothing staged) synthetic."""
    if args.stage and os.path.isdir(os.path.join(args.stage, "cases")):
        data = os.path.join(work, "LA")
        subprocess.run([sys.executable, os.path.join(args.stage, "unpack.py"), os.path.join(args.stage, "cases"), data],
                       check=True, stdout=subprocess.DEVNULL)
        for name in ("probe_train.list", "subset_test.list"):
            shutil.copy(os.path.join(args.stage, name), os.path.join(data, name))
        return {"dataset_dir": data, "train_list": "probe_train.list", "test_list": "subset_test.list", "real": True}
    if args.dataset_dir:
        return {"dataset_dir": args.dataset_dir, "train_list": args.train_list, "test_list": args.test_list, "real": True}
    from monai_stlu.data import write_synthetic_la

    data = write_synthetic_la(os.path.join(work, "synthetic"), num_train=12, num_test=2, shape=(48, 48, 40))
    with open(os.path.join(data, "train.list")) as f:
        val_ids = f.read().split()[-2:]
    return {"dataset_dir": data, "train_list": "train.list", "test_list": "test.list", "real": False, "val_ids": val_ids}


def timed_training(data: dict, overrides: dict, iterations: int, work: str) -> dict:
    """STLU-Net for ``iterations`` iterations with a validation every half, timed apart; extrapolated to 15,000."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.path.join(CONFIGS, "train.json"), os.path.join(CONFIGS, "gpu_protocol.json")])
    val_interval = max(iterations // 2, 1)
    parser.update({"bundle_root": work, "ckpt_dir": os.path.join(work, "timed_models"), "output_dir": os.path.join(work, "timed"),
                   "dataset_dir": data["dataset_dir"], "train_list": data["train_list"], "test_list": data["test_list"],
                   "max_iterations": iterations, "val_interval": val_interval, "resume": False, "plot_progress": False,
                   "save_predictions": False, **overrides})
    if not data["real"]:
        parser.update({"val_ids": data["val_ids"], "num_labeled": 4})
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    validator = parser.get_parsed_content("validate#evaluator")
    spent = {"validation": 0.0, "validations": 0}

    @validator.on(Events.STARTED)
    def _v_start(_):
        spent["v0"] = time.perf_counter()

    @validator.on(Events.COMPLETED)
    def _v_end(_):
        spent["validation"] += time.perf_counter() - spent["v0"]
        spent["validations"] += 1

    start = time.perf_counter()
    trainer.run()
    total = time.perf_counter() - start
    train_s = total - spent["validation"]
    per_it = train_s / iterations
    per_val = spent["validation"] / max(spent["validations"], 1)
    parser.get_parsed_content("finalize")
    return {"iterations": iterations, "validations": spent["validations"], "total_s": round(total, 2),
            "s_per_iteration": round(per_it, 4), "s_per_validation": round(per_val, 2),
            "extrapolated_15000_min": round((15000 * per_it + 30 * per_val) / 60, 1)}


def quality_probe(
    args: argparse.Namespace, data: dict, seconds: float, overrides: dict, out: str, deadline: float, work: str
) -> dict:
    """The three methods side by side for ``seconds`` of training each, then evaluated on the test list; a method
    still running at ``deadline`` (``time.perf_counter()``) is stopped and reported as such. Checkpoints stay in
    ``work``; each run's summary and training log are copied to ``out``."""
    work = os.path.join(work, "probe")
    over = ["--max_train_seconds", str(int(seconds)), "--val_interval", str(args.probe_val_interval),
            "--max_iterations", "15000", "--save_predictions", "false"]
    for k, v in overrides.items():
        over += [f"--{k}", json.dumps(v)]
    procs = {}
    for method in PROBE_METHODS:
        cmd = [sys.executable, os.path.join(REPO, "benchmarks", "quality.py"), "run", "--protocol", "gpu", "--methods", method,
               "--seeds", "0", "--dataset_dir", data["dataset_dir"], "--train_list", data["train_list"],
               "--test_list", data["test_list"], "--work_dir", work, "--archive_dir", os.path.join(out, "probe_runs"),
               "--evaluate_stopped", "--override", *over]
        if not data["real"]:
            at = cmd.index("--override") + 1  # synthetic cases: the last two training cases validate
            cmd[at:at] = ["--val_ids", json.dumps(data["val_ids"]), "--num_labeled", "4"]
        log = open(os.path.join(out, f"probe_{method}.log"), "w")
        procs[method] = (start_group(cmd, log), log)
    result = {}
    for method, (proc, log) in procs.items():
        rc = wait_group(proc, deadline - time.perf_counter())
        log.close()
        done = os.path.join(work, f"{method}_seed0", "done.json")
        summary = json.load(open(done)) if os.path.isfile(done) else {}
        for name in ("done.json", "train.log"):
            if os.path.isfile(os.path.join(work, f"{method}_seed0", name)):
                shutil.copy(os.path.join(work, f"{method}_seed0", name), os.path.join(out, f"probe_{method}_{name}"))
        result[method] = {"rc": rc, "test": summary.get("test"), "train_minutes": summary.get("train_minutes"),
                          "stopped_at_iteration": summary.get("stopped_at_iteration")}
    return result


def compiled_speed(args: argparse.Namespace, clock: Clock, device: torch.device) -> dict:
    """Part e: ``gpu_speed.py`` for supervised-only and STLU-Net with the trainer compiled, in a subprocess that a
    time limit can stop (compilation time is not known in advance)."""
    out = os.path.join(args.out, "compiled_speed.json")
    kwargs = {"backend": "aot_eager"} if args.tiny else ({"mode": "reduce-overhead"} if device.type == "cuda" else {})
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "gpu_speed.py"), "--json", out, "--skip_evaluation",
           "--methods", "supervised,stlu"] + (["--tiny"] if args.tiny else ["--warmup", "5", "--iterations", "15"])
    cmd += ["--override", "compile", "true", "compile_kwargs", json.dumps(kwargs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    result = run_logged(cmd, os.path.join(args.out, "compiled_speed.log"), timeout=min(240, clock.left() * 0.4), env=env)
    result["compile_kwargs"] = kwargs
    if os.path.exists(out):
        with open(out) as f:
            result["methods"] = json.load(f)["methods"]
    return result


def markdown(res: dict) -> str:
    f = res.get("facts", {})
    lines = [f"# Device check ({'tiny, ' if res['tiny'] else ''}{f.get('gpu', f.get('cpu', '?'))}; torch {f.get('torch')})", ""]
    a = res.get("cuda_tests", {})
    lines += [f"a. CUDA tests: rc {a.get('rc')} in {a.get('seconds')} s: {a.get('summary', '')}", ""]
    b = res.get("speed", {})
    if b.get("methods"):
        lines += ["b. | method | s/iteration | loader wait (s) | step (s) | x supervised | peak MiB | fraction of peak |",
                  "|---|---|---|---|---|---|---|"]
        for r in b["methods"]:
            lines.append(f"| {r['method']} | {r['s_per_iteration']:.4f} | {r['loader_wait_s']:.4f} | {r['step_s']:.4f} | "
                         f"{r.get('x_supervised', 0):.2f} | {r.get('peak_gpu_mib', 0):.0f} | {r.get('fraction_of_peak', 0):.3f} |")
        lines += ["", f"   sliding window: {b.get('evaluation')}", ""]
    else:
        lines += [f"b. speed: {b.get('error', 'not run')}", ""]
    c = res.get("stlu_timed", {})
    lines += [f"c. STLU-Net timed: {c}", ""]
    e = res.get("compiled_speed", {})
    lines += [f"e. compiled ({e.get('compile_kwargs')}): rc {e.get('rc')} in {e.get('seconds')} s"]
    for r in e.get("methods", []):
        lines.append(f"   - {r['method']}: {r['s_per_iteration']:.4f} s/iteration compiled, eager bare step "
                     f"{r['bare_s_per_iteration']:.4f} s ({r['s_per_iteration'] / r['bare_s_per_iteration']:.2f}x)")
    lines += ["", "d. quality probe (test Dice):"]
    for m, r in res.get("probe", {}).items():
        dice = (r.get("test") or {}).get("dice")
        lines.append(f"   - {m}: rc {r.get('rc')}, Dice {dice if dice is None else round(100 * dice, 2)}, "
                     f"trained {r.get('train_minutes')} min")
    lines += ["", f"total {res.get('total_s')} s of a {res.get('budget_s')} s budget"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes on any device: checks the command, not speed")
    ap.add_argument("--stage", default=os.path.join(REPO, ".stage"))
    ap.add_argument("--dataset_dir", default=None)
    ap.add_argument("--train_list", default="train.list")
    ap.add_argument("--test_list", default="subset_test.list")
    ap.add_argument("--budget_s", type=float, default=540.0)
    ap.add_argument("--iterations", type=int, default=300, help="STLU-Net iterations timed in part c")
    ap.add_argument("--probe_val_interval", type=int, default=250)
    ap.add_argument("--skip", default="", help="parts to skip, e.g. a,b")
    args = ap.parse_args(argv)
    if args.tiny:
        args.probe_val_interval = 2
    os.makedirs(args.out, exist_ok=True)
    clock = Clock(args.budget_s)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    sys.path.insert(0, REPO)
    from benchmarks import gpu_speed

    res: dict = {"tiny": args.tiny, "budget_s": args.budget_s, "facts": gpu_speed.device_facts(device)}
    path = os.path.join(args.out, "device_check.json")
    record(res, path)
    overrides = dict(TINY) if args.tiny else {}
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as work:
        if "a" not in skip:  # a. the CUDA tests
            a = run_logged([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
                           os.path.join(args.out, "cuda_tests.log"), timeout=min(150, clock.left() * 0.25))
            a["summary"] = a["tail"].strip().splitlines()[-1] if a["tail"].strip() else ""
            res["cuda_tests"] = a
            record(res, path)
        data = prepare_data(args, work)
        res["data"] = {k: v for k, v in data.items() if k != "dataset_dir"}
        if "b" not in skip:  # b. every method's speed
            speed_json = os.path.join(args.out, "speed.json")
            speed_args = ["--json", speed_json] + (["--tiny", "--methods", "supervised,stlu"] if args.tiny else
                                                   ["--warmup", "5", "--iterations", "15"])
            try:
                res["speed"] = gpu_speed.main(speed_args)
            except Exception as e:  # recorded; the other parts still run
                res["speed"] = {"error": f"{type(e).__name__}: {e}"}
            record(res, path)
        if "c" not in skip:  # c. STLU-Net with validation, extrapolated to 15,000 iterations
            try:
                res["stlu_timed"] = timed_training(data, overrides, 4 if args.tiny else args.iterations, work)
            except Exception as e:
                res["stlu_timed"] = {"error": f"{type(e).__name__}: {e}"}
            record(res, path)
        if "e" not in skip:  # e. the compile option, compiled trainer against the eager bare step
            res["compiled_speed"] = compiled_speed(args, clock, device)
            record(res, path)
        if "d" not in skip:  # d. the quality probe for the time left
            seconds = 10 if args.tiny else max(clock.left() - 150, 30)  # evaluation and writing after training
            probe_over = dict(overrides)
            if args.tiny:
                probe_over.update({"max_iterations": 4})
            res["probe_seconds"] = int(seconds)
            deadline = time.perf_counter() + max(clock.left() - 20, 60)
            res["probe"] = quality_probe(args, data, seconds, probe_over, args.out, deadline, work)
            record(res, path)
    res["total_s"] = round(args.budget_s - clock.left(), 1)
    record(res, path)
    with open(os.path.join(args.out, "device_check.md"), "w") as f:
        f.write(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
