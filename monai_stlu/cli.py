# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Command line: ``python -m monai_stlu synth DIR``, ``python -m monai_stlu check DIR`` and
``python -m monai_stlu generate_bundles [--check]``, ``python -m monai_stlu convert la|pancreas|brats|nifti ...``."""

from __future__ import annotations

from collections.abc import Sequence

from monai_stlu.data.datalist import LA_CASE_PATH

__all__ = ["synth", "check", "generate_bundles", "main"]


def synth(out_dir: str, num_train: int = 12, num_test: int = 4, shape: Sequence[int] = (96, 96, 64), seed: int = 0) -> str:
    """Write synthetic volumes in the LA h5 layout (``train.list``, ``test.list``, ``2018LA_Seg_Training Set/``).

    Args:
        out_dir: dataset folder to create.
        num_train: cases in ``train.list``.
        num_test: cases in ``test.list``.
        shape: volume shape X Y Z.
        seed: random seed.
    """
    from monai_stlu.data import write_synthetic_la

    write_synthetic_la(out_dir, num_train=num_train, num_test=num_test, shape=tuple(shape), seed=seed)
    print(f"wrote {num_train} training and {num_test} test cases to {out_dir}")
    return out_dir


def check(
    dataset_dir: str,
    train_list: str = "train.list",
    test_list: str = "test.list",
    num_labeled: int = 8,
    num_val: int = 4,
    num_classes: int = 2,
    datalist_file: str | None = None,
    case_path: str = LA_CASE_PATH,
    val_list: str | None = None,
) -> int:
    """Read every case of a data set and report the first problem (missing or unreadable file, missing dataset,
    shape mismatch, NaN/Inf, label values outside the classes). Returns the number of cases checked.
    """
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from monai_stlu.data import H5Reader, ValidateSegmentationd, semi_supervised_split

    split = semi_supervised_split(
        dataset_dir, datalist_file, train_list, test_list, num_labeled, num_val, case_path=case_path, val_list=val_list
    )
    load = Compose(
        [
            LoadImaged("image", reader=H5Reader("image")),
            LoadImaged("label", reader=H5Reader("label"), allow_missing_keys=True),
            EnsureChannelFirstd(["image", "label"], allow_missing_keys=True),
            ValidateSegmentationd(["image", "label"], num_classes=num_classes),
        ]
    )
    n = 0
    for part, cases in split.items():
        for case in cases:
            load(case)
            n += 1
        print(f"{part}: {len(cases)} cases OK")
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


def main() -> None:
    import fire

    from monai_stlu.data import convert_brats, convert_la, convert_pancreas, nifti_datalist

    convert = {"la": convert_la, "pancreas": convert_pancreas, "brats": convert_brats, "nifti": nifti_datalist}
    fire.Fire({"synth": synth, "check": check, "generate_bundles": generate_bundles, "convert": convert})
