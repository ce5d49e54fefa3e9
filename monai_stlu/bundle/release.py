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
from collections.abc import Callable

__all__ = ["MONAI_LABEL_VERSION", "release_bundle", "runtime_requirements", "zoo_requirements"]

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


def _set_backbone(config: dict, backbone: str) -> bool:
    """Set the ``backbone`` key of a config that builds a network (has the key); True when set."""
    if "backbone" not in config:
        return False
    config["backbone"] = backbone
    return True


def _release_backbone(backbone: str | None, weights: str | None) -> str | None:
    """The backbone a release is built with: the one asked for, else the weights' recorded one (None: as it is)."""
    from monai_stlu.utils.model_record import read_model_record
    from monai_stlu.networks.nets.backbones import check_backbone

    recorded = (read_model_record(weights).get("settings") or {}).get("backbone") if weights else None
    if backbone is None:
        return recorded
    backbone = check_backbone(backbone)
    if recorded is not None and str(recorded).lower() != backbone:
        raise ValueError(f"{weights} was trained with backbone {recorded!r}, not {backbone!r}: release it with "
                         f"--backbone {recorded} (or leave --backbone out).")
    return backbone


def release_bundle(
    bundle: str, zoo_root: str, weights: str | None = None, overwrite: bool = False, backbone: str | None = None
) -> str:
    """Write ``<zoo_root>/models/<bundle>/`` (a Model Zoo bundle that carries its code) and
    ``<zoo_root>/ci/unit_tests/test_<bundle>.py`` (its zoo unit test), as a pull request to
    ``Project-MONAI/model-zoo`` would add them; ``zoo_root`` may be a model-zoo checkout.

    The bundle's files (not its ``models/``, ``eval/``, data or lock files) are copied; the ``monai_stlu`` package
    this function belongs to goes into ``scripts/monai_stlu`` with a ``scripts/__init__.py`` that puts it on the path,
    and every config that imports ``monai_stlu`` imports ``scripts`` first. ``metadata.json`` then requires only what
    a public index serves: ``monai_stlu``'s own requirements pinned at the installed versions
    (:py:func:`runtime_requirements`), and declares ``supported_apps`` (MONAI Label), so the zoo checks the bundle's
    MONAI Label properties. ``weights`` (a trained ``model.pt``) becomes ``models/model.pt``; the zoo fetches
    published weights through ``large_files.yml``, which names where they are uploaded. ``backbone`` (or, without
    it, the backbone that the weights' model record names) becomes the released configs' ``backbone`` key, so the
    zoo, MONAI Label and ``python -m monai.bundle`` build that network.

    The release is written beside its place and moved there when complete: an interrupted release leaves no
    half-written bundle, and an existing one is replaced only with ``overwrite``.

    Args:
        bundle: a bundle name (``stlu_la``, ``stlu_pancreas``, ``stlu_brats``) or folder.
        zoo_root: the folder that gets ``models/`` and ``ci/``.
        weights: a ``model.pt`` to ship, or None.
        overwrite: replace an existing release of the same bundle.
        backbone: the segmentation network of the release (``vnet``, ``dynunet``, ``segresnet``, ``unet``); None
            keeps the bundle's, or takes the weights' recorded one.

    Returns:
        the released bundle folder.

    Raises:
        FileNotFoundError: when the bundle or the weights are missing.
        FileExistsError: when the release exists and ``overwrite`` is False.
        ValueError: for an unknown backbone, or one that differs from the weights' record.
    """
    from monai_stlu.bundle.generator import default_bundles_dir

    source = bundle if os.path.isfile(os.path.join(str(bundle), "configs", "metadata.json")) else os.path.join(
        default_bundles_dir(), str(bundle))
    if not os.path.isfile(os.path.join(source, "configs", "metadata.json")):
        raise FileNotFoundError(f"{bundle}: not a bundle name or folder (no configs/metadata.json).")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: the weights to release do not exist.")
    backbone = _release_backbone(backbone, weights)
    name = os.path.basename(os.path.normpath(source))
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
        shutil.copytree(package, os.path.join(out, "scripts", "monai_stlu"), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(os.path.join(out, "scripts", "__init__.py"), "w") as f:
            f.write(_SCRIPTS_INIT)
        configs = os.path.join(out, "configs")
        for file in sorted(os.listdir(configs)):
            if file.endswith(".json"):
                _edit_config(os.path.join(configs, file), _add_scripts_import)
                if backbone is not None:
                    _edit_config(os.path.join(configs, file), functools.partial(_set_backbone, backbone=backbone))
        meta_file = os.path.join(configs, "metadata.json")
        with open(meta_file) as f:
            metadata = json.load(f)
        metadata["required_packages_version"] = runtime_requirements()
        metadata["supported_apps"] = {"monailabel": MONAI_LABEL_VERSION}
        with open(meta_file, "w") as f:
            json.dump(metadata, f, indent=4)
            f.write("\n")
        if weights is not None:
            os.makedirs(os.path.join(out, "models"), exist_ok=True)
            shutil.copy2(weights, os.path.join(out, "models", "model.pt"))
        with open(os.path.join(os.path.dirname(__file__), "zoo_unit_test.template")) as f:
            unit_test = f.read().replace('BUNDLE = "stlu_la"', f'BUNDLE = "{name}"')
        tests_dir = os.path.join(zoo_root, "ci", "unit_tests")
        os.makedirs(tests_dir, exist_ok=True)
        old = None
        if os.path.exists(dest):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=models_dir)
            os.replace(dest, os.path.join(old, name))
        os.replace(out, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        test_file = os.path.join(tests_dir, f"test_{name}.py")
        with open(test_file + ".tmp", "w") as f:
            f.write(unit_test)
        os.replace(test_file + ".tmp", test_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
