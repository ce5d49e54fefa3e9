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


def plain_mix(x: torch.Tensor, n: int, eps: float = 1e-8, detach: bool = False) -> torch.Tensor:
    """The formula written with plain autograd ops, on a [labeled; unlabeled] batch (the gradient reference)."""
    a, b = x[:n], x[n:]
    dims = list(range(2, x.dim()))
    norms = torch.linalg.vector_norm(a, dim=dims) * torch.linalg.vector_norm(b, dim=dims)
    w = ((a * b).sum(dims) / norms.clamp_min(eps)).clamp(0, 1)
    w = (w.detach() if detach else w).reshape(*w.shape, *[1] * len(dims))
    return torch.cat([w * a + (1 - w) * b, w * b + (1 - w) * a])


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last and x.dim() in (4, 5):
        return x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
    return x


# (batch, channels, *spatial); 80 channels takes the element-wise reduction instead of the Gram matrix
LAYOUTS = [((4, 3, 5, 6, 4), False), ((4, 3, 5, 6, 4), True), ((2, 80, 3, 4, 2), True), ((4, 3, 7, 5), True),
           ((2, 2, 9), False)]


@pytest.mark.parametrize("shape, channels_last", LAYOUTS)
def test_hand_written_backward_passes_gradcheck(shape, channels_last):
    torch.manual_seed(0)
    x = _layout(torch.randn(*shape, dtype=torch.float64) + 0.3, channels_last).requires_grad_()
    mix = FeatureMix()
    assert torch.autograd.gradcheck(lambda t: mix.mix_batch(t, shape[0] // 2), (x,), fast_mode=True)


@pytest.mark.parametrize("shape, channels_last", LAYOUTS)
@pytest.mark.parametrize("detach", [False, True])
def test_values_and_gradients_match_plain_autograd(shape, channels_last, detach):
    torch.manual_seed(1)
    n = shape[0] // 2
    x = torch.randn(*shape, dtype=torch.float64) + 0.3
    x[n, 0] = -0.9 * x[0, 0]  # negative cosine: w clamped to 0
    x[-1, 1] = 2.0 * x[n - 1, 1]  # cosine 1: at the clamp's upper edge
    x[n - 1, -1] = 0.0  # zero channel: the denominator is eps
    x = _layout(x, channels_last).requires_grad_()
    out = FeatureMix(detach_weight=detach).mix_batch(x, n)
    ref = plain_mix(x, n, detach=detach)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last) or not (
        channels_last and x.dim() in (4, 5)
    )
    g = torch.randn_like(ref)
    (got,) = torch.autograd.grad(out, x, g)
    (want,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_pair_and_batch_forms_agree_and_batch_errors():
    torch.manual_seed(2)
    xl, xu = torch.rand(2, 4, 6, 6, 4, dtype=torch.float64), torch.rand(2, 4, 6, 6, 4, dtype=torch.float64)
    ml, mu = FeatureMix()(xl, xu)
    mixed = FeatureMix().mix_batch(torch.cat([xl, xu]), 2)
    torch.testing.assert_close(torch.cat([ml, mu]), mixed, rtol=0, atol=0)
    with pytest.raises(ValueError, match="same shape"):
        FeatureMix().mix_batch(torch.rand(3, 4, 6, 6, 4), 1)
    with pytest.raises(ValueError, match="spatial"):
        FeatureMix().mix_batch(torch.rand(4, 4), 2)


def test_low_precision_statistics_do_not_overflow_and_track_float64():
    # a sum of squares over a volume exceeds float16's 65504: the statistics must be widened
    torch.manual_seed(3)
    x = torch.rand(4, 2, 64, 64, 32, dtype=torch.float64) * 4
    x[2:, 0] = x[:2, 0]  # identical channel pair: cos = 1, w = 1
    x64 = x.clone().requires_grad_()
    ref = plain_mix(x64, 2)
    g = torch.randn_like(ref)
    (want,) = torch.autograd.grad(ref, x64, g)
    for dtype in (torch.float16, torch.bfloat16):
        xl = x.to(dtype).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
        w = FeatureMix().mixing_weight(xl[:2], xl[2:])
        torch.testing.assert_close(w[:, 0], torch.ones(2), rtol=0, atol=1e-3)
        out = FeatureMix().mix_batch(xl, 2)
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(out.double(), ref.detach(), rtol=0, atol=0.05)
        (got,) = torch.autograd.grad(out, xl, g.to(dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=0, atol=0.05 * float(want.abs().max()))


@pytest.mark.parametrize("channels", [32, 128])  # the Gram path and the element-wise path (> 64 channels)
def test_float16_constant_features_of_magnitude_300_stay_finite(channels):
    """300 * 300 overflows float16 (65504) in the product itself, before any sum: widen first on both paths."""
    x = torch.full((2, channels, 4, 4, 4), 300.0, dtype=torch.float16)
    x[1, : channels // 2] = -300.0  # half the channels anti-aligned: cos -1 -> w 0; the others cos 1 -> w 1
    w = FeatureMix().mixing_weight(x[:1], x[1:])
    assert torch.isfinite(w).all()
    want = torch.cat([torch.zeros(channels // 2), torch.ones(channels - channels // 2)])
    torch.testing.assert_close(w[0].float(), want, rtol=0, atol=1e-3)
    out = FeatureMix().mix_batch(x.requires_grad_(), 1)
    assert torch.isfinite(out).all()
