"""The bundle's two training loaders (labeled and unlabeled) run side by side, each in its own background thread
(``ThreadDataLoader``). MONAI's random transforms keep their last draw on the instance (``RandSpatialCropd`` draws a
crop, then cuts every key with it), so one transform instance shared by the two threads can cut a labeled image and
its label at different places, or at another volume's size. Each loader must own its transforms."""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Randomizable
from monai.utils import set_determinism

from conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"


def write_cases(root, shapes, seed=0):
    """Cases whose label is recoverable from the image: foreground voxels are brighter than every background one."""
    rng = np.random.RandomState(seed)
    ids = []
    for i, shape in enumerate(shapes):
        label = (rng.uniform(size=[s // 8 for s in shape]) > 0.5).repeat(8, 0).repeat(8, 1).repeat(8, 2)
        image = label * 10.0 + rng.uniform(size=label.shape)
        folder = root / "2018LA_Seg_Training Set" / f"CASE{i:02d}"
        folder.mkdir(parents=True)
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f.create_dataset("image", data=image.astype(np.float32))
            f.create_dataset("label", data=label.astype(np.uint8))
        ids.append(f"CASE{i:02d}")
    (root / "train.list").write_text("\n".join(ids) + "\n")
    # no test list: training does not read one (a test case among the training cases would be refused)
    return str(root)


def walk(transform):
    """A pipeline's transforms, nested ones included. Not ``Compose.flatten()``: it builds a new ``Compose``, which
    re-seeds the transforms it holds from MONAI's global seed (after ``set_determinism`` every loader alike)."""
    yield transform
    for child in getattr(transform, "transforms", ()):
        yield from walk(child)


def random_transform_ids(loader) -> set[int]:
    return {id(t) for t in walk(loader.dataset.transform) if isinstance(t, Randomizable)}


def test_labeled_and_unlabeled_loaders_own_their_transforms(tmp_path):
    set_determinism(seed=1337)  # as the bundle's initialize does: MONAI's global seed is set
    # labeled cases 64 wide, unlabeled ones of other sizes: a crop drawn for one cut from the other shows
    shapes = [(64, 64, 48)] * 4 + [(88, 72, 56), (72, 96, 48), (96, 80, 64), (80, 88, 56)]
    data = write_cases(tmp_path / "data", shapes)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": data, "num_val": 0, "num_labeled": 4,
                   "patch_size": [48, 48, 32], "progress": False})
    labeled = parser.get_parsed_content("train#dataloader")
    unlabeled = parser.get_parsed_content("train#unlabeled_dataloader")
    assert type(labeled).__name__ == type(unlabeled).__name__ == "ThreadDataLoader"
    assert random_transform_ids(labeled) and not random_transform_ids(labeled) & random_transform_ids(unlabeled)

    # each draws its own random stream: the unlabeled crops, rotations and flips do not repeat the labeled ones
    crop_states = [next(t for t in walk(loader.dataset.transform) if type(t).__name__ == "RandSpatialCropd").R.get_state()[1]
                   for loader in (labeled, unlabeled)]
    assert not np.array_equal(*crop_states)

    passes = 25
    for _ in range(passes):
        n = 0
        for batch, _ in zip(labeled, unlabeled):  # the trainer draws from both, their threads running together
            image, label = torch.as_tensor(batch["image"]), torch.as_tensor(batch["label"])
            assert image.shape == label.shape == (2, 1, 48, 48, 32)
            for img, lab in zip(image, label):
                fg, bg = img[lab > 0], img[lab == 0]
                assert fg.numel() and bg.numel()
                assert fg.min() > bg.max(), "a labeled crop's image and label were cut at different places"
            n += 1
        assert n == len(labeled)  # a loader thread that died on a bad crop would end the pass early
    set_determinism(seed=None)


def snapshot(dataset):
    return [{k: (item[k].as_tensor().clone(), item[k].affine.clone(), len(item[k].applied_operations),
                 sorted(item[k].meta)) for k in ("image", "label") if k in item} for item in dataset._cache]


def test_random_transforms_leave_the_cache_unchanged(tmp_path):
    """The training datasets skip CacheDataset's deep copy of the whole cached volume before every crop
    (``copy_cache: false``): the crop, flips, rotations and collation must never write into the cache, even when a
    consumer writes into its batch, the crop is the whole volume, or no flip or rotation happens."""
    shapes = [(48, 48, 32)] * 2 + [(64, 64, 48)] * 2 + [(72, 64, 40)] * 4
    data = write_cases(tmp_path / "data", shapes)
    for rot_flip in (True, False):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
        parser.update({"bundle_root": str(tmp_path), "dataset_dir": data, "num_val": 0, "num_labeled": 4,
                       "patch_size": [48, 48, 32], "progress": False, "random_rot_flip": rot_flip})
        loaders = [parser.get_parsed_content(k) for k in ("train#dataloader", "train#unlabeled_dataloader")]
        assert all(loader.dataset.copy_cache is False for loader in loaders)
        before = [snapshot(loader.dataset) for loader in loaders]
        for _ in range(10):
            for batches in zip(*loaders):
                for batch in batches:
                    for key in ("image", "label"):
                        if key in batch:
                            batch[key].mul_(0).add_(-7)  # a consumer writing into its batch in place
        for loader, cached in zip(loaders, before):
            for item, (now, then) in enumerate(zip(snapshot(loader.dataset), cached)):
                assert now.keys() == then.keys() and "image" in now
                for key in now:
                    assert torch.equal(now[key][0], then[key][0]), f"cached {key} {item} was written to"
                    assert torch.equal(now[key][1], then[key][1]) and now[key][2:] == then[key][2:], f"{key} {item} meta"


def test_worker_processes_outlive_a_pass(tmp_path):
    """With worker processes (``num_workers`` > 0, the CUDA default), a pass over the labeled cases lasts a few
    iterations (8 cases in batches of 2: 4); the same processes must serve the next pass instead of new ones being
    started for each (about 0.1 s a pass). Without workers the loaders run in their thread, as before."""
    data = write_cases(tmp_path / "data", [(56, 56, 40)] * 8)
    for workers in (0, 1):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
        parser.update({"bundle_root": str(tmp_path), "dataset_dir": data, "num_val": 0, "num_labeled": 4,
                       "patch_size": [48, 48, 32], "progress": False, "num_workers": workers})
        # the process that cut each crop, carried in the batch
        parser["train#random_transforms"].append(
            {"_target_": "Lambda", "func": "$lambda d: {**d, 'pid': torch.tensor(os.getpid())}"})
        loaders = [parser.get_parsed_content(k) for k in ("train#dataloader", "train#unlabeled_dataloader")]
        for loader in loaders:
            assert loader.persistent_workers is (workers > 0)
            pids = [set(batch["pid"].tolist()) for _ in range(3) for batch in loader]
            assert len(pids) == 3 * len(loader) and len(loader) >= 2
            if workers:
                assert len(set.union(*pids)) == 1 and os.getpid() not in set.union(*pids)  # one worker, all passes
            else:
                assert set.union(*pids) == {os.getpid()}
