# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""A Model Zoo release of a bundle: self-contained (its code in ``scripts/``), requirements a public index serves."""

from __future__ import annotations

import functools
import importlib.metadata as importlib_metadata
import json
import os
import re
import shutil
import tempfile
from typing import Any
from collections.abc import Callable

__all__ = ["MONAI_LABEL_VERSION", "release_bundle", "runtime_requirements", "vendored_files", "zoo_requirements"]

#: the MONAI Label version the bundles are served and trained with (tests/monailabel_requirements.txt pins it)
MONAI_LABEL_VERSION = "0.8.5"
#: what a release leaves out of the bundle folder: local outputs, data, the generator's input
_LEFT_OUT = ("models", "eval", "runs", "data", "__pycache__", "*.pyc", "bundle_delta.json", ".run.lock")
_TOP_LEVEL = ("torch", "monai", "numpy")  # the zoo reads these from pytorch_version, monai_version, numpy_version
_SCRIPTS_INIT = '''"""The bundle's own code: importing ``scripts`` (the bundle folder is on ``sys.path`` when the bundle runs from its
folder, under the Model Zoo's checks and under MONAI Label) puts the ``monai_stlu`` package this bundle was released
with first on the path, so ``"_target_": "monai_stlu...."`` names resolve without installing anything but the
requirements in ``configs/metadata.json``."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
'''


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()


