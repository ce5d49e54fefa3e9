# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Command line (``python -m monai_stlu`` or the ``monai_stlu`` console script; ``--help`` on each command):

- ``train``: a bundle's training for one method, printed as the ``python -m monai.bundle run`` call it makes, then run;
- ``compare --dataset_dir DIR --methods a,b --seeds 0,1,2 -o OUT``: methods x seeds under one protocol, one table;
- ``predict -i FILE_OR_DIR -o DIR``: NIfTI/NRRD/DICOM/h5 in, ``<name>_seg.nii.gz`` out on the input's grid;
- ``export --model MODEL -o FILE.ts|FILE.onnx``: TorchScript or ONNX, the network rebuilt from the model's record;
- ``evaluate -p PRED_DIR -l LABEL_DIR``: the bundles' metrics CSVs for any folder of predictions;
- ``plot RUN_DIR``: ``progress.png`` (training curves) and ``per_case_dice.png``;
- ``synth``, ``check``, ``convert la|pancreas|brats|nifti``, ``generate_bundles``.
"""

from __future__ import annotations

import functools
import json
import glob
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["synth", "check", "generate_bundles", "train", "compare", "predict", "export", "evaluate", "plot", "main"]


def synth(
    out_dir: str,
    num_train: int = 12,
    num_test: int = 4,
    shape: Sequence[int] = (96, 96, 64),
    seed: int = 0,
    bundle: str = "stlu_la",
) -> str:
    """Write synthetic volumes in a bundle's h5 layout (LA: ``train.list``, ``test.list``, ``2018LA_Seg_Training
    Set/``; Pancreas-CT: ``Pancreas_h5/``; BraTS-2019: ``data/`` with ``train.txt``, ``val.txt``, ``test.txt``).

    Args:
        out_dir: dataset folder to create.
        num_train: cases in the training list.
        num_test: cases in the test list.
        shape: volume shape X Y Z.
        seed: random seed.
        bundle: whose layout: ``stlu_la``, ``stlu_pancreas`` or ``stlu_brats``.
    """
    from monai_stlu.data import SYNTHETIC_LAYOUTS, write_synthetic_la

    if bundle not in SYNTHETIC_LAYOUTS:
        raise ValueError(f"bundle {bundle!r} is not one of {sorted(SYNTHETIC_LAYOUTS)}.")
    write_synthetic_la(out_dir, num_train=num_train, num_test=num_test, shape=tuple(shape), seed=seed,
                       **SYNTHETIC_LAYOUTS[bundle])
    print(f"wrote {num_train} training and {num_test} test cases in the {bundle} layout to {out_dir}")
    return out_dir


def check(
    dataset_dir: str,
    train_list: str = "train.list",
    test_list: str = "test.list",
    num_labeled: int = 8,
    num_val: int = 4,
    num_classes: int = 2,
    datalist_file: str | None = None,
    case_path: str | None = None,
    val_list: str | None = None,
    in_channels: int = 1,
) -> int:
    """Read every case of a data set, as nnU-Net's dataset integrity check does, and report every problem (missing
    or unreadable file, missing dataset, shape mismatch, NaN/Inf, a blank image, an image with other channels or
    dimensions than the network takes, label values outside the classes, a test case that is also a training case).
    Returns the number of cases checked.

    Args:
        case_path: where a case lies under ``dataset_dir`` (default: the LA layout), as the bundles' ``case_path``.

    Raises:
        ValueError: after the report, when a case has a problem (the last line names the first one).
    """
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from monai_stlu.data import LA_CASE_PATH, H5Reader, ValidateSegmentationd, semi_supervised_split
    from monai_stlu.utils import explain

    split = semi_supervised_split(
        dataset_dir, datalist_file, train_list, test_list, num_labeled, num_val, case_path=case_path or LA_CASE_PATH,
        val_list=val_list,
    )
    load = Compose(
        [
            LoadImaged("image", reader=H5Reader("image")),
            LoadImaged("label", reader=H5Reader("label"), allow_missing_keys=True),
            EnsureChannelFirstd(["image", "label"], allow_missing_keys=True),
            ValidateSegmentationd(["image", "label"], num_classes=num_classes, in_channels=in_channels),
        ]
    )
    n, problems = 0, []
    for part, cases in split.items():
        bad = 0
        for case in cases:
            n += 1
            try:
                load(case)
            except Exception as e:  # every case is read; each problem is reported
                bad += 1
                problems.append(explain(e))
                print(f"{part} {case.get('id', case['image'])}: {problems[-1]}")
        print(f"{part}: {len(cases) - bad} of {len(cases)} cases OK")
    if problems:
        raise ValueError(f"{len(problems)} of {n} cases have a problem (listed above); the first: {problems[0]}")
    return n


def generate_bundles(check: bool = False, bundles_dir: str | None = None) -> int:
    """Regenerate the Pancreas-CT and BraTS-2019 bundles' shared configs from the LA bundle and each bundle's
    ``configs/bundle_delta.json``; with ``--check``, only list the files that are out of date. Returns (and with
    ``--check`` exits with) the number of such files."""
    from monai_stlu.bundle import generate_bundles as generate

    changed = generate(bundles_dir=bundles_dir, check=check)
    for path in changed:
        print(("out of date: " if check else "wrote ") + path)
    if check and changed:
        raise SystemExit(f"{len(changed)} generated bundle files are out of date: run python -m monai_stlu generate_bundles")
    return len(changed)


def release_bundle(
    bundle: str, o: str, weights: str | None = None, overwrite: bool = False, backbone: str | None = None,
    weights_url: str | None = None, evaluate: str | None = None, test_list: str | None = None,
    training: str = "trained by this bundle",
) -> str:
    """Build a Model Zoo release of a bundle into the zoo-shaped folder ``o`` (``o/models/<bundle>`` and its unit test
    ``o/ci/unit_tests/test_<bundle>.py``; ``o`` may be a model-zoo checkout): the bundle carries this package in
    ``scripts/`` and requires only packages a public index serves. ``--weights MODEL.pt`` (required) ships a trained
    STLU-Net and sets the released configs to the settings it records; ``--weights_url URL`` names where it is uploaded
    (``large_files.yml``); ``--backbone`` must agree with the recorded backbone; ``--evaluate DATA_DIR`` (with
    ``--test_list``) evaluates the release on that data's test cases and writes ``eval_metrics`` and the docs'
    Performance section (``--training`` says how the weights were trained)."""
    from monai_stlu.bundle.release import release_bundle as release

    dest = release(bundle, o, weights=weights, overwrite=overwrite, backbone=backbone, weights_url=weights_url,
                   evaluate=evaluate, test_list=test_list, training=training)
    with open(os.path.join(dest, "configs", "metadata.json")) as f:
        requires = json.load(f)["required_packages_version"]
    upload = "" if weights_url else "; add the weights' upload URL to large_files.yml (--weights_url)"
    print(f"released {bundle} to {dest} (code in scripts/monai_stlu; requires {', '.join(sorted(requires))}; "
          f"weights models/model.pt{upload}); "
          f"zoo unit test: {os.path.join(o, 'ci', 'unit_tests', f'test_{os.path.basename(dest)}.py')}")
    return dest


def _bundle_configs(bundle: str) -> str:
    """The configs folder of a bundle given by name (``stlu_la``, ``stlu_pancreas``, ``stlu_brats``: this
    checkout's ``bundles/``) or by path."""
    from monai_stlu.bundle.generator import default_bundles_dir

    folder = bundle if os.path.isdir(os.path.join(str(bundle), "configs")) else os.path.join(default_bundles_dir(), str(bundle))
    configs = os.path.join(folder, "configs")
    if not os.path.isfile(os.path.join(configs, "train.json")):
        raise FileNotFoundError(f"{bundle}: not a bundle folder or name (no {configs}/train.json).")
    return os.path.abspath(configs)


def _config_files(configs: str, names: Sequence[str], method: str, extra: Sequence[str] = ()) -> str:
    """The ``--config_file`` list: the bundle's files, the method's override, then the user's own override files,
    each checked here (MONAI reads them before monai_stlu is imported, so it could not name a broken one)."""
    import json

    method_file = os.path.join(configs, "methods", f"{method}.json")
    if not os.path.isfile(method_file):
        known = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(configs, "methods", "*.json")))
        raise ValueError(f"method {method!r} is not one of {known}.")
    files = [os.path.join(configs, n) for n in names] + [method_file] + [os.path.abspath(str(f)) for f in extra]
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such config file.")
        if path.endswith(".json"):
            try:
                with open(path) as f:
                    json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from e
    return "[" + ",".join(repr(f) for f in files) + "]"


