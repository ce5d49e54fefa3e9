"""Every bundle's training and validation transforms pickle, as loader workers started with ``spawn`` or
``forkserver`` (macOS, Windows, some clusters) need, and BraTS's label merge (whole tumour) gives 0/1 labels."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from conftest import REPO_ROOT


@pytest.mark.parametrize("bundle", ["stlu_la", "stlu_pancreas", "stlu_brats"])
def test_transforms_pickle(bundle):
    root = REPO_ROOT / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser.update({"bundle_root": str(root), "dataset_dir": str(root)})
    for name in ("train#preprocessing", "validate#preprocessing", "unlabeled_preprocessing"):
        if name not in parser:
            continue
        transform = parser.get_parsed_content(name)
        assert pickle.loads(pickle.dumps(transform)) is not None, name


def test_brats_merges_its_tumour_classes_into_foreground():
    root = REPO_ROOT / "bundles" / "stlu_brats"
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser.update({"bundle_root": str(root), "dataset_dir": str(root)})
    merge = [t for t in parser.get_parsed_content("train#deterministic_transforms")
             if type(t).__name__ == "AsDiscreted"]
    assert len(merge) == 1
    label = MetaTensor(torch.tensor(np.array([0, 1, 2, 4, 0], dtype=np.uint8)[None]))
    out = pickle.loads(pickle.dumps(merge[0]))({"label": label})["label"]
    assert out.dtype == torch.uint8 and out.tolist() == [[0, 1, 1, 1, 0]]
