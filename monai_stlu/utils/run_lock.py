# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""One run per output folder: a lock file that names its holder."""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time

from monai_stlu.utils.errors import on_fatal_error

__all__ = ["RunLock", "RunLockedError"]

logger = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another live run holds the folder."""


_SETTLE_SECONDS = 1.0


def _valid_record(record: dict) -> bool:
    """Whether a lock file's record names a holder (a positive integer PID)."""
    pid = record.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """A lock on a run's output folder (``<folder>/.run.lock``, a JSON record of the holder's PID, host, start time
    and command), so two runs never write the same checkpoints.

    :py:meth:`acquire` creates the file atomically. A second run into a locked folder stops with one sentence naming
    the holder and the ways out; a lock left by a dead process on this host (a killed run), and one that names no
    holder (empty, cut short by a full disk, unreadable), is taken over with a warning; the holding process may
    acquire again (MONAI Label trains several times in one process). The file is private (mode 0600). The lock is
    released by :py:meth:`release` (a bundle's ``finalize``), at interpreter exit, and when the project's error hook
    ends a failed run. Under ``torchrun`` only rank 0 (``RANK``) takes it.

    Args:
        folder: the run's output folder (the bundle's ``ckpt_dir``); created when missing.
        enabled: False skips locking altogether.
        name: the lock file's name inside ``folder``.

    Example (bundle config)::

        "run_lock": {"_target_": "monai_stlu.utils.RunLock", "folder": "@ckpt_dir"},
        "initialize": ["$@run_lock.acquire()"], "finalize": ["$@run_lock.release()"]
    """

    def __init__(self, folder: str, enabled: bool = True, name: str = ".run.lock") -> None:
        from monai_stlu.utils.flags import as_bool

        self.folder = os.path.abspath(str(folder))
        self._created: list[str] = []
        self.path = os.path.join(self.folder, name)
        self.enabled = as_bool(enabled) and int(os.environ.get("RANK", "0")) == 0
        self.held = False

    def _record(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)}

    def read(self) -> dict | None:
        """The holder's record, or None when the folder is not locked (or the record cannot be read)."""
        try:
            with open(self.path) as f:
                record = json.load(f)
            return record if isinstance(record, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _write_new(self) -> bool:
        """Create the lock file with this process's record (mode 0600: the command line may carry a tracking URI's
        token); False when it exists. A record that cannot be written (a full disk) leaves no file behind."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
        except BaseException as e:
            os.remove(self.path)
            if isinstance(e, OSError) and e.filename is None:  # a write names no file: name the lock
                raise OSError(e.errno, e.strerror or str(e), self.path) from e
            raise
        return True

    def _take_over(self, why: str) -> None:
        logger.warning(f"{self.path}: taking over the lock of {why}.")
        tmp = f"{self.path}.{os.getpid()}"
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring).

        Raises:
            RunLockedError: another live run holds the folder.
        """
        if not self.enabled or self.held:
            return self
        missing, parent = [], self.folder
        while parent and not os.path.isdir(parent) and os.path.dirname(parent) != parent:
            missing.append(parent)
            parent = os.path.dirname(parent)
        os.makedirs(self.folder, exist_ok=True)
        self._created = missing  # deepest first: removed at release while they are still empty (a run that failed)
        for _ in range(3):
            if self._write_new():
                break
            holder = self.read()
            if holder is None:
                continue  # released in between
            if not _valid_record(holder):
                time.sleep(_SETTLE_SECONDS)  # a lock being created by another run is empty for an instant
                holder = self.read()
                if holder is None:
                    continue
                if not _valid_record(holder):  # empty, unreadable or foreign: no live holder is named in it
                    self._take_over("no run (the file names no holder: empty, cut short or unreadable)")
                    continue  # read back: another taker may have replaced it too
            pid, host = int(holder["pid"]), holder.get("host")
            if pid == os.getpid() and host == socket.gethostname():
                break  # this process holds it already
            if host == socket.gethostname() and not _pid_alive(pid):
                self._take_over(f"a run that is gone (PID {pid}, started {holder.get('started', '?')})")
                continue  # read back: another taker may have replaced it too
            raise RunLockedError(
                f"{self.folder} is in use by another run (PID {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}: {holder.get('command', '?')}): wait for it to end, train into "
                f"another folder (--output_subdir NAME, --bundle_root DIR, or monai_stlu train --output DIR), or, if "
                f"that run is gone, delete {self.path}."
            )
        else:
            raise RunLockedError(f"{self.path}: the lock could not be taken (it changed hands repeatedly).")
        self.held = True
        atexit.register(self.release)
        on_fatal_error(self.release)
        return self

    def release(self) -> None:
        """Give the lock up (only when this process holds it)."""
        if not self.held:
            return
        holder = self.read()
        if holder and holder.get("pid") == os.getpid():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.held = False
        for folder in self._created:  # the folders acquire made, if the run left nothing in them
            try:
                os.rmdir(folder)
            except OSError:
                break
        self._created = []
