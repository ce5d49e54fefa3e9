"""``monai_stlu.utils.argmax`` (the indices of ``torch.max``) against ``torch.argmax``: the same index everywhere,
ties and NaN included, for every dtype the training path produces."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monai_stlu.losses import SymmetricPseudoLabelLoss
from monai_stlu.utils import argmax


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim,keepdim", [(1, True), (1, False), (0, True), (-1, False)])
def test_same_index_as_torch_argmax_with_ties(dtype, dim, keepdim):
    g = torch.Generator().manual_seed(0)
    # small integers: many voxels have two or more equal maxima, where the first one must win
    x = torch.randint(0, 3, (2, 4, 6, 5, 3), generator=g).to(dtype)
    x[0, :, 0, 0, 0] = float("nan")  # an all-NaN voxel
    x[1, 2, 1, 1, 1] = float("nan")  # one NaN among numbers counts as the maximum
    got, want = argmax(x, dim, keepdim), torch.argmax(x, dim, keepdim)
    assert got.dtype == torch.long and got.shape == want.shape
    assert torch.equal(got, want)
    ties = (x == x.max(dim, keepdim=True)[0]).sum(dim) > 1
    assert ties.any()  # the comparison did exercise ties


def test_meta_tensor_and_pseudo_labels():
    logits = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.as_tensor(argmax(MetaTensor(logits), 1)), logits.argmax(1))
    assert torch.equal(SymmetricPseudoLabelLoss.pseudo_label(logits), logits.argmax(1, keepdim=True))
