"""Multi-process training on CPU (Gloo) with ``torchrun``, as ``multi_gpu_train.json`` runs it on GPUs (NCCL): every
network a method owns (the trained one, CPS's network B, Mean Teacher's EMA teacher, SASSNet's discriminator) ends
equal on both ranks, for the methods that call the network's other entry points too (DTC, SASSNet, CCT, URPC, MC-Net,
MC-Net+, SS-Net: EntryPointDDP), though
each rank draws its own shard and its own augmentations (without DistributedDataParallel they differ: the check can
fail), and a distributed run resumes from its checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from monai_stlu.data import write_synthetic_la

pytestmark = pytest.mark.long  # the long suite (CI runs it after the README's quick test command)

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 12 cases: 4 labeled, 2 validation, 6 unlabeled, so every rank gets full batches of its shard; 3 test cases
    return write_synthetic_la(str(tmp_path_factory.mktemp("ddp") / "la"), num_train=12, num_test=3, shape=(48, 48, 40))


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory):
    # 40 cases: 16 labeled, 8 validation, 16 unlabeled: 8 processes get a batch of 2 + 2 and a validation case each,
    # and 2 processes BCP's batches of 4 + 4
    return write_synthetic_la(str(tmp_path_factory.mktemp("ddp_wide") / "la"), num_train=40, num_test=1,
                              shape=(48, 48, 40))


def torchrun(method: str, data: str, root, *extra: str, processes: int = 2, warnings: str = "ignore",
             labeled: int = 4, val: int = 2, launcher: list[str] | None = None, expect_failure: bool = False,
             ) -> subprocess.CompletedProcess:
    """``method`` trained through the bundle under torchrun (``processes`` 1: the same run in one plain process;
    ``launcher``: torchrun's own arguments instead of a standalone single-node launch)."""
    configs = [CONFIGS / "train.json", CONFIGS / "quick.json", CONFIGS / "methods" / f"{method}.json"]
    if launcher is None:
        launcher = ["--standalone", "--nnodes=1", f"--nproc_per_node={processes}"] if processes > 1 else None
    if launcher is not None:
        configs.append(CONFIGS / "multi_gpu_train.json")
    cmd = [sys.executable, *(["-m", "torch.distributed.run", *launcher] if launcher else []), "-m", "monai.bundle",
           "run", "training", "--config_file",
           "[" + ",".join(f"'{c}'" for c in configs) + "]",
           "--dataset_dir", data, "--bundle_root", str(root), "--num_labeled", str(labeled), "--num_val", str(val),
           "--n_filters", "4", "--patch_size", "[32,32,32]", "--val_stride", "[16,16,16]", "--val_interval", "2",
           "--progress", "false", "--amp", "false", *(["--rank_state_dir", str(root / "ranks")] if launcher else []),
           *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS=warnings)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if bool(proc.returncode) != expect_failure:
        raise AssertionError(f"torchrun exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def rank_difference(root) -> tuple[float, set[str]]:
    a = torch.load(root / "ranks" / "rank0.pt", weights_only=True)
    b = torch.load(root / "ranks" / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a), {".".join(k.split(".")[:2]) for k in a}


@pytest.mark.parametrize("method, owned", [
    ("stlu", None), ("cps", "method.network_b"), ("mean_teacher", "method.teacher"),
    # the methods that call another entry point of the network (forward_sdf, forward_all, forward_embedding)
    ("dtc", None), ("sassnet", "method.discriminator"), ("cct", None), ("urpc", None), ("mcnet", None),
    ("mcnet_plus", None), ("ssnet", None), ("ml", None), ("mcf", None),
    ("tracoco", "method.network_b"),
    ("supervised", None), ("ua_mt", "method.teacher"), ("ict", "method.teacher"), ("dan", "method.discriminator"),
])
def test_ranks_stay_in_sync(data, method, owned, tmp_path):
    torchrun(method, data, tmp_path, "--max_iterations", "4")
    diff, parts = rank_difference(tmp_path)
    assert diff == 0.0, f"{method}: ranks differ by {diff}"
    assert owned is None or owned in parts, parts  # the method's own network is compared too
    sub = "" if method == "stlu" else method
    state = torch.load(tmp_path / "models" / sub / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # a plain state dict, as single-process runs save


def test_bcp_stays_in_sync(wide_data, tmp_path):
    """BCP (batches of 4 labeled + 4 unlabeled per process, its pre-training then self-training from the best
    pre-trained model, an EMA teacher): both phases under two processes end with equal networks."""
    proc = torchrun("bcp", wide_data, tmp_path, "--max_iterations", "4", labeled=8)
    assert "self-training" in (proc.stdout + proc.stderr).lower(), proc.stdout[-2000:]
    diff, parts = rank_difference(tmp_path)
    assert diff == 0.0 and "method.teacher" in parts


def test_eight_processes_train_in_sync(wide_data, tmp_path):
    """The largest world size the LA defaults are meant for: 8 processes, each with a 2 + 2 batch of its shard and
    one validation case."""
    torchrun("mean_teacher", wide_data, tmp_path, "--max_iterations", "2", processes=8, labeled=16, val=8)
    ranks = sorted(p.name for p in (tmp_path / "ranks").glob("rank*.pt"))
    assert ranks == [f"rank{r}.pt" for r in range(8)]
    ref = torch.load(tmp_path / "ranks" / "rank0.pt", weights_only=True)
    for r in range(1, 8):
        other = torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True)
        assert max(float((ref[k] - other[k]).abs().max()) for k in ref) == 0.0, r


def test_two_nodes_on_one_machine(data, tmp_path):
    """Two torchrun launches of one process each, ``--nnodes 2`` with a rendezvous on 127.0.0.1, as two machines run
    it: one run, equal networks, rank 0's model saved."""
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = {}

    def node(rank):
        launcher = ["--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                    f"--master_port={port}"]
        results[rank] = torchrun("supervised", data, tmp_path, "--max_iterations", "2", launcher=launcher)

    threads = [threading.Thread(target=node, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1]
    diff, _ = rank_difference(tmp_path)
    assert diff == 0.0
    assert (tmp_path / "models" / "supervised" / "model.pt").is_file()


def test_sync_batchnorm_is_refused_on_cpu_before_training(data, tmp_path):
    """``--sync_batchnorm true`` converts the network's BatchNorm layers to SyncBatchNorm on GPUs; torch runs it on
    GPUs only, so a CPU (Gloo) run ends in one sentence naming the key, before any iteration."""
    proc = torchrun("supervised", data, tmp_path, "--max_iterations", "2", "--sync_batchnorm", "true",
                    expect_failure=True)
    assert "sync_batchnorm true needs CUDA GPUs" in proc.stderr + proc.stdout
    assert " loss: " not in proc.stdout + proc.stderr


def test_without_ddp_the_ranks_drift_apart(data, tmp_path):
    torchrun("stlu", data, tmp_path, "--max_iterations", "2", "--network", "$@network_def.to(@device)")
    diff, _ = rank_difference(tmp_path)
    assert diff > 1e-4  # each rank trained on its own shard: the check above is not trivially met


def test_distributed_run_resumes(data, tmp_path):
    torchrun("mean_teacher", data, tmp_path, "--max_iterations", "2")
    proc = torchrun("mean_teacher", data, tmp_path, "--max_iterations", "4")
    assert "resumed from" in proc.stdout + proc.stderr and "at iteration 2" in proc.stdout + proc.stderr
    state = torch.load(tmp_path / "models" / "mean_teacher" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4
    diff, _ = rank_difference(tmp_path)
    assert diff == 0.0


def test_sharded_evaluation_writes_the_single_process_metrics(data, tmp_path):
    """Two processes score 2 + 1 of the 3 test cases; rank 0's metrics.csv equals a single-process evaluation's."""
    import csv

    torchrun("stlu", data, tmp_path, "--max_iterations", "2")
    small = ["--dataset_dir", data, "--bundle_root", str(tmp_path), "--num_labeled", "4", "--num_val", "2", "--n_filters",
             "4", "--patch_size", "[32,32,32]", "--eval_stride", "[16,16,16]", "--progress", "false"]
    files = [CONFIGS / "train.json", CONFIGS / "quick.json", CONFIGS / "evaluate.json"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    rows = {}
    for name, launcher, extra in (("single", [], []),
                                  ("sharded", ["-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                                               "--nproc_per_node=2"], [CONFIGS / "multi_gpu_evaluate.json"])):
        config = "[" + ",".join(f"'{c}'" for c in files + extra) + "]"
        out = tmp_path / name
        cmd = [sys.executable, *launcher, "-m", "monai.bundle", "run", "--config_file", config, *small,
               "--output_dir", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        with open(out / "metrics.csv") as f:
            rows[name] = sorted((r["case"], r["class"], round(float(r["dice"]), 6), round(float(r["hd95_vox"]), 4))
                                for r in csv.DictReader(f))
    assert len(rows["single"]) == 3 and rows["sharded"] == rows["single"]


def test_a_time_limit_stops_every_rank_at_the_same_iteration(data, tmp_path):
    """``--max_train_seconds`` under torchrun: every rank has the handler (one all-reduce of the decision per
    iteration, paired on every rank with the same collectives), so they stop after the same iteration, the run exits
    as finished and its networks are equal on both ranks."""
    proc = torchrun("supervised", data, tmp_path, "--max_iterations", "400", "--max_train_seconds", "5")
    log = proc.stdout + proc.stderr
    assert "time limit of 5 s reached at iteration" in log, log[-3000:]
    state = torch.load(next((tmp_path / "models" / "supervised").glob("checkpoint_*.pt")), weights_only=True)
    assert 0 < state["trainer"]["iteration"] < 400
    diff, _ = rank_difference(tmp_path)
    assert diff == 0.0


def test_a_checkpoint_resumes_across_torchrun_and_one_process(data, tmp_path):
    """CPS's network B is wrapped in DDP under torchrun; its checkpoint keys are the plain network's, so a run begun
    under torchrun resumes in one process and the reverse, and the wrapped networks are not rebuilt from scratch."""
    torchrun("cps", data, tmp_path, "--max_iterations", "2")
    ckpt = next((tmp_path / "models" / "cps").glob("checkpoint_*.pt"))
    keys = torch.load(ckpt, weights_only=True)["method"].keys()
    assert any(k.startswith("network_b.") for k in keys) and not any(".module." in k or k.startswith("module.")
                                                                     for k in keys)
    single = torchrun("cps", data, tmp_path, "--max_iterations", "4", processes=1)
    assert "resumed from" in single.stdout + single.stderr and "at iteration 2" in single.stdout + single.stderr
    again = torchrun("cps", data, tmp_path, "--max_iterations", "6")
    assert "resumed from" in again.stdout + again.stderr and "at iteration 4" in again.stdout + again.stderr
    state = torch.load(next((tmp_path / "models" / "cps").glob("checkpoint_*.pt")), weights_only=True)
    assert state["trainer"]["iteration"] == 6


def test_channels_last_is_set_before_ddp_lays_out_its_buckets(data, tmp_path):
    """``channels_last`` (the bundle's default) converts the network before DDP wraps it: no per-step gradient
    copy, which torch announces as a stride warning."""
    proc = torchrun("stlu", data, tmp_path, "--max_iterations", "2", "--channels_last", "true", warnings="default")
    assert "Grad strides do not match bucket view strides" not in proc.stdout + proc.stderr