def _override_args(overrides: dict[str, Any]) -> list[str]:
    """``--key value`` for every other config key given to a command (strings as given, others as Python literals)."""
    return [a for key, value in overrides.items() for a in (f"--{key}", value if isinstance(value, str) else repr(value))]


def _quote(arg: str) -> str:
    """``arg`` for a shell, in double quotes where it holds single quotes only (a config file list reads
    ``"['a.json','b.json']"``), else as ``shlex.quote`` gives it."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def format_command(cmd: Sequence[str]) -> str:
    """``cmd`` as a shell command a user can read and paste: the program and its sub-command on the first line, then
    one ``--key value`` per line, continued with backslashes."""
    lines: list[list[str]] = [[]]
    for arg in cmd:
        if arg.startswith("--") and lines[-1]:
            lines.append([])
        lines[-1].append(_quote(arg))
    return " \\\n    ".join(" ".join(line) for line in lines)


def _run(cmd: list[str], dry_run: bool, repeat_error: bool = False) -> int:
    """Print and run ``cmd``; its exit status. The child runs in a process group of its own, and SIGINT/SIGTERM
    sent to this process are passed on to that group and waited for, so stopping the command stops its training
    (which releases its run lock) instead of leaving it running. With ``repeat_error``, the project's sentence of a
    failed child (from its error hook) is printed again as the last line (``torchrun`` ends with its own summary)."""
    import signal
    import tempfile
    import threading

    print(format_command(cmd), flush=True)
    if dry_run:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        error_file = os.path.join(tmp, "errors.txt")
        child = subprocess.Popen(cmd, env=dict(os.environ, MONAI_STLU_ERROR_FILE=error_file), start_new_session=True)

        def pass_on(signum: int, frame: Any) -> None:
            try:
                os.killpg(child.pid, signum)
            except ProcessLookupError:  # already gone
                pass

        forwarded = (signal.SIGINT, signal.SIGTERM)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, pass_on) for sig in forwarded}
        try:
            rc = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if rc and repeat_error and os.path.isfile(error_file):
            with open(error_file) as f:
                sentences = [line.strip() for line in f if line.strip()]
            if sentences:
                print(sentences[0], file=sys.stderr, flush=True)
    return rc


def _check_bundle_command(cmd: Sequence[str]) -> None:
    """The checks a ``monai.bundle run`` makes of its command line before any work, made here before it starts (so
    that ``--dry_run`` refuses what the run would): keys no config file defines, and ``--max_iterations``."""
    from monai_stlu.utils.settings_check import check_command_line_keys, check_max_iterations

    start = list(cmd).index("monai.bundle") + 1
    check_command_line_keys([os.path.join("monai", "bundle", "__main__.py"), *cmd[start:]])
    if "--max_iterations" in cmd:
        check_max_iterations(cmd[list(cmd).index("--max_iterations") + 1], "--max_iterations")  # digits count


def train(
    bundle: str = "stlu_la",
    method: str = "stlu",
    num_labeled: int | None = None,
    dataset_dir: str | None = None,
    output: str | None = None,
    quick: bool = False,
    dry_run: bool = False,
    config: str | Sequence[str] | None = None,
    nproc_per_node: int = 1,
    **overrides: Any,
) -> int:
    """Train one method of a bundle: builds the ``python -m monai.bundle run training`` call, prints it, runs it
    and, at the end, says where the model is and its best validation Dice.

    Args:
        bundle: ``stlu_la``, ``stlu_pancreas``, ``stlu_brats`` or a bundle folder.
        method: ``stlu``, ``supervised``, ``mean_teacher``, ``ua_mt``, ``cps``, ``mcnet_plus``, ``bcp``, ``dtc``,
            ``sassnet``, ``ssnet``, ``dan``, ``urpc``, ``cct``, ``ict`` or ``mcnet`` (a file in the bundle's
            ``configs/methods``).
        num_labeled: labeled cases (default: the bundle's).
        dataset_dir: the data folder (default: the bundle's, or its environment variable).
        output: folder for ``models/`` and ``eval/`` (default: inside the bundle), one sub-folder per method.
        quick: add the bundle's ``quick.json`` (a few iterations, small crops).
        dry_run: print the command only.
        config: your own override file(s), added last to ``--config_file`` (keys of your own go there).
        nproc_per_node: processes (GPUs) on this machine; more than 1 runs ``torchrun`` with the bundle's
            ``multi_gpu_train.json``, and a failure still ends with the project's sentence.
        overrides: any other config key, e.g. ``--max_iterations 2000`` (passed on as ``--key value``).

    Returns:
        the exit status of the training run.
    """
    if overrides.pop("help", False):  # fire hands --help to **overrides
        print(train.__doc__)
        return 0
    configs = _bundle_configs(bundle)
    names = ["train.json"] + (["quick.json"] if quick else [])
    extra = [config] if isinstance(config, str) else list(config or [])
    launcher = [sys.executable, "-m", "monai.bundle"]
    if int(nproc_per_node) > 1:  # multi_gpu_train.json comes after the method's file, which it builds on
        extra = [os.path.join(configs, "multi_gpu_train.json")] + extra
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(int(nproc_per_node)), "-m", "monai.bundle"]  # standalone: a free port, runs never collide
    cmd = launcher + ["run", "training", "--config_file", _config_files(configs, names, method, extra)]
    if dataset_dir is not None:
        cmd += ["--dataset_dir", os.path.abspath(str(dataset_dir))]
    if num_labeled is not None:
        cmd += ["--num_labeled", str(int(num_labeled))]
    if output is not None:
        out = os.path.abspath(str(output))
        cmd += ["--ckpt_dir", f"$os.path.join({out!r}, 'models', @output_subdir)",
                "--output_dir", f"$os.path.join({out!r}, 'eval', @output_subdir)"]
    cmd += _override_args(overrides)
    _check_bundle_command(cmd)
    rc = _run(cmd, dry_run, repeat_error=int(nproc_per_node) > 1)
    if rc == 0 and not dry_run:
        if "ckpt_dir" in overrides:
            ckpt_dir = str(overrides["ckpt_dir"])
        else:
            import json

            with open(os.path.join(configs, "methods", f"{method}.json")) as f:
                subdir = str(overrides.get("output_subdir", json.load(f).get("output_subdir", "")))
            base = os.path.abspath(str(output if output is not None else overrides.get("bundle_root", os.path.dirname(configs))))
            ckpt_dir = os.path.normpath(os.path.join(base, "models", subdir))
        print(training_summary(ckpt_dir))
    return rc


def compare(*args: Any, **kwargs: Any) -> str:
    """Train and evaluate several methods and seeds under one protocol on your data; write the comparison table,
    learning curves and a verdict (:py:func:`monai_stlu.bundle.compare.compare`, whose arguments these are)."""
    if kwargs.pop("help", False):
        from monai_stlu.bundle.compare import compare as run_comparison

        print(run_comparison.__doc__)
        return ""
    from monai_stlu.bundle.compare import compare as run_comparison

    return run_comparison(*args, **kwargs)


def training_summary(ckpt_dir: str) -> str:
    """Where a run's model is and its best validation Dice (from its last checkpoint)."""
    import torch

    lines = [f"model: {os.path.join(ckpt_dir, 'model.pt')}"]
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "checkpoint_*.pt")), key=os.path.getmtime)
    if ckpts:
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
        saved = state.get("best_model", {}).get("key_metric_saved", [])
        trainer = state.get("trainer", {})
        lines.append(f"iterations: {trainer.get('iteration', '?')}")
        lines.append(f"best validation Dice: {max(p for p, _ in saved):.4f}" if saved else "best validation Dice: none (no validation cases)")
    return "\n".join(lines)


