"""``target_spacing``: every case resampled to a coarser grid for training (a protocol at half of LA's resolution),
evaluation and inference on the label's and the input's own grid (the prediction inverted before the argmax), and
the spacing recorded in the model file so that ``monai_stlu predict`` resamples as the training did."""

from __future__ import annotations

import ast
import shlex

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from monai_stlu.data import write_synthetic_la

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"
HALF = [1.25, 1.25, 1.25]  # LA's 0.625 mm, halved


@pytest.fixture(scope="module")
def la(tmp_path_factory):
    return write_synthetic_la(str(tmp_path_factory.mktemp("ts") / "la"), num_train=6, num_test=2, shape=(48, 40, 32))


def parser_for(la, *files, **overrides):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p.update({"bundle_root": str(REPO_ROOT / "bundles" / "stlu_la"), "dataset_dir": la, "num_val": 1, "num_labeled": 4,
              **overrides})
    return p


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_training_resamples_image_and_label_to_the_target_spacing(la):
    p = parser_for(la, "train.json", target_spacing=HALF)
    case = p.get_parsed_content("datalist")["labeled"][0]
    out = p.get_parsed_content("validate#preprocessing")(dict(case))  # the deterministic part, as cached
    assert tuple(out["image"].shape) == (1, 24, 20, 16) and tuple(out["label"].shape) == (1, 24, 20, 16)
    assert out["label"].dtype == torch.uint8 and set(torch.unique(out["label"]).tolist()) <= {0, 1}
    assert np.allclose(out["image"].pixdim.tolist(), HALF)
    # without the key nothing is resampled
    plain = parser_for(la, "train.json").get_parsed_content("validate#preprocessing")(dict(case))
    assert tuple(plain["image"].shape) == (1, 48, 40, 32)


def test_evaluation_scores_on_the_labels_own_grid(la):
    """The evaluation resamples the image only; a prediction made on the coarse grid (here: the coarse label itself,
    as logits) is inverted onto the label's grid before the argmax, where the metrics are computed."""
    from monai.data import MetaTensor
    from monai.transforms import Spacingd

    p = parser_for(la, "train.json", "evaluate.json", target_spacing=HALF, save_predictions=False)
    case = p.get_parsed_content("datalist")["test"][0]
    item = p.get_parsed_content("validate#preprocessing")(dict(case))
    assert tuple(item["image"].shape) == (1, 24, 20, 16) and tuple(item["label"].shape) == (1, 48, 40, 32)
    coarse = Spacingd("label", pixdim=HALF, mode="nearest")({"label": item["label"].float()})["label"]
    logits = torch.cat([1 - coarse, coarse]).float().as_tensor()
    item["pred"] = MetaTensor(logits, meta=item["image"].meta, applied_operations=item["image"].applied_operations)
    out = p.get_parsed_content("validate#postprocessing")(item)
    pred = np.asarray(out["pred"])[0] > 0
    assert pred.shape == (48, 40, 32)
    assert dice(pred, np.asarray(item["label"])[0] > 0) > 0.9  # a sphere survives a 2x round trip


def test_the_model_record_carries_the_target_spacing_to_predict(la, tmp_path):
    """A model trained with target_spacing records it; ``predict``/``export`` pass it on without a flag."""
    from monai_stlu.cli import _model_settings
    from monai_stlu.utils import attach_model_record, check_model_record

    record = parser_for(la, "train.json", target_spacing=HALF).get_parsed_content("model_record")
    assert check_model_record(record)["settings"]["target_spacing"] == HALF
    torch.save(attach_model_record({"w": torch.zeros(1)}, record), tmp_path / "model.pt")
    _, args, _ = _model_settings(str(tmp_path / "model.pt"), str(CONFIGS), None, {})
    assert ast.literal_eval(args[args.index("--target_spacing") + 1]) == HALF
    plain = parser_for(la, "train.json").get_parsed_content("model_record")
    assert check_model_record(plain)["settings"]["target_spacing"] is None


@pytest.mark.slow
@pytest.mark.long  # a short training, an evaluation and a prediction (the quick tests above cover each step in process)
def test_train_evaluate_predict_at_half_resolution(la, tmp_path):
    from test_cli import TRAIN_SMALL, cli

    out = tmp_path / "run"
    cli("train", "--method", "supervised", "--dataset_dir", la, "--output", out, "--num_labeled", 4, "--num_val", 1,
        "--max_iterations", 2, "--val_interval", 2, "--target_spacing", "[1.25,1.25,1.25]", *TRAIN_SMALL)
    model = out / "models" / "supervised" / "model.pt"
    preds = tmp_path / "pred"
    printed = cli("predict", "-i", f"{la}/2018LA_Seg_Training Set", "-o", preds, "--model", model).stdout
    argv = shlex.split(printed.split("\nsegmentations:")[0].replace("\\\n", " "))
    assert ast.literal_eval(argv[argv.index("--target_spacing") + 1]) == [1.25, 1.25, 1.25]  # from the record
    written = sorted(preds.rglob("*_seg.nii.gz"))
    assert written and all(nib.load(str(f)).shape == (48, 40, 32) for f in written)  # the input's own grid
