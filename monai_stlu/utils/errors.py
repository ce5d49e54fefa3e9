# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""The last line a user sees when a command fails: the project's one sentence, not the wrapper's.

``python -m monai.bundle run`` wraps every error raised while a config is evaluated (``Failed to evaluate
ConfigExpression ...``, ``Failed to instantiate component ...``), and MONAI's ``Compose`` wraps every transform error
(``applying transform ...``), so the sentence that names the file and the problem ends up tens of lines above the end
of the traceback. :py:func:`install_error_hook` replaces ``sys.excepthook`` (and ``threading.excepthook``) in
command-line runs: the full traceback is printed as before, then one blank line and the root sentence
(:py:func:`explain`) as the last line, and the process exits with status 1 at once, so no worker thread (a
``CacheDataset`` pool still inside h5py, a loader thread) can keep it alive or abort it at shutdown. SIGTERM runs the
same cleanups (a run's lock is released) before the process dies of it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType

__all__ = ["exception_chain", "explain", "install_error_hook", "is_command_line_run", "on_fatal_error"]

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# our messages are sentences: shown without their type; other errors raised in our code keep it (they are bugs)
_SENTENCE_TYPES = (ValueError, OSError, RuntimeError, KeyError, LookupError, ImportError)
_cleanups: list[Callable[[], None]] = []
_installed = False


def on_fatal_error(func: Callable[[], None]) -> Callable[[], None]:
    """Register ``func`` to run when the hook ends the process (e.g. releasing a run's lock), or SIGTERM does;
    returns ``func``."""
    _cleanups.append(func)
    return func


def _run_cleanups() -> None:
    """Run every registered cleanup; none may stop the exit that follows."""
    for cleanup in list(_cleanups):
        try:
            cleanup()
        except Exception:  # noqa: S110 - nothing may stop the exit
            pass


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``, else an unsuppressed ``__context__``), outermost
    first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return chain


def _raised_here(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by this package's code (the innermost frame of its traceback lies in it)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(PACKAGE_DIR + os.sep)


def _text(exc: BaseException, with_type: bool) -> str:
    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])  # not its repr
    elif isinstance(exc, OSError) and exc.strerror and not with_type:
        message = exc.strerror  # this package's sentence, without "[Errno N] ...: 'file'" around it
    else:
        message = str(exc)
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())  # one line, always
    if with_type or not message:
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return message


def _config_files() -> list[str]:
    from monai_stlu.utils.bundle import config_files_from_argv

    return config_files_from_argv(sys.argv)


def _run_folders() -> list[str]:
    """The folders this command writes to, from its command line (``--ckpt_dir``, ``--output_dir``, ``--bundle_root``,
    ``--filepath``'s folder), else the bundle folder of its first config file."""
    from monai_stlu.utils.bundle import _root_from_config_path, argv_value

    def plain(flag: str) -> list[str]:  # its values that name a folder as they stand (the last one wins)
        values = [argv_value(sys.argv[i:], flag) for i, arg in enumerate(sys.argv) if arg.split("=", 1)[0] == flag]
        return [v for v in values if v and not v.startswith(("$", "@", "%"))][-1:]

    folders = [f for flag in ("--ckpt_dir", "--output_dir", "--bundle_root") for f in plain(flag)]
    folders += [os.path.dirname(os.path.abspath(f)) for f in plain("--filepath")]
    if not folders and _config_files():
        folders = [_root_from_config_path(_config_files()[0])]
    return list(dict.fromkeys(folders))


def _free_space(folder: str) -> str:
    import shutil

    while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"


def _state_dict_mismatch() -> str | None:
    """For a model file that does not fit the network an export builds (``ckpt_export``/``onnx_export``): what the
    file holds, named."""
    from monai_stlu.utils.bundle import argv_value

    ckpt = argv_value(sys.argv, "--ckpt_file")
    if not ckpt:
        return None
    try:
        import torch

        from monai_stlu.handlers.checkpoint_fit import describe_state_dict

        held = describe_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    except Exception:  # the description is a courtesy; the sentence stands without it
        held = "other weights"
    return (f"{ckpt}: holds {held}, which does not fit the network the configs build: export it with the method and "
            "network keys it was trained with (monai_stlu export --model reads them from the model's record; for a "
            "model without one give --method NAME and its keys, e.g. --n_filters 8 for a quick.json model).")


def _foreign(exc: BaseException) -> str | None:
    """A sentence for the common errors raised outside this package (full disk, broken JSON, a missing config, an
    exported model that does not fit its network)."""
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in text:
        where = getattr(exc, "filename", None)
        folders = [os.path.dirname(os.path.abspath(where))] if where else _run_folders()
        place = f" while writing {where}" if where else (
            f" while writing the run's files (under {', '.join(folders)})" if folders else "")
        free = f" ({_free_space(folders[0])} there)" if folders else ""
        return (f"No space left on the device{place}{free}: free some space there or write the run elsewhere "
                "(--bundle_root DIR, or monai_stlu train --output DIR), then run the same command again (it "
                "resumes).")
    if "Error(s) in loading state_dict" in text:
        sentence = _state_dict_mismatch()
        if sentence:
            return sentence
    if isinstance(exc, json.JSONDecodeError):
        for path in _config_files():
            try:
                with open(path) as f:
                    json.load(f)
            except json.JSONDecodeError as e:
                return f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})."
            except OSError:
                continue
        return f"a JSON file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
    if isinstance(exc, FileNotFoundError) or "Cannot find the config file" in text:
        missing = [p for p in _config_files() if not os.path.isfile(p)]
        if missing:
            return f"{missing[0]}: no such config file."
    needed = re.match(r"Please install (\S+) before using (\S+)\.", text)  # MONAI's OptionalImportError
    if needed:
        return (f"{needed.group(2)} needs the {needed.group(1)} package, which is not installed: "
                f"{_install_line(needed.group(1))}.")
    return None