def _model_settings(
    model: str | None, configs: str, method: str | None, overrides: dict[str, Any]
) -> tuple[str, list[str], dict[str, Any]]:
    """The method and the ``--key value`` settings that rebuild the network of a model file from the record it
    carries (:py:mod:`monai_stlu.utils.model_record`): the method whose override file builds the recorded method,
    and each recorded setting that the bundle's inference config holds as a plain value and the user did not give
    (and the record itself). The file is read as data: a record that fails the schema refuses it, before anything
    runs.

    Raises:
        FileNotFoundError: no such model file.
        ValueError: the file is not a model file (unreadable, a training checkpoint), its record is refused, or the
            method it records is not one of the bundle's method files.
    """
    from monai_stlu.utils.model_record import load_model_file, model_record_of, record_overrides
    from monai_stlu.utils.settings_check import top_level_values

    record = model_record_of(load_model_file(model, flat=True), model) if model else {}
    if method is None:
        method = "stlu"
        if record.get("method"):
            files = sorted(glob.glob(os.path.join(configs, "methods", "*.json")))
            target = "." + record["method"]
            builds = [os.path.basename(path)[:-5] for path in files
                      if str(top_level_values([path]).get("method", {}).get("_target_", "")).endswith(target)]
            if not builds:
                raise ValueError(f"{model}: records the method {record['method']}, which none of the method files in "
                                 f"{os.path.join(configs, 'methods')} trains; give --method NAME.")
            # several files may build one class (supervised.json and its recipes): the one named after it first
            named = [b for b in builds if b.replace("_", "") == record["method"].lower().removesuffix("method")]
            method = (named or builds)[-1]
    values = top_level_values([os.path.join(configs, "inference.json")])
    plain = {k for k, v in values.items() if not (isinstance(v, str) and v.startswith(("$", "@", "%")))}
    return method, record_overrides(record, plain - set(overrides), model or "the model file"), record


