from __future__ import annotations

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from monai_stlu.metrics import segmentation_metrics


def random_blob_pair(seed: int, shape=(40, 36, 24)):
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, bool)
    c = rng.integers(10, 20, 3)
    ref[c[0] - 8 : c[0] + 8, c[1] - 6 : c[1] + 7, c[2] - 5 : c[2] + 4] = True
    ref = ndimage.binary_opening(ref | (rng.random(shape) > 0.97), iterations=1)
    pred = ndimage.shift(ref.astype(float), rng.normal(0, 1.5, 3), order=0) > 0.5
    pred = ndimage.binary_dilation(pred, iterations=int(rng.integers(0, 2))) | (rng.random(shape) > 0.995)
    return pred, ref


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("spacing", [None, (0.625, 0.625, 0.625), (0.8, 1.2, 2.5)])
def test_matches_medpy(seed, spacing):
    pred, ref = random_blob_pair(seed)
    got = segmentation_metrics(pred, ref, spacing=spacing)
    want = {
        "dice": medpy_binary.dc(pred, ref),
        "jaccard": medpy_binary.jc(pred, ref),
        "hd95": medpy_binary.hd95(pred, ref, voxelspacing=spacing),
        "asd": medpy_binary.asd(pred, ref, voxelspacing=spacing),
    }
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-3), k


def test_hd95_pools_both_directions_unlike_monai_default():
    """medpy pools both directed distance sets; MONAI's HausdorffDistanceMetric takes the larger percentile."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    found = False
    for seed in range(20):
        pred, ref = random_blob_pair(seed)
        ours = segmentation_metrics(pred, ref)["hd95"]
        assert ours == pytest.approx(medpy_binary.hd95(pred, ref), abs=1e-3)
        monai_hd = float(
            compute_hausdorff_distance(
                torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None], percentile=95
            )
        )
        found |= abs(monai_hd - ours) > 1e-2
    assert found, "expected at least one pair where the two conventions differ"


def test_empty_prediction_is_not_flattered():
    ref = np.zeros((20, 20, 10), bool)
    ref[5:10, 5:10, 3:6] = True
    m = segmentation_metrics(np.zeros_like(ref), ref, spacing=(1.0, 1.0, 2.0))
    diagonal = np.sqrt(19**2 + 19**2 + 18**2)
    assert m["dice"] == 0 and m["jaccard"] == 0
    assert m["hd95"] == pytest.approx(diagonal) and m["asd"] == pytest.approx(diagonal)
    both_empty = segmentation_metrics(np.zeros_like(ref), np.zeros_like(ref))
    assert both_empty == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}


def test_shape_errors():
    with pytest.raises(ValueError, match="differs"):
        segmentation_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(np.ones((4, 4, 4)), np.ones((4, 4, 4)), spacing=(1, 1))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_training_dice_on_the_batched_output_equals_per_case_post_processing(num_classes):
    """The bundle's training Dice (``onehot_pred_label`` on the batched trainer output) gives MONAI's MeanDice the same
    inputs as spleen_ct_segmentation's decollate + per-case ``AsDiscreted``, and the Dice of a float64 formula."""
    import torch
    from monai.data import decollate_batch
    from monai.metrics import DiceMetric
    from monai.transforms import AsDiscreted

    from monai_stlu.handlers import onehot_pred_label

    g = torch.Generator().manual_seed(num_classes)
    pred = torch.randn(3, num_classes, 12, 10, 8, generator=g).contiguous(memory_format=torch.channels_last_3d)
    label = torch.randint(0, num_classes, (3, 1, 12, 10, 8), generator=g).float()
    label[2] = 0  # a case without foreground: MONAI leaves it out (NaN), on both paths
    output = {"pred": pred, "label": label, "loss": torch.tensor(0.3)}
    y_pred, y = onehot_pred_label(num_classes)(output)
    post = AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=num_classes)
    cases = [post(item) for item in decollate_batch(dict(output), detach=True)]
    assert torch.equal(y_pred, torch.stack([c["pred"].as_tensor() for c in cases]))
    assert torch.equal(y, torch.stack([c["label"].as_tensor() for c in cases]))
    assert torch.equal(torch.stack(onehot_pred_label(num_classes)(decollate_batch(output))), torch.stack([y_pred, y]))
    batched = DiceMetric(include_background=False)(y_pred, y)
    index, truth = pred.double().argmax(1).numpy(), label[:, 0].long().numpy()
    for b in range(3):
        for c in range(1, num_classes):
            p, t = index[b] == c, truth[b] == c
            want = 2 * (p & t).sum() / (p.sum() + t.sum()) if t.any() else np.nan
            np.testing.assert_allclose(batched[b, c - 1].item(), want, rtol=1e-6)
