# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Labeled / unlabeled / validation / test splits from the community h5 layouts or an MSD-style datalist JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from monai_stlu.utils.settings_check import check_count

__all__ = ["semi_supervised_split", "h5_split", "json_split", "check_h5_case", "DATA_HELP", "LA_CASE_PATH"]

DATA_HELP = (
    "Each bundle's docs/README.md says where its data come from (LA: the data/ folder of the yulequan/UA-MT "
    "repository on GitHub, a directory holding train.list, test.list and '2018LA_Seg_Training Set/<ID>/mri_norm2.h5'). "
    "Point the bundle at it with --dataset_dir DIR (and "
    "--train_list/--test_list if your list files have other names), or give your own NIfTI data with "
    "--datalist_file datalist.json (MSD style). For a demo without data run: "
    "python -m monai_stlu synth DIR, then --dataset_dir DIR."
)


def _read_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: split list not found.")
    with open(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{path}: the split list is empty.")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: the split list names a case more than once.")
    return ids


def check_h5_case(path: str, keys: Sequence[str] = ("image", "label")) -> None:
    """Open an h5 case without decoding it: the file exists, is HDF5, has ``keys`` of one shape.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file, missing dataset, or datasets of different shapes.
    """
    from monai_stlu.data.h5_files import open_h5

    with open_h5(path, keys) as f:
        shapes = {k: tuple(f[k].shape) for k in keys}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{path}: shape mismatch between datasets {shapes} (image and label must match).")


def _split_labeled(
    cases: list[dict], num_labeled: int, num_val: int, source: str, val_ids: Sequence[str] | None = None
) -> dict[str, list[dict]]:
    num_labeled = check_count(num_labeled, "num_labeled", 1, " of labeled cases")
    num_val = check_count(num_val, "num_val", 0, " of validation cases")
    if val_ids:
        ids = [c["id"] for c in cases]
        unknown = [v for v in val_ids if v not in ids]
        if unknown:
            raise ValueError(f"{source}: validation IDs {unknown} are not in the training list.")
        labeled_clash = [v for v in val_ids if v in ids[:num_labeled]]
        if labeled_clash:
            raise ValueError(f"{source}: validation IDs {labeled_clash} are among the first {num_labeled} (labeled) cases.")
        val = [c for c in cases if c["id"] in set(val_ids)]
        cases = [c for c in cases if c["id"] not in set(val_ids)]
        num_val = 0
    else:
        val = []
    if num_labeled + num_val > len(cases):
        raise ValueError(
            f"{source}: {len(cases)} training cases cannot give {num_labeled} labeled + {num_val} validation cases."
        )
    val = val or (cases[len(cases) - num_val :] if num_val > 0 else [])
    rest = cases[: len(cases) - num_val] if num_val > 0 else cases
    return {
        "labeled": rest[:num_labeled],
        "unlabeled": [{"image": c["image"], "id": c["id"]} for c in rest[num_labeled:]],
        "val": val,
    }


LA_CASE_PATH = "2018LA_Seg_Training Set/{id}/mri_norm2.h5"


