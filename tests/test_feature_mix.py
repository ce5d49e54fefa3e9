from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_stlu.networks.layers import FeatureMix


def reference_mix(xl: np.ndarray, xu: np.ndarray, eps: float = 1e-8):
    """The paper's formula, computed independently in float64 loops."""
    xl, xu = xl.astype(np.float64), xu.astype(np.float64)
    ml, mu = np.empty_like(xl), np.empty_like(xu)
    b, c = xl.shape[:2]
    for i in range(b):
        for k in range(c):
            a, v = xu[i, k].ravel(), xl[i, k].ravel()
            denom = max(np.linalg.norm(a) * np.linalg.norm(v), eps)
            w = min(max(float(a @ v) / denom, 0.0), 1.0)
            mu[i, k] = w * xu[i, k] + (1 - w) * xl[i, k]
            ml[i, k] = w * xl[i, k] + (1 - w) * xu[i, k]
    return ml, mu


@pytest.mark.parametrize("shape", [(2, 5, 6, 7, 4), (3, 4, 9, 8), (1, 3, 10)])
def test_matches_formula_float64(shape):
    rng = np.random.default_rng(1)
    xl = rng.normal(size=shape) + 0.3
    xu = rng.normal(size=shape) + 0.3
    xu[0, 0] = -xl[0, 0]  # negative cosine -> clamped to w = 0
    xu[0, 1] = 2.5 * xl[0, 1]  # cosine 1 -> w = 1
    xl[-1, -1] = 0.0  # all-zero channel -> w = 0
    ml, mu = FeatureMix()(torch.from_numpy(xl), torch.from_numpy(xu))
    rl, ru = reference_mix(xl, xu)
    np.testing.assert_allclose(ml.numpy(), rl, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mu.numpy(), ru, rtol=1e-10, atol=1e-12)
    # the special channels, spelled out
    np.testing.assert_allclose(mu[0, 0].numpy(), xl[0, 0])  # w = 0: unlabeled becomes labeled
    np.testing.assert_allclose(mu[0, 1].numpy(), xu[0, 1])  # w = 1: unchanged
    np.testing.assert_allclose(ml[-1, -1].numpy(), xu[-1, -1])  # zero channel: w = 0
    assert ml.dtype == torch.float64


def test_mixing_weight_values():
    xl = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    xu = torch.tensor([[[1.0, 1.0]], [[3.0, 4.0]]])
    w = FeatureMix().mixing_weight(xl, xu)
    np.testing.assert_allclose(w.numpy(), [[1 / np.sqrt(2)], [0.0]], rtol=1e-6)


@pytest.mark.parametrize(
    "sl, su", [((2, 4, 8, 8, 8), (3, 4, 8, 8, 8)), ((2, 4, 8, 8, 8), (2, 5, 8, 8, 8)), ((2, 4, 8), (2, 4, 9))]
)
def test_shape_mismatch_raises(sl, su):
    with pytest.raises(ValueError, match="same shape"):
        FeatureMix()(torch.rand(sl), torch.rand(su))


def test_no_spatial_dim_raises():
    with pytest.raises(ValueError, match="spatial"):
        FeatureMix()(torch.rand(2, 4), torch.rand(2, 4))


def test_detach_weight_stops_gradient_through_w():
    xl = torch.rand(2, 3, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    xu = torch.rand(2, 3, 4, 4, 4, dtype=torch.float64)
    ml, _ = FeatureMix(detach_weight=True)(xl, xu)
    (g,) = torch.autograd.grad(ml.sum(), xl)
    w = FeatureMix().mixing_weight(xl.detach(), xu)
    # with w constant, d(sum(w xl + (1-w) xu))/dxl = w everywhere
    np.testing.assert_allclose(g.numpy(), w[..., None, None, None].expand_as(xl).numpy(), rtol=1e-12)
    ml2, _ = FeatureMix(detach_weight=False)(xl, xu)
    (g2,) = torch.autograd.grad(ml2.sum(), xl)
    assert not torch.allclose(g, g2)


def test_bf16_inputs_keep_dtype():
    xl = torch.rand(2, 3, 4, 4, 4).bfloat16()
    xu = torch.rand(2, 3, 4, 4, 4).bfloat16()
    ml, mu = FeatureMix()(xl, xu)
    assert ml.dtype == mu.dtype == torch.bfloat16
    rl, ru = reference_mix(xl.float().numpy(), xu.float().numpy())
    np.testing.assert_allclose(ml.float().numpy(), rl, atol=2e-2)
