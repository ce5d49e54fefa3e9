"""Shared fixtures: the real LA cases in ../shared (skipped outside CI when absent) and tiny synthetic data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers (pytest -n N): one thread each, and their subprocesses
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
if str(REPO_ROOT) not in sys.path:  # the benchmarks package (its reference window loop) is imported by tests
    sys.path.insert(0, str(REPO_ROOT))
SHARED_LA = Path(os.environ.get("STLU_SHARED_LA", REPO_ROOT.parent / "shared" / "data" / "LA"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def shared_la_dir() -> Path:
    """The shared LA directory, or a skip (a failure under CI=true, where it must exist)."""
    if (SHARED_LA / "subset_train.list").is_file():
        return SHARED_LA
    msg = f"the real LA cases are not at {SHARED_LA} (set STLU_SHARED_LA to point at them)"
    if IN_CI:
        pytest.fail(msg + "; CI always has ../shared, so this is an error there")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def la_dir() -> Path:
    return shared_la_dir()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


def sphere_cases(n: int, size: int = 32, seed: int = 0, with_label: bool = True) -> list[dict]:
    """``n`` tiny noisy-sphere volumes as channel-first dicts (float32 image, float32 label)."""
    rng = np.random.RandomState(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float32)
    cases = []
    for _ in range(n):
        c = rng.uniform(size * 0.35, size * 0.65, 3)
        r = rng.uniform(size * 0.15, size * 0.28)
        lab = (((grid - c[:, None, None, None]) ** 2).sum(0) < r * r).astype(np.float32)
        img = lab + rng.normal(0, 0.5, lab.shape).astype(np.float32)
        case = {"image": img[None]}
        if with_label:
            case["label"] = lab[None]
        cases.append(case)
    return cases
