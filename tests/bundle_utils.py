"""Helpers to run bundle commands the way users do: ``python -m monai.bundle ...`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def config_list(bundle: str, *names: str) -> str:
    files = [str(REPO_ROOT / "bundles" / bundle / "configs" / n) for n in names]
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


# keys that only one method's override file defines (a key no config file defines is refused), set small for tests
METHOD_TEST_KEYS = {"bcp": ["--bcp_pretrain_iterations", "2"], "ua_mt": ["--uncertainty_passes", "2"]}


def method_args(method: str) -> list[str]:
    """The command-line overrides of ``method``'s own keys for a quick test run (none for most methods)."""
    return list(METHOD_TEST_KEYS.get(method, []))


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The last non-blank line a command printed (its standard output, then its standard error, where the project's
    sentence goes)."""
    lines = [line for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_bundle(*args: str, cwd=REPO_ROOT, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.pop("STLU_LA_DATA", None)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


# Source for the kill tests' subprocess scripts: patch_torch_save(kill_at, matches) makes the kill_at-th torch.save
# whose path matches write part of its file and then die by SIGKILL, as a job killed mid-write would (with error, raise
# it instead, as a write to a full disk fails).
KILLING_SAVE = """
import os, signal
import torch

def patch_torch_save(kill_at, matches=lambda path: True, error=None):
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        if matches(str(f)):
            calls.append(f)
            if len(calls) == kill_at:
                with open(f, "wb") as out:
                    out.write(b"PK" + b"0" * 1000)
                    out.flush()
                if error:  # torch's own words for a write that the disk refused
                    raise RuntimeError(error)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
"""


def quick_subset(values, quick):
    """``values`` as pytest parameters, those not in ``quick`` marked ``long`` (the long suite CI runs after the
    README's quick test command): the quick suite keeps a representative few of a sweep."""
    import pytest

    return [pytest.param(v, marks=() if v in quick else pytest.mark.long) for v in values]
