"""Virtual environments for tests that need an installation of their own, built once per key under
``~/.cache/monai_stlu/venvs`` (``STLU_TOOL_VENVS`` to move it; ``STLU_FRESH_TOOL_VENVS=1`` rebuilds it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


_REBUILT: set[Path] = set()


def cached_venv(name: str, key: bytes, install: list[list[str]]) -> Path:
    """The virtual environment ``<name>-<hash of key and this Python>``, built when missing by running each command
    of ``install`` with the venv's ``python`` in front (``["-m", "pip", "install", ...]``). A marker file written
    last says the build finished (a venv cannot be built elsewhere and moved into place: its scripts name their
    interpreter by path). The key must hold everything the build depends on (a requirements file's text, a wheel's
    declared dependencies and the commands), so that a changed requirement builds a new environment and an old one
    cannot hide it.

    A build that fails or is interrupted (a slow machine, a lost connection) keeps what it installed: the next run
    resumes it (pip skips what is there), with no time limit of its own. Two test runs building the same environment
    at once take turns (a file lock), and the second finds it built."""
    import fcntl

    digest = hashlib.sha256(key + sys.version.encode()).hexdigest()[:12]
    base = Path(os.environ.get("STLU_TOOL_VENVS", Path.home() / ".cache" / "monai_stlu" / "venvs"))
    venv, done = base / f"{name}-{digest}", base / f"{name}-{digest}.complete"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{name}-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.environ.get("STLU_FRESH_TOOL_VENVS") == "1" and venv not in _REBUILT:  # once per test session
            done.unlink(missing_ok=True)
            shutil.rmtree(venv, ignore_errors=True)
            _REBUILT.add(venv)
        if not done.is_file():
            if not (venv / "bin" / "python").is_file():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            for cmd in install:
                proc = subprocess.run([str(venv / "bin" / "python"), *cmd], capture_output=True, text=True)
                if proc.returncode:
                    pytest.fail(f"building the {name} environment at {venv}: {' '.join(cmd)} failed (what was installed "
                                f"is kept; the next run resumes):\n{proc.stderr[-3000:]}")
            done.write_bytes(key)
    return venv