def h5_split(
    dataset_dir: str,
    train_list: str = "train.list",
    test_list: str = "test.list",
    num_labeled: int = 8,
    num_val: int = 4,
    case_path: str = LA_CASE_PATH,
    check: bool = True,
    val_ids: Sequence[str] | None = None,
    val_list: str | None = None,
    dataset_name: str = "LA",
    image_dataset: str | Sequence[str] = "image",
    check_test: bool = True,
) -> dict[str, list[dict]]:
    """Split a community h5 layout (one h5 file per case with ``image`` and ``label`` datasets, ID list files):
    labeled = the first ``num_labeled`` IDs of ``train_list``, validation = its last ``num_val`` IDs (or the
    named ``val_ids``, or the IDs of ``val_list``), unlabeled = the other training IDs, test = ``test_list``.

    The published protocol (UA-MT, MC-Net, BCP, STLU-Net) uses ``train.list[:N]`` as labeled (N = 8 or 16 on LA) and
    the other training cases as unlabeled, and selects checkpoints on the test set; here ``num_val`` cases are held
    out of the unlabeled set for model selection instead (``num_val=0`` restores the published unlabeled set).
    BraTS-2019 (SSL4MIS) publishes its own validation list: pass it as ``val_list``.

    Args:
        dataset_dir: directory with the list files and the cases.
        train_list: training split list file name (relative to ``dataset_dir``) or path.
        test_list: test split list file name or path (a missing file gives no test cases).
        num_labeled: number of labeled cases.
        num_val: number of validation cases held out from the end of the training list.
        case_path: where a case lies, relative to ``dataset_dir``, with ``{id}`` for the ID: LA
            ``"2018LA_Seg_Training Set/{id}/mri_norm2.h5"``, Pancreas-CT ``"Pancreas_h5/{id}_norm.h5"``, BraTS-2019
            ``"data/{id}.h5"``.
        check: open every listed h5 file (no decoding) to fail early on missing or malformed cases.
        val_ids: name the validation cases instead (IDs of ``train_list`` outside the labeled ones); ``num_val`` is
            then ignored.
        val_list: a list file of validation cases outside ``train_list``; ``num_val`` and ``val_ids`` are then
            ignored.
        dataset_name: named in the error when no data are found.
        image_dataset: the h5 dataset(s) the image is read from (several: MR sequences stacked as channels), each
            checked with ``check``.
        check_test: open the test cases too (with ``check``); training does not read them, so its configs set False.
            Test IDs that are also training or validation IDs are refused either way.

    Returns:
        ``{"labeled", "unlabeled", "val", "test"}``: lists of ``{"image", "label", "id"}`` dicts (unlabeled
        cases have no ``"label"``). ``image`` and ``label`` are the same h5 path; the readers pick the dataset.

    Raises:
        FileNotFoundError: no data at ``dataset_dir`` (the message says what was expected and where to get it), a
            missing list, or a listed case that is missing.
        ValueError: malformed lists or cases, too few cases for the requested split, or a test case that is also a
            training or validation case.
    """
    if "{id}" not in case_path:
        raise ValueError(f"case_path {case_path!r} must contain '{{id}}' where the case ID goes.")
    dataset_dir = os.path.expanduser(str(dataset_dir))

    def resolve(name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(dataset_dir, name)

    train_path, test_path = resolve(train_list), resolve(test_list)
    if not os.path.isfile(train_path):
        raise FileNotFoundError(
            f"No {dataset_name} data at {dataset_dir!r} (no {os.path.basename(train_path)} there): expected the "
            f"list files and one h5 file per listed case at {case_path!r}. {DATA_HELP}"
        )

    image_keys = (image_dataset,) if isinstance(image_dataset, str) else tuple(image_dataset)

    def cases(list_path: str, key: str, open_files: bool = True) -> list[dict]:
        out = []
        for case_id in _read_list(list_path):
            path = os.path.join(dataset_dir, case_path.format(id=case_id))
            if check and open_files:
                try:
                    check_h5_case(path, image_keys + ("label",))
                except FileNotFoundError as e:
                    raise FileNotFoundError(
                        f"case {case_id} listed in {list_path} is missing: {path} does not exist (that list is the "
                        f"bundle's --{key})."
                    ) from e
                except ValueError as e:
                    if image_keys == ("image",) or "has no dataset" not in str(e):
                        raise
                    raise ValueError(
                        f"{e} The image is read from the datasets {list(image_keys)} (the modalities): write them "
                        "with the converter's --modalities (python -m monai_stlu convert brats RAW OUT --modalities "
                        f"{','.join(image_keys)})."
                    ) from e
            out.append({"image": path, "label": path, "id": case_id})
        return out

    if val_list:
        split = _split_labeled(cases(train_path, "train_list"), num_labeled, 0, train_path)
        split["val"] = cases(resolve(val_list), "val_list")
    else:
        split = _split_labeled(cases(train_path, "train_list"), num_labeled, num_val, train_path, val_ids)
    split["test"] = cases(test_path, "test_list", open_files=check_test) if os.path.isfile(test_path) else []
    _refuse_overlap(split, test_path, lambda c: c["id"])
    return split


def _refuse_overlap(split: dict[str, list[dict]], test_source: str, key) -> None:
    """Refuse test cases that are also training or validation cases: the test figures would be measured on data
    the model was trained or selected on."""
    test = {key(c) for c in split.get("test", [])}
    for part in ("labeled", "unlabeled", "val"):
        both = sorted(test & {key(c) for c in split.get(part, [])})
        if both:
            shown = ", ".join(map(str, both[:3])) + (" ..." if len(both) > 3 else "")
            raise ValueError(
                f"{test_source}: {len(both)} test case(s) are also {part} cases ({shown}): the test figures would be "
                "measured on data the model has seen; take them out of one of the lists."
            )


def json_split(
    datalist_file: str,
    num_labeled: int = 0,
    num_val: int = 0,
    base_dir: str | None = None,
    check: bool = True,
    check_test: bool = True,
) -> dict[str, list[dict]]:
    """Split an MSD-style datalist JSON (``{"training": [{"image", "label"}, ...], "validation": [...],
    "test": [...], "unlabeled": [...]}``; paths relative to ``base_dir``, default the JSON's folder).

    Training entries without a ``label`` are unlabeled, as are those of an ``"unlabeled"`` list. With
    ``num_labeled > 0`` only the first ``num_labeled`` labeled entries keep their labels (the LA protocol).
    Without a ``"validation"`` list, the last ``num_val`` labeled entries are held out for validation.

    ``check_test=False`` does not look for the test files (training does not read them); a test image that is also
    a training or validation image is refused either way.

    Raises:
        FileNotFoundError: the JSON or a file it names does not exist.
        ValueError: a malformed JSON, too few cases, or a test case that is also a training or validation case.
    """
    num_labeled = check_count(num_labeled, "num_labeled", 0, " of labeled cases (0: every labeled entry)")
    num_val = check_count(num_val, "num_val", 0, " of validation cases")
    if not os.path.isfile(datalist_file):
        raise FileNotFoundError(f"{datalist_file}: datalist JSON not found. {DATA_HELP}")
    try:
        with open(datalist_file) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{datalist_file}: not valid JSON ({e}).") from e
    if not isinstance(content, dict) or "training" not in content:
        raise ValueError(f"{datalist_file}: needs a 'training' list of {{'image': ..., 'label': ...}} entries.")
    base = os.path.dirname(os.path.abspath(datalist_file)) if base_dir is None else base_dir

    def entries(key: str, must_exist: bool = True) -> list[dict]:
        out = []
        for i, item in enumerate(content.get(key, [])):
            item = {"image": item} if isinstance(item, str) else dict(item)
            if "image" not in item:
                raise ValueError(f"{datalist_file}: entry {i} of {key!r} has no 'image'.")
            for k in ("image", "label"):
                if k in item:
                    item[k] = item[k] if os.path.isabs(item[k]) else os.path.join(base, item[k])
                    if check and must_exist and not os.path.exists(item[k]):
                        raise FileNotFoundError(f"{datalist_file}: entry {i} of {key!r}: {item[k]} does not exist.")
            item.setdefault("id", os.path.basename(item["image"]).split(".")[0])
            out.append(item)
        return out

    training = entries("training")
    labeled = [c for c in training if "label" in c]
    unlabeled = [{"image": c["image"], "id": c["id"]} for c in training if "label" not in c] + entries("unlabeled")
    if "validation" in content:
        val = entries("validation")
    else:
        val = labeled[len(labeled) - num_val :] if num_val > 0 else []
        labeled = labeled[: len(labeled) - num_val] if num_val > 0 else labeled
    if num_labeled > 0:
        unlabeled = [{"image": c["image"], "id": c["id"]} for c in labeled[num_labeled:]] + unlabeled
        labeled = labeled[:num_labeled]
    if not labeled:
        raise ValueError(f"{datalist_file}: no labeled training case.")
    split = {"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": entries("test", check_test)}
    _refuse_overlap(split, f"{datalist_file} ('test')", lambda c: os.path.abspath(str(c["image"])))
    return split


def semi_supervised_split(
    dataset_dir: str,
    datalist_file: str | None = None,
    train_list: str = "train.list",
    test_list: str = "test.list",
    num_labeled: int = 8,
    num_val: int = 4,
    val_ids: Sequence[str] | None = None,
    case_path: str = LA_CASE_PATH,
    val_list: str | None = None,
    dataset_name: str = "LA",
    image_dataset: str | Sequence[str] = "image",
    check_test: bool = True,
) -> dict[str, list[dict]]:
    """The bundles' entry point: :py:func:`json_split` when ``datalist_file`` is given, else :py:func:`h5_split`
    (``check_test``: open the test cases as well; training configs set False, they do not read them)."""
    if datalist_file:
        return json_split(datalist_file, num_labeled=num_labeled, num_val=num_val, check_test=check_test)
    return h5_split(
        dataset_dir, train_list=train_list, test_list=test_list, num_labeled=num_labeled, num_val=num_val,
        case_path=case_path, val_ids=val_ids, val_list=val_list, dataset_name=dataset_name, image_dataset=image_dataset,
        check_test=check_test,
    )
