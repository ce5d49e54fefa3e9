# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""Channel-wise, similarity-guided mixing of labeled and unlabeled features (STLU-Net)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from monai_stlu.utils.flags import as_bool

__all__ = ["FeatureMix"]

# above this many channels the per-channel dot products are element-wise reductions instead of a Gram matrix
_GRAM_MAX_CHANNELS = 64


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the mixing works in: channels-last when ``x`` is stored so (and not also plain contiguous)."""
    cl = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if cl is not None and not x.is_contiguous() and x.is_contiguous(memory_format=cl):
        return cl
    return torch.contiguous_format


def _channels_last(fmt: torch.memory_format) -> bool:
    return fmt in (torch.channels_last, torch.channels_last_3d)


def _rows(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """A (B, N, C) view of a (B, C, *spatial) tensor stored in ``fmt`` (N: the flattened spatial size)."""
    b, c = x.shape[:2]
    if _channels_last(fmt):
        return x.permute(0, *range(2, x.dim()), 1).view(b, -1, c)
    return x.view(b, c, -1).transpose(1, 2)


def _wide(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """A 3D view of ``x`` whose last dimension is long and contiguous, so per-channel element-wise work vectorises."""
    b, c = x.shape[:2]
    if _channels_last(fmt):
        return x.permute(0, *range(2, x.dim()), 1).view(b, x.shape[2], -1)
    return x.view(b, c, -1)


def _per_channel(k: torch.Tensor, x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """Broadcast (B, C) coefficients against ``_wide(x, fmt)`` (tiled along the channels-last rows)."""
    b, c = x.shape[:2]
    if _channels_last(fmt):
        return k.reshape(b, 1, c).repeat(1, 1, math.prod(x.shape[3:]))
    return k.reshape(b, c, 1)


def _channel_dot(p: torch.Tensor, q: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``sum over space of p * q`` per sample and channel, (B, C), in float32 at least.

    Few channels: the diagonal of the (C, C) Gram matrix, one matmul reading each input once; more: element-wise
    products summed. float16 is widened first on both paths (products and sums over a volume overflow it);
    bfloat16 has float32's range and its matmul accumulates in float32.
    """
    acc = torch.promote_types(p.dtype, torch.float32)
    if p.dtype == torch.float16:  # on both paths: a product of two values of 300 already overflows float16
        p, q = p.to(acc), q.to(acc)
    if p.shape[1] > _GRAM_MAX_CHANNELS:
        return (p * q).sum(dim=list(range(2, p.dim())), dtype=acc)
    gram = torch.bmm(_rows(p, fmt).transpose(1, 2), _rows(q, fmt))
    return gram.diagonal(dim1=1, dim2=2).to(acc)