def runtime_requirements() -> dict[str, str]:
    """The packages ``monai_stlu`` needs at run time (its install requirements, no extras) besides torch, MONAI and
    NumPy, pinned at the versions installed here (the versions the release was built and tested with).

    Raises:
        ValueError: when one of them is not installed (a release must name versions that work together).
    """
    pins: dict[str, str] = {}
    for req in importlib_metadata.requires("monai_stlu") or []:
        if "extra ==" in req:
            continue
        name = _name(req)
        if name.lower() in _TOP_LEVEL:
            continue
        try:
            pins[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError as e:
            raise ValueError(f"{name}: required by monai_stlu but not installed here, so a release cannot pin it.") from e
    return pins


def zoo_requirements(metadata: dict) -> list[str]:
    """The requirement lines the Model Zoo's premerge derives from a bundle's metadata (``monai==``, ``torch==``,
    ``numpy==`` and every ``optional_packages_version``/``required_packages_version`` entry pinned with ``==``)."""
    lines = []
    for key, package in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in metadata:
            lines.append(f"{package}=={metadata[key]}")
    for key in ("optional_packages_version", "required_packages_version"):
        lines += [f"{name}=={version}" for name, version in metadata.get(key, {}).items()]
    return lines


def _edit_config(config_file: str, edit: Callable[[dict], bool]) -> bool:
    """Apply ``edit`` to a JSON config (a dict) and write it back when ``edit`` says it changed it."""
    with open(config_file) as f:
        config = json.load(f)
    if not isinstance(config, dict) or not edit(config):
        return False
    with open(config_file, "w") as f:
        json.dump(config, f, indent=4)
        f.write("\n")
    return True


def _add_scripts_import(config: dict) -> bool:
    """Put ``"$import scripts"`` before ``"$import monai_stlu"`` in a config's ``imports``; True when changed."""
    imports = config.get("imports")
    if not isinstance(imports, list) or "$import monai_stlu" not in imports or "$import scripts" in imports:
        return False
    imports.insert(imports.index("$import monai_stlu"), "$import scripts")
    return True


def _release_backbone(backbone: str | None, recorded: str | None, weights: str) -> str | None:
    """The backbone a release is built with: the one asked for, else ``recorded``, the weights' (None: as it is)."""
    from monai_stlu.networks.nets.backbones import check_backbone

    if backbone is None:
        return recorded
    backbone = check_backbone(backbone)
    if recorded is not None and str(recorded).lower() != backbone:
        raise ValueError(f"{weights} was trained with backbone {recorded!r}, not {backbone!r}: release it with "
                         f"--backbone {recorded} (or leave --backbone out).")
    return backbone


def _recorded_settings(weights: str, bundle_name: str) -> dict[str, Any]:
    """The settings a model file records (checked by the record's schema, read as data), after checking that the
    release can build its network: the bundle's own method (STLU-Net), trained by this bundle.

    Raises:
        ValueError: the file is no model file, or records another method or bundle.
    """
    from monai_stlu.utils.model_record import load_model_file, model_record_of

    record = model_record_of(load_model_file(weights, flat=True), weights)
    method, trained_by = record.get("method"), record.get("bundle")
    if method not in (None, "STLUMethod"):
        raise ValueError(f"{weights}: records the method {method}; a released bundle builds its own STLU-Net, so "
                         "only STLU-Net weights can ship with it (train them with the bundle's train.json alone).")
    if trained_by not in (None, bundle_name):
        raise ValueError(f"{weights}: was trained by the {trained_by} bundle, not {bundle_name}; release it with "
                         f"{trained_by}.")
    return dict(record.get("settings") or {})


def _set_recorded(config: dict, settings: dict[str, Any]) -> bool:
    """Give a config's plain top-level keys the model's recorded values (filters, patch, spacing, mixing, ...), so
    its ``network_def`` builds the shipped network; True when any changed. Keys holding expressions stay."""
    changed = False
    for key, value in settings.items():
        current = config.get(key, None)
        if key in config and not (isinstance(current, str) and current.startswith(("$", "@", "%"))) and current != value:
            config[key] = value
            changed = True
    return changed


_DOTTED = re.compile(r"monai_stlu(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _lazy_map(init_file: str) -> dict[str, str]:
    """A lazily exporting package's ``name -> module`` map: the mapping its ``__init__`` passes to ``lazy_exports``
    (a literal assigned at module level)."""
    import ast

    with open(init_file) as f:
        tree = ast.parse(f.read())
    literals = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports" and len(node.args) > 1:
            arg = node.args[1]
            value = literals.get(arg.id) if isinstance(arg, ast.Name) else arg
            if value is not None:
                mapping = ast.literal_eval(value)
                return {name: module for module, names in mapping.items() for name in names}
    return {}


def vendored_files(package_dir: str, texts: list[str]) -> list[str]:
    """The files of the ``monai_stlu`` package at ``package_dir`` (paths relative to it) that a released bundle
    needs: every module the ``texts`` (its configs, its unit tests) name as ``monai_stlu.<...>``, and, transitively,
    every ``monai_stlu`` module theirs import anywhere in their source (function-level imports included), with the
    ``__init__.py`` of each package on the way; a name a lazily exporting package re-exports counts as its module.
    What no config or test reaches (the command line, the protocol runner, the converters) stays out."""
    import ast

    root = os.path.dirname(os.path.abspath(package_dir))

    def file_of(dotted: str) -> str | None:
        base = os.path.join(root, *dotted.split("."))
        if os.path.isfile(base + ".py"):
            return base + ".py"
        if os.path.isfile(os.path.join(base, "__init__.py")):
            return os.path.join(base, "__init__.py")
        return None

    needed: set[str] = set()
    todo: list[str] = []

    def add_module(dotted: str) -> None:
        parts = dotted.split(".")
        for k in range(1, len(parts) + 1):  # the packages on the way, then the module
            path = file_of(".".join(parts[:k]))
            if path is not None and path not in needed:
                needed.add(path)
                todo.append(path)

    def add_name(dotted: str) -> None:
        """``monai_stlu.a.b.Name``: the longest prefix that is a module, then a submodule or a re-exported name."""
        parts = dotted.split(".")
        for k in range(len(parts), 0, -1):
            module = ".".join(parts[:k])
            if file_of(module) is None:
                continue
            add_module(module)
            if k < len(parts):
                init = file_of(module)
                target = _lazy_map(init).get(parts[k]) if init and init.endswith("__init__.py") else None
                if target is not None:
                    add_module(f"{module}.{target}")
            return

    def scan(tree: ast.AST, package: str) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("monai_stlu"):
                        add_name(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.startswith("monai_stlu"):
                    add_name(source)
                    for alias in node.names:
                        add_name(f"{source}.{alias.name}")

    for text in texts:
        try:  # a Python source (a unit test): its imports
            scan(ast.parse(text), "")
        except SyntaxError:
            pass
        for dotted in _DOTTED.findall(text):  # a config: the names it gives as _target_ or in expressions
            add_name(dotted)
    add_module("monai_stlu")
    while todo:
        path = todo.pop()
        rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        module = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
        with open(path) as f:
            scan(ast.parse(f.read()), module if path.endswith("__init__.py") else module.rsplit(".", 1)[0])
    return sorted(os.path.relpath(p, package_dir) for p in needed if p.startswith(os.path.abspath(package_dir)))


def _large_files(weights: str, url: str | None) -> str:
    """``large_files.yml`` for the shipped weights, as the zoo's bundles write it (path, URL, md5)."""
    import hashlib

    digest = hashlib.md5()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    lines = ["large_files:", '  - path: "models/model.pt"']
    if url:
        lines.append(f"    url: {json.dumps(url)}")
    lines += [f'    hash_val: "{digest.hexdigest()}"', '    hash_type: "md5"']
    return "\n".join(lines) + "\n"


# sections of a bundle's docs that describe the repository's own protocol and tools, which do not ship
_REPOSITORY_SECTIONS = ("## Quality protocol", "## Speed")
_REPOSITORY_PATH = re.compile(r"`((?:BENCHMARKS\.md|benchmarks/|tests/|README\.md)[^`]*)`")


def released_readme(text: str, name: str) -> str:
    """A bundle's ``docs/README.md`` as it reads inside the released bundle: paths relative to the bundle folder
    (``bundles/<name>/`` dropped: a released bundle runs from its own folder), the sections about the repository's
    own protocol and tools left out, and the repository's files (``BENCHMARKS.md``, ``tests/...``, ``benchmarks/...``)
    named as files of the monai_stlu repository rather than as paths that would not resolve."""
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            skipping = line.startswith(_REPOSITORY_SECTIONS)
        if not skipping:
            kept.append(line)
    out = "\n".join(kept) + "\n"
    out = out.replace(f"bundles/{name}/", "").replace(f"/path/to/monai_stlu/bundles/{name}", "/path/to/" + name)
    return _REPOSITORY_PATH.sub(lambda m: f"the monai_stlu repository's {m.group(1)}", out)


def _evaluate_release(out: str, dataset_dir: str, test_list: str | None) -> dict[str, Any]:
    """Evaluate the released bundle folder ``out`` (its configs, its ``models/model.pt``, its vendored code) on
    ``dataset_dir``'s test list, as a user would with ``evaluate.json``; returns the foreground means and the per-case
    rows.

    Raises:
        RuntimeError: the evaluation failed (its last line quoted).
    """
    import csv
    import subprocess
    import sys

    configs = os.path.join(out, "configs")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               str([os.path.join(configs, "train.json"), os.path.join(configs, "evaluate.json")]),
               "--bundle_root", out, "--dataset_dir", dataset_dir, "--output_dir", tmp, "--progress", "false",
               *(["--test_list", test_list] if test_list else [])]
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"the release's evaluation on {dataset_dir} failed: {last}")
        with open(os.path.join(tmp, "metrics.csv")) as f:
            rows = [r for r in csv.DictReader(f) if r.get("class", "1") != "0"]
    if not rows:
        raise RuntimeError(f"the release's evaluation on {dataset_dir} scored no case.")

    def mean(key: str) -> float:
        return sum(float(r[key]) for r in rows) / len(rows)

    return {"cases": rows, "mean_dice": mean("dice"), "mean_jaccard": mean("jaccard"), "mean_hd95_mm": mean("hd95_mm"),
            "mean_asd_mm": mean("asd_mm")}


def _performance_section(result: dict[str, Any], settings: dict[str, Any], test_list: str | None, training: str) -> str:
    """The released docs' Performance section: how the shipped model was trained and what its evaluation measured."""
    n = len({r["case"] for r in result["cases"]})
    lines = [
        "## Performance",
        f"The shipped `models/model.pt`: {training}. Network settings it records: {settings.get('n_filters')} "
        f"first-stage filters, {settings.get('patch_size')} crops, target spacing {settings.get('target_spacing')}, "
        f"backbone {settings.get('backbone', 'vnet')}.",
        "",
        f"Evaluated by this release's `configs/evaluate.json` on {n} test cases (`{test_list or 'test.list'}`), "
        "metrics on each label's grid:",
        "",
        "| Dice % | Jaccard % | HD95 mm | ASD mm |",
        "|---|---|---|---|",
        f"| {100 * result['mean_dice']:.2f} | {100 * result['mean_jaccard']:.2f} | {result['mean_hd95_mm']:.2f} | "
        f"{result['mean_asd_mm']:.2f} |",
        "",
        "Per case (Dice %): " + ", ".join(f"{r['case']} {100 * float(r['dice']):.2f}" for r in result["cases"]) + ".",
        "",
    ]
    return "\n".join(lines)


def _replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with its ``heading`` section (up to the next ``## ``) replaced by ``section`` (appended if absent)."""
    out, skipping, placed = [], False, False
    for line in text.splitlines():
        if line.startswith("## "):
            skipping = line.strip() == heading
            if skipping and not placed:
                out.append(section.rstrip("\n"))
                out.append("")
                placed = True
        if not skipping:
            out.append(line)
    if not placed:
        out += ["", section.rstrip("\n")]
    return "\n".join(out) + "\n"


def release_bundle(
    bundle: str, zoo_root: str, weights: str | None = None, overwrite: bool = False, backbone: str | None = None,
    weights_url: str | None = None, evaluate: str | None = None, test_list: str | None = None,
    training: str = "trained by this bundle",
) -> str:
    """Write ``<zoo_root>/models/<bundle>/`` (a Model Zoo bundle that carries its code) and
    ``<zoo_root>/ci/unit_tests/test_<bundle>.py`` and ``test_<bundle>_dist.py`` (its zoo unit tests, the second
    under torchrun: GPUs, or two CPU processes without them), as a pull request to
    ``Project-MONAI/model-zoo`` would add them; ``zoo_root`` may be a model-zoo checkout.

    The bundle's files (not its ``models/``, ``eval/``, data or lock files) are copied; the ``monai_stlu`` package
    this function belongs to goes into ``scripts/monai_stlu`` with a ``scripts/__init__.py`` that puts it on the path,
    and every config that imports ``monai_stlu`` imports ``scripts`` first. ``metadata.json`` then requires only what
    a public index serves: ``monai_stlu``'s own requirements pinned at the installed versions
    (:py:func:`runtime_requirements`), and declares ``supported_apps`` (MONAI Label), so the zoo checks the bundle's
    MONAI Label properties. ``weights`` (a trained ``model.pt``, required: the zoo's check needs it) becomes
    ``models/model.pt``, and the settings its model record names (filters, patch size, spacing, backbone, ...) become
    the released configs' values, so the zoo, MONAI Label and ``python -m monai.bundle`` build exactly that network;
    weights of another method or bundle are refused. ``large_files.yml`` names the weights' md5 and, with
    ``weights_url``, where they are uploaded (the zoo fetches published weights from there).

    The release is written beside its place and moved there when complete: an interrupted release leaves no
    half-written bundle, and an existing one is replaced only with ``overwrite``.

    Args:
        bundle: a bundle name (``stlu_la``, ``stlu_pancreas``, ``stlu_brats``) or folder.
        zoo_root: the folder that gets ``models/`` and ``ci/``.
        weights: the ``model.pt`` to ship (an STLU-Net trained by this bundle).
        overwrite: replace an existing release of the same bundle.
        backbone: the segmentation network of the release (``vnet``, ``dynunet``, ``segresnet``, ``unet``); None
            takes the weights' recorded one; another one is refused.
        weights_url: where the weights are uploaded, for ``large_files.yml``.
        evaluate: a data folder of the bundle's layout: the release is evaluated on its test list (``test_list``) by
            its own ``evaluate.json``, and ``metadata.json``'s ``eval_metrics`` and the docs' Performance section
            give the result (mean Dice, Jaccard, HD95, ASD; Dice per case).
        test_list: the test list file in ``evaluate`` (default the bundle's ``test.list``).
        training: how the weights were trained, for the Performance section.

    Returns:
        the released bundle folder.

    Raises:
        FileNotFoundError: when the bundle or the weights are missing.
        FileExistsError: when the release exists and ``overwrite`` is False.
        ValueError: for an unknown backbone, or one that differs from the weights' record.
        RuntimeError: the evaluation failed; nothing is released.
    """
    from monai_stlu.bundle.generator import default_bundles_dir

    source = bundle if os.path.isfile(os.path.join(str(bundle), "configs", "metadata.json")) else os.path.join(
        default_bundles_dir(), str(bundle))
    if not os.path.isfile(os.path.join(source, "configs", "metadata.json")):
        raise FileNotFoundError(f"{bundle}: not a bundle name or folder (no configs/metadata.json).")
    name = os.path.basename(os.path.normpath(source))
    if weights is None:
        raise ValueError(f"release_bundle {bundle}: a Model Zoo bundle ships its trained weights (the zoo's check "
                         "needs models/model.pt): give --weights MODEL.pt, a model.pt this bundle's training wrote.")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: the weights to release do not exist.")
    if evaluate is not None and not os.path.isdir(evaluate):
        raise FileNotFoundError(f"--evaluate {evaluate}: no such data folder to evaluate the release on.")
    evaluate = None if evaluate is None else os.path.abspath(evaluate)
    settings = _recorded_settings(weights, name)  # the file is read once, its record checked
    backbone = _release_backbone(backbone, settings.get("backbone"), weights)
    if backbone is not None:
        settings["backbone"] = backbone
    models_dir = os.path.join(zoo_root, "models")
    dest = os.path.join(models_dir, name)
    if os.path.exists(dest) and not overwrite:
        raise FileExistsError(f"{dest} exists: release into another folder, or pass --overwrite to replace it.")
    os.makedirs(models_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=models_dir)
    try:
        out = os.path.join(staging, name)
        shutil.copytree(source, out, ignore=shutil.ignore_patterns(*_LEFT_OUT))
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        texts = []
        for folder, _, files in os.walk(os.path.join(out, "configs")):
            texts += [open(os.path.join(folder, f)).read() for f in files if f.endswith(".json")]
        for template in ("zoo_unit_test.template", "zoo_unit_test_dist.template"):
            with open(os.path.join(os.path.dirname(__file__), template)) as f:
                texts.append(f.read())
        for rel in vendored_files(package, texts):
            dst = os.path.join(out, "scripts", "monai_stlu", rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(package, rel), dst)
        with open(os.path.join(out, "scripts", "__init__.py"), "w") as f:
            f.write(_SCRIPTS_INIT)
        configs = os.path.join(out, "configs")
        for file in sorted(os.listdir(configs)):
            if file.endswith(".json"):
                _edit_config(os.path.join(configs, file), _add_scripts_import)
                _edit_config(os.path.join(configs, file), functools.partial(_set_recorded, settings=settings))
        readme = os.path.join(out, "docs", "README.md")
        if os.path.isfile(readme):
            with open(readme) as f:
                text = released_readme(f.read(), name)
            with open(readme, "w") as f:
                f.write(text)
        meta_file = os.path.join(configs, "metadata.json")
        with open(meta_file) as f:
            metadata = json.load(f)
        metadata["required_packages_version"] = runtime_requirements()
        metadata["supported_apps"] = {"monailabel": MONAI_LABEL_VERSION}
        with open(meta_file, "w") as f:
            json.dump(metadata, f, indent=4)
            f.write("\n")
        os.makedirs(os.path.join(out, "models"), exist_ok=True)
        shutil.copy2(weights, os.path.join(out, "models", "model.pt"))
        with open(os.path.join(out, "large_files.yml"), "w") as f:
            f.write(_large_files(weights, weights_url))
        if evaluate is not None:
            result = _evaluate_release(out, evaluate, test_list)
            metadata["eval_metrics"] = {k: round(v, 4) for k, v in result.items() if k.startswith("mean_")}
            with open(meta_file, "w") as f:
                json.dump(metadata, f, indent=4)
                f.write("\n")
            if os.path.isfile(readme):
                with open(readme) as f:
                    text = _replace_section(f.read(), "## Performance",
                                            _performance_section(result, settings, test_list, training))
                with open(readme, "w") as f:
                    f.write(text)
        unit_tests = {}
        for template, suffix in (("zoo_unit_test.template", ""), ("zoo_unit_test_dist.template", "_dist")):
            with open(os.path.join(os.path.dirname(__file__), template)) as f:
                unit_tests[f"test_{name}{suffix}.py"] = f.read().replace('BUNDLE = "stlu_la"', f'BUNDLE = "{name}"')
        tests_dir = os.path.join(zoo_root, "ci", "unit_tests")
        os.makedirs(tests_dir, exist_ok=True)
        old = None
        if os.path.exists(dest):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=models_dir)
            os.replace(dest, os.path.join(old, name))
        os.replace(out, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for file, text in unit_tests.items():
            test_file = os.path.join(tests_dir, file)
            with open(test_file + ".tmp", "w") as f:
                f.write(text)
            os.replace(test_file + ".tmp", test_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