def predict(
    i: str, o: str, bundle: str = "stlu_la", method: str | None = None, model: str | None = None, dry_run: bool = False,
    **overrides: Any,
) -> int:
    """Segment a file or a folder (h5, NIfTI, NRRD, DICOM series folders): ``<name>_seg.nii.gz`` in ``o``, on the
    input's grid, in its space and orientation. The network is rebuilt as the model file records it (method, filters,
    patch size, ...: a model trained with ``--quick`` needs no flags); a key given here wins.

    Args:
        i: input file or folder.
        o: output folder.
        bundle: ``stlu_la``, ``stlu_pancreas``, ``stlu_brats`` or a bundle folder.
        method: the method that trained the model (default: the one the model file records, else ``stlu``).
        model: the weights (default: the bundle's ``models/<method>/model.pt``).
        dry_run: print the command only.
        overrides: any other inference key, e.g. ``--eval_stride "[32,32,16]"``.
    """
    if overrides.pop("help", False):  # fire hands --help to **overrides
        print(predict.__doc__)
        return 0
    configs = _bundle_configs(bundle)
    if not os.path.exists(str(i)):
        raise FileNotFoundError(f"{i}: no such file or folder to segment.")
    method, recorded, _ = _model_settings(None if model is None else str(model), configs, method, overrides)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_files(configs, ["inference.json"], method),
           "--input_dir", os.path.abspath(str(i)), "--output_dir", os.path.abspath(str(o))]
    if model is not None:
        cmd += ["--checkpointloader#load_path", os.path.abspath(str(model))]
    rc = _run(cmd + recorded + _override_args(overrides), dry_run)
    if rc == 0 and not dry_run:
        written = glob.glob(os.path.join(os.path.abspath(str(o)), "**", "*_seg.nii.gz"), recursive=True)
        print(f"segmentations: {len(written)} in {os.path.abspath(str(o))}")
    return rc


