from __future__ import annotations

import numpy as np
import torch

from monai_stlu.losses import SegDiceLoss, SymmetricPseudoLabelLoss


def reference_dice_loss(logits: np.ndarray, target: np.ndarray, smooth: float = 1e-5) -> float:
    """The UA-MT reference: foreground softmax p, 1 - (2 sum(p y) + s) / (sum(p^2) + sum(y^2) + s), in float64."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = (e / e.sum(axis=1, keepdims=True))[:, 1]
    y = (target[:, 0] == 1).astype(np.float64)
    return 1.0 - (2 * (p * y).sum() + smooth) / ((p * p).sum() + (y * y).sum() + smooth)


def test_seg_dice_matches_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 6, 5, 4))
    target = rng.integers(0, 2, size=(3, 1, 6, 5, 4))
    got = SegDiceLoss()(torch.from_numpy(logits), torch.from_numpy(target))
    assert abs(float(got) - reference_dice_loss(logits, target)) < 1e-10


def test_symmetric_pseudo_label_loss_matches_reference():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 2, 6, 5, 4))
    b = rng.normal(size=(2, 2, 6, 5, 4))
    got = SymmetricPseudoLabelLoss()(torch.from_numpy(a), torch.from_numpy(b))
    ya, yb = a.argmax(1)[:, None], b.argmax(1)[:, None]
    want = reference_dice_loss(a, yb) + reference_dice_loss(b, ya)
    assert abs(float(got) - want) < 1e-10


def test_pseudo_labels_are_detached():
    a = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    b = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    loss_fn = SymmetricPseudoLabelLoss()
    ga = torch.autograd.grad(loss_fn.loss(a, loss_fn.pseudo_label(b)), [a, b], allow_unused=True)
    assert ga[0] is not None and ga[1] is None


def test_perfect_prediction_has_near_zero_loss():
    y = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    y[..., 2:6, 2:6, 2:6] = 1
    logits = torch.cat([(1 - y) * 20.0, y * 20.0], dim=1)
    assert float(SegDiceLoss()(logits, y)) < 1e-6