class _MixFunction(torch.autograd.Function):
    """Forward and hand-written backward of the mixing, on the concatenated ``[labeled; unlabeled]`` batch.

    Written out because autograd of the plain formula makes about twenty passes over the largest feature maps
    (slices, concatenation, type casts, two norms, two lerps and their gradients); this makes about ten.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, n: int, eps: float, detach_weight: bool) -> torch.Tensor:  # type: ignore[override]
        fmt = _memory_format(x)
        x = x.contiguous(memory_format=fmt)
        with torch.autocast(x.device.type, enabled=False):
            a, b = x[:n], x[n:]
            sq = _channel_dot(x, x, fmt)
            prod = (sq[:n] * sq[n:]).sqrt()
            den = prod.clamp_min(eps)
            cos = _channel_dot(a, b, fmt) / den
            w = cos.clamp(0.0, 1.0)
            out = torch.empty_like(x, memory_format=fmt)
            wx = _per_channel(w.to(x.dtype), a, fmt)
            torch.lerp(_wide(b, fmt), _wide(a, fmt), wx, out=_wide(out[:n], fmt))  # w x_l + (1 - w) x_u
            torch.lerp(_wide(a, fmt), _wide(b, fmt), wx, out=_wide(out[n:], fmt))  # w x_u + (1 - w) x_l
        ctx.save_for_backward(x, sq, prod, den, cos, w)
        ctx.n, ctx.eps, ctx.detach_weight, ctx.fmt = n, eps, detach_weight, fmt
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:  # type: ignore[override]
        x, sq, prod, den, cos, w = ctx.saved_tensors
        n, fmt = ctx.n, ctx.fmt
        with torch.autocast(x.device.type, enabled=False):
            g = grad.to(x.dtype).contiguous(memory_format=fmt)
            a, b, g_l, g_u = x[:n], x[n:], g[:n], g[n:]
            gx = torch.empty_like(x, memory_format=fmt)
            ga, gb = _wide(gx[:n], fmt), _wide(gx[n:], fmt)
            wx = _per_channel(w.to(x.dtype), a, fmt)
            torch.lerp(_wide(g_u, fmt), _wide(g_l, fmt), wx, out=ga)  # w g_l + (1 - w) g_u
            torch.lerp(_wide(g_l, fmt), _wide(g_u, fmt), wx, out=gb)  # w g_u + (1 - w) g_l
            if not ctx.detach_weight:
                # dL/dw = sum (g_l - g_u)(x_l - x_u); the clamp passes it where 0 <= cos <= 1
                d = a - b
                g_cos = (_channel_dot(g_l, d, fmt) - _channel_dot(g_u, d, fmt)) * ((cos >= 0) & (cos <= 1))
                # cos = <a, b> / max(|a| |b|, eps): d cos/da = b / den - [|a||b| >= eps] cos a / |a|^2
                live = prod >= ctx.eps
                cross = _per_channel((g_cos / den).to(x.dtype), a, fmt)
                own_a = torch.where(live, -g_cos * cos / sq[:n].clamp_min(ctx.eps), 0.0)
                own_b = torch.where(live, -g_cos * cos / sq[n:].clamp_min(ctx.eps), 0.0)
                wa, wb = _wide(a, fmt), _wide(b, fmt)
                ga.addcmul_(wb, cross).addcmul_(wa, _per_channel(own_a.to(x.dtype), a, fmt))
                gb.addcmul_(wa, cross).addcmul_(wb, _per_channel(own_b.to(x.dtype), a, fmt))
        return gx, None, None, None


class FeatureMix(nn.Module):
    """Mix labeled and unlabeled feature maps channel by channel, weighted by their cosine similarity.

    For each pair (labeled sample ``i``, unlabeled sample ``i``) and each channel ``c``, with the spatial
    dimensions flattened::

        w     = clamp(cos(x_u[i, c], x_l[i, c]), 0, 1)
        x_m_u = w * x_u + (1 - w) * x_l
        x_m_l = w * x_l + (1 - w) * x_u

    The cosine divides by ``max(|x_u| |x_l|, eps)`` (as ``torch.nn.functional.cosine_similarity`` does), so an
    all-zero channel gets ``w = 0``. The weight is computed in at least float32 from the features as they are
    (bfloat16 under the fast path; float16 features are widened to float32 first), and autocast is off inside.
    Gradients flow through ``w`` unless ``detach_weight``; the backward pass is written by hand (checked against
    autograd of the formula with ``torch.autograd.gradcheck``) because it runs on the largest feature maps.
    Mixed labeled features keep their labels.

    Reference:
        "Enhancing semi-supervised medical image segmentation via semantic transfer", Pattern Recognition 2026.

    Args:
        eps: the small value of the cosine's denominator.
        detach_weight: if True, no gradient flows through the mixing weight ``w`` (command-line strings such as
            ``"false"`` read by their meaning).

    Example::

        mix = FeatureMix()
        mixed_l, mixed_u = mix(torch.rand(2, 16, 8, 8, 8), torch.rand(2, 16, 8, 8, 8))
        mixed = mix.mix_batch(torch.rand(4, 16, 8, 8, 8), n_labeled=2)  # the same on a [labeled; unlabeled] batch
    """

    def __init__(self, eps: float = 1e-8, detach_weight: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.detach_weight = as_bool(detach_weight)  # --detach_weight false arrives as a string

    def mixing_weight(self, x_labeled: torch.Tensor, x_unlabeled: torch.Tensor) -> torch.Tensor:
        """Return ``w`` of shape (B, C), in float32 at least (float64 inputs keep float64); no gradient.

        ``cos = <x_u, x_l> / max(|x_u| |x_l|, eps)`` over the flattened spatial dimensions.
        """
        self._check(x_labeled, x_unlabeled)
        fmt = _memory_format(x_labeled)
        x_labeled, x_unlabeled = (t.detach().contiguous(memory_format=fmt) for t in (x_labeled, x_unlabeled))
        norms = (_channel_dot(x_labeled, x_labeled, fmt) * _channel_dot(x_unlabeled, x_unlabeled, fmt)).sqrt()
        return (_channel_dot(x_labeled, x_unlabeled, fmt) / norms.clamp_min(self.eps)).clamp(0.0, 1.0)

    def mix_batch(self, x: torch.Tensor, n_labeled: int) -> torch.Tensor:
        """Mix a concatenated batch ``[labeled; unlabeled]`` (the first ``n_labeled`` samples are labeled).

        Returns the mixed batch in the same order, shape, dtype and memory format; no copies of the halves.

        Raises:
            ValueError: when the batch does not split into two equal halves or has no spatial dimension.
        """
        if x.dim() < 3:
            raise ValueError(f"FeatureMix expects (B, C, *spatial) inputs, got shape {list(x.shape)}.")
        if x.shape[0] != 2 * n_labeled:
            raise ValueError(
                "FeatureMix pairs labeled sample i with unlabeled sample i, so both halves need the same shape; "
                f"got a batch of {x.shape[0]} with {n_labeled} labeled samples."
            )
        return _MixFunction.apply(x, n_labeled, self.eps, self.detach_weight)

    def forward(self, x_labeled: torch.Tensor, x_unlabeled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x_labeled: features of the labeled batch, (B, C, *spatial).
            x_unlabeled: features of the unlabeled batch, same shape.

        Returns:
            ``(mixed_labeled, mixed_unlabeled)``, each of the input shape and dtype.

        Raises:
            ValueError: when the two inputs differ in shape (batch sizes must match for pairing) or have no
                spatial dimension.
        """
        self._check(x_labeled, x_unlabeled)
        mixed = self.mix_batch(torch.cat([x_labeled, x_unlabeled], dim=0), x_labeled.shape[0])
        return mixed[: x_labeled.shape[0]], mixed[x_labeled.shape[0] :]

    @staticmethod
    def _check(x_labeled: torch.Tensor, x_unlabeled: torch.Tensor) -> None:
        if x_labeled.shape != x_unlabeled.shape:
            raise ValueError(
                "FeatureMix pairs labeled sample i with unlabeled sample i, so both inputs need the same shape; "
                f"got labeled {list(x_labeled.shape)} and unlabeled {list(x_unlabeled.shape)}."
            )
        if x_labeled.dim() < 3:
            raise ValueError(f"FeatureMix expects (B, C, *spatial) inputs, got shape {list(x_labeled.shape)}.")