def export(
    model: str, o: str, bundle: str = "stlu_la", method: str | None = None, dry_run: bool = False, **overrides: Any
) -> int:
    """Export a trained model to TorchScript (``o`` ending ``.ts``/``.pt``) or ONNX (``.onnx``) with the bundle's
    ``ckpt_export`` / ``onnx_export``, the network rebuilt as the model file records it (no training flags needed).

    Args:
        model: the weights (``models/<method>/model.pt`` of a run).
        o: the exported file.
        bundle: ``stlu_la``, ``stlu_pancreas``, ``stlu_brats`` or a bundle folder.
        method: the method that trained the model (default: the one the model file records).
        dry_run: print the command only.
        overrides: any other key of the bundle's ``inference.json``.
    """
    if overrides.pop("help", False):  # fire hands --help to **overrides
        print(export.__doc__)
        return 0
    configs = _bundle_configs(bundle)
    method, recorded, record = _model_settings(str(model), configs, method, overrides)
    if not dry_run:  # MONAI's exporters write into an existing folder only
        os.makedirs(os.path.dirname(os.path.abspath(str(o))), exist_ok=True)
    onnx = str(o).lower().endswith(".onnx")
    cmd = [sys.executable, "-m", "monai.bundle", "onnx_export" if onnx else "ckpt_export", "network_def",
           "--filepath", os.path.abspath(str(o)), "--ckpt_file", os.path.abspath(str(model)),
           "--meta_file", os.path.join(configs, "metadata.json"),
           "--config_file", _config_files(configs, ["inference.json"], method)]
    if onnx:  # the window the network was trained on, any batch size
        settings = record.get("settings", {})
        if "patch_size" in settings and "input_shape" not in overrides:
            cmd += ["--input_shape", repr([1, int(settings.get("in_channels", 1)), *settings["patch_size"]])]
        if "converter_kwargs" not in overrides:
            cmd += ["--converter_kwargs", repr({"input_names": ["image"], "output_names": ["pred"],
                                                "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}}})]
    rc = _run(cmd + recorded + _override_args(overrides), dry_run)
    if rc == 0 and not dry_run:
        print(f"exported: {os.path.abspath(str(o))}")
    return rc


def _read_volume(path: str, dataset: str = "label"):
    """A volume (spatial dims) and its spacing (None when the file stores none: h5)."""
    import numpy as np
    from monai.transforms import LoadImage

    from monai_stlu.data import H5Reader, is_h5_source

    if is_h5_source(path):
        return np.asarray(LoadImage(reader=H5Reader(dataset), image_only=True)(path)), None
    img = LoadImage(image_only=True)(path)
    return np.asarray(img), [float(s) for s in img.pixdim]


def evaluate(p: str, l: str, o: str | None = None, num_classes: int = 2, postfix: str = "_seg") -> int:  # noqa: E741
    """Score a folder of predictions against a folder of labels with the bundles' metrics (Dice, Jaccard, HD95,
    ASD, medpy's definitions): ``metrics.csv`` (per case and class), ``metrics_summary.csv`` and
    ``per_case_dice.png`` in ``o``.

    Predictions are matched to labels by case name (a prediction ``<name>{postfix}.nii.gz``; a label NIfTI named
    ``<name>.nii.gz``, or an h5 case of the community layouts, whose ``label`` dataset is read). Distances are in mm
    with the prediction's voxel spacing.

    Args:
        p: folder of predictions.
        l: folder of labels (NIfTI files, or an h5 data set).
        o: output folder (default: ``p``).
        num_classes: classes including background.
        postfix: the predictions' name postfix.

    Returns:
        the number of cases scored.

    Raises:
        FileNotFoundError: no prediction, or a prediction without a label.
        ValueError: a prediction and its label differ in shape.
    """
    from monai_stlu.data import case_id, find_images
    from monai_stlu.handlers import SegmentationMetricsSaver

    for folder, what in ((p, "predictions"), (l, "labels")):
        if not os.path.exists(str(folder)):
            raise FileNotFoundError(f"{folder}: no such folder of {what} to evaluate.")
    preds = {}
    for item in find_images(str(p), patterns=("*.nii.gz", "*.nii")):
        name = case_id(item["image"])
        preds[name[: -len(postfix)] if postfix and name.endswith(postfix) else name] = item["image"]
    labels = {x["id"]: x["image"] for x in find_images(str(l))}
    missing = sorted(set(preds) - set(labels))
    if missing:
        raise FileNotFoundError(f"{l}: no label for the predictions {missing[:5]}{' ...' if len(missing) > 5 else ''}.")
    unscored = sorted(set(labels) - set(preds))
    if unscored:
        print(f"warning: {len(unscored)} labels have no prediction in {p} (not scored): {unscored[:5]}")
    saver = SegmentationMetricsSaver(str(o or p), num_classes=num_classes)
    for name in sorted(preds):
        pred, spacing = _read_volume(preds[name])
        label, _ = _read_volume(labels[name])
        if pred.shape != label.shape:
            raise ValueError(f"{preds[name]}: shape {pred.shape} differs from its label {labels[name]} {label.shape}.")
        saver.add_case(name, pred.round().astype(int), label.round().astype(int), spacing)
    saver.write()
    for s in saver.summary():
        if s["metric"] in ("dice", "hd95_mm"):
            print(f"class {s['class']} {s['metric']}: {s['mean']:.4f} +- {s['std']:.4f} (n={s['n']})")
    out = os.path.abspath(str(o or p))
    from monai_stlu.utils.plots import per_case_dice

    chart = per_case_dice(os.path.join(out, "metrics.csv"), os.path.join(out, "per_case_dice.png"))
    print(f"chart: {chart}")
    print(f"metrics: {os.path.join(out, 'metrics.csv')} and {os.path.join(out, 'metrics_summary.csv')} ({len(preds)} cases)")
    return len(preds)


def plot(run_dir: str, o: str | None = None, metrics: str | None = None) -> list[str]:
    """Pictures of a run, as nnU-Net's progress.png: ``progress.png`` (loss terms, gamma, learning rate, Dice
    against iterations, from the run's TensorBoard events) and, after an evaluation, ``per_case_dice.png``.

    Args:
        run_dir: the run's output folder (``eval/<method>`` of the bundle, or ``<output>/eval/<method>`` of
            ``train``), or the folder ``evaluate`` wrote its metrics to.
        o: where to write them (default ``run_dir``).
        metrics: the ``metrics.csv`` to chart (default: the one in ``run_dir``).
    """
    from monai_stlu.utils import plot_run

    written = plot_run(str(run_dir), None if o is None else str(o), None if metrics is None else str(metrics))
    for path in written:
        print(f"wrote {path}")
    return written


def _command(func: Any, exit_status: bool = False) -> Any:
    """``func`` as a command line command: nothing returned for fire to print; with ``exit_status``, the returned
    status of the child process becomes the command's exit status (a signal ``-N`` becomes ``128 + N``, as shells
    report it)."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> None:
        result = func(*args, **kwargs)
        if exit_status and result:
            raise SystemExit(128 - int(result) if int(result) < 0 else int(result))

    return command


def main() -> None:
    from monai_stlu.utils.errors import install_error_hook

    install_error_hook(force=True)
    import fire

    commands: dict[str, Any] = {
        "synth": _command(synth), "check": _command(check), "generate_bundles": _command(generate_bundles),
        "release_bundle": _command(release_bundle),
        "train": _command(train, exit_status=True), "compare": _command(compare),
        "predict": _command(predict, exit_status=True),
        "export": _command(export, exit_status=True),
        "evaluate": _command(evaluate), "plot": _command(plot),
    }
    converters = {"la": "convert_la", "pancreas": "convert_pancreas", "brats": "convert_brats", "nifti": "nifti_datalist"}
    if len(sys.argv) > 1 and sys.argv[1] == "convert":  # the converters import MONAI and ITK: only when asked for
        from monai_stlu import data

        commands["convert"] = {k: _command(getattr(data, v)) for k, v in converters.items()}
    elif len(sys.argv) > 1 and not sys.argv[1].startswith("-") and sys.argv[1] not in commands:
        _unknown_command(sys.argv[1], [*commands, "convert"])
    else:  # the command list (--help, no command) names the group without importing MONAI: under a second, not 10 s
        commands["convert"] = dict.fromkeys(converters)
    fire.Fire(commands, name="monai_stlu")


def _unknown_command(name: str, known: Sequence[str]) -> None:
    """List the commands, then say, as the last line, that ``name`` is none of them (exit status 2)."""
    import difflib

    print("usage: monai_stlu COMMAND [--help | ARGS ...]\n\ncommands:")
    for command in known:
        doc = (globals()[command].__doc__ or "") if command in globals() else "la|pancreas|brats|nifti: a data set"
        first = (doc.strip().splitlines() or [""])[0]
        print(f"  {command:<16} {first if len(first) <= 90 else first[:90].rsplit(' ', 1)[0] + ' ...'}")
    near = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    print(f"\nmonai_stlu: {name!r} is not a command{hint}; the commands are listed above.", file=sys.stderr,
          flush=True)
    raise SystemExit(2)