def _install_line(module: str) -> str:
    """A pip command that installs ``module`` wherever this package came from: the requirements of the extra of
    this package that names it (read from the installed package's metadata, e.g. ``mlflow-skinny``), else the
    module's own name."""
    from importlib import metadata

    try:
        requires = metadata.requires("monai_stlu") or []
    except metadata.PackageNotFoundError:
        requires = []
    extras: dict[str, list[str]] = {}
    for line in requires:
        spec, _, marker = line.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra:
            extras.setdefault(extra.group(1), []).append(spec.strip())
    chosen = extras.get(module) or [module]
    return "pip install " + " ".join(f"'{r}'" if any(c in r for c in "<>=!~[") else r for r in chosen)


def explain(exc: BaseException) -> str:
    """The one sentence that says what went wrong: the innermost error this package raised (its message names the
    file or key and the problem), else a sentence for a known foreign error, else the innermost error's own line."""
    chain = exception_chain(exc)
    full = [e for e in chain if isinstance(e, OSError) and e.errno == errno.ENOSPC and e.strerror == os.strerror(
        errno.ENOSPC)]  # the system's own words for a full disk, wherever raised: said with the file (if any) and room
    if full:
        return str(_foreign(next((e for e in full if e.filename), full[-1])))
    ours = [e for e in reversed(chain) if _raised_here(e)]  # innermost first
    for e in ours:  # a sentence raised from a bare error of ours (a StopIteration turned into a ValueError) wins
        if isinstance(e, _SENTENCE_TYPES) and " " in str(e).strip():  # KeyError('x') from a bug is no sentence
            return _text(e, with_type=False)
    if ours:
        return _text(ours[0], with_type=True)
    for e in reversed(chain):
        sentence = _foreign(e)
        if sentence:
            return sentence
    return _text(chain[-1], with_type=True)


def _finish(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, thread: str = "") -> None:
    try:
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        prefix = f"(in thread {thread}) " if thread else ""
        sentence = explain(exc)
        sys.stderr.write(f"\n{prefix}{sentence}\n")
        _report(sentence)
        _run_cleanups()
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: S110
                pass
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(1)


def _report(sentence: str) -> None:
    """Hand the sentence to whoever started this process: ``torchrun`` (its error file, whose message its failure
    summary shows as the rank's ``traceback``) and ``monai_stlu train`` (``MONAI_STLU_ERROR_FILE``, printed last)."""
    elastic = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if elastic and not os.path.exists(elastic):
        with open(elastic, "w") as f:
            json.dump({"message": {"message": sentence, "extraInfo": {"timestamp": str(int(time.time()))}}}, f)
    ours = os.environ.get("MONAI_STLU_ERROR_FILE")
    if ours:
        with open(ours, "a") as f:
            f.write(sentence + "\n")


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt) or os.environ.get("MONAI_STLU_ERROR_HOOK") == "0":
        sys.__excepthook__(exc_type, exc, tb)
        return
    _finish(exc_type, exc, tb)


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    _finish(args.exc_type, args.exc_value, args.exc_traceback, thread=getattr(args.thread, "name", ""))


def _cleanup_and_die(signum: int, frame: object) -> None:
    """SIGTERM: run the registered cleanups (a run's lock is released), then die of the signal as before."""
    import signal

    _run_cleanups()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def is_command_line_run(argv: list[str] | None = None) -> bool:
    """Whether this process is a command a user typed: ``python -m monai.bundle ...`` (also under ``torchrun``),
    ``python -m monai_stlu ...`` or the ``monai_stlu`` console script."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return False
    script = os.path.abspath(argv[0]).replace(os.sep, "/")
    return (
        script.endswith(("/monai/bundle/__main__.py", "/monai_stlu/__main__.py"))
        or os.path.basename(script) == "monai_stlu"
    )


def install_error_hook(force: bool = False) -> bool:
    """Install the hooks (once) when this process is a command-line run (:py:func:`is_command_line_run`) or
    ``force``; ``MONAI_STLU_ERROR_HOOK=0`` keeps Python's own behaviour. Returns whether they are installed."""
    global _installed
    if _installed:
        return True
    if os.environ.get("MONAI_STLU_ERROR_HOOK") == "0" or not (force or is_command_line_run()):
        return False
    sys.excepthook = _excepthook
    threading.excepthook = _thread_hook
    if threading.current_thread() is threading.main_thread():
        import signal

        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # a stopped run releases its lock (on_fatal_error)
            signal.signal(signal.SIGTERM, _cleanup_and_die)
    _installed = True
    return True
