# Copyright (c) monai_stlu contributors
# Licensed under the Apache License, Version 2.0
"""STLU-Net: a V-Net run as two weight-sharing streams (feature mixing and channel dropout)."""

# No ``from __future__ import annotations`` here: TorchScript reads the signature of the ``@torch.jit.unused``
# method through ``inspect`` and cannot resolve string annotations, so this module uses evaluated typing forms.
from collections.abc import Sequence
from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from monai_stlu.networks.layers.feature_mix import FeatureMix
from monai_stlu.networks.nets.vnet import VNet
from monai_stlu.utils.names import DROPOUT_PLACEMENTS, MIX_STRATEGIES

__all__ = ["STLUNet", "STLUOutput"]


class STLUOutput(NamedTuple):
    """Logits of the two streams, split into the labeled and the unlabeled halves of the batch."""

    mix_labeled: torch.Tensor
    mix_unlabeled: torch.Tensor
    drop_labeled: torch.Tensor
    drop_unlabeled: torch.Tensor


class STLUNet(nn.Module):
    """Two weight-sharing streams over one backbone, for semi-supervised segmentation by semantic transfer.

    - **Feature-mixing stream**: after each encoder stage in ``mix_stages``, the labeled and unlabeled features
      are mixed channel-wise by :py:class:`monai_stlu.networks.layers.FeatureMix`; the mixed features feed the
      next stage and the skip connection, then the shared decoder produces ``p_m^l`` and ``p_m^u``.
    - **Semantic-enhancement stream**: channel dropout (``Dropout3d``) after each encoder stage in
      ``dropout_stages``, no mixing; it produces ``p_d^l`` and ``p_d^u``.

    ``forward(x)`` (no unlabeled batch) is the plain backbone: in ``eval()`` mode this is the single-output
    network that SlidingWindowInferer, TorchScript/ONNX export and MONAI Label use. ``forward(x_l, x_u)``
    returns an :py:class:`STLUOutput` with both streams' logits.

    Encoder stages before the first mixing or dropout stage see the same input in both streams, so they run
    once (same outputs and gradients as running them twice; their BatchNorm running statistics are updated once
    per iteration instead of twice). Mixing works on the concatenated ``[labeled; unlabeled]`` batch without
    splitting it (:py:meth:`FeatureMix.mix_batch`).

    The backbone only needs ``encoder`` (a sequence of stages, each applied to the previous stage's output) and
    ``decode_stages(list_of_stage_outputs)``: :py:class:`VNet` and the MONAI adapters
    (:py:class:`DynUNetBackbone`, :py:class:`SegResNetBackbone`, :py:class:`UNetBackbone`, chosen by the bundles'
    ``backbone`` key through :py:func:`build_backbone`) have both, so no mixing code depends on the backbone. Stage indices count from 0 (shallowest). The paper's S / I / B groups for the V-Net are
    stages ``(0, 1)``, ``(2, 3)`` and ``(4,)``; mixing at all of them is the default and the best setting.

    Reference:
        "Enhancing semi-supervised medical image segmentation via semantic transfer", Pattern Recognition 2026.

    Args:
        spatial_dims: 3 or 2 (used when ``backbone`` is None).
        in_channels: input channels of the default V-Net backbone.
        out_channels: number of classes of the default V-Net backbone.
        n_filters: first-stage channels of the default V-Net backbone.
        normalization: normalization of the default V-Net backbone.
        mix_stages: encoder stages whose outputs are mixed; None means all stages.
        dropout_stages: encoder stages whose outputs get channel dropout in the second stream;
            None means the same stages as ``mix_stages``.
        dropout_prob: channel-dropout probability of the semantic-enhancement stream.
        detach_weight: stop gradients through the FeatureMix weight.
        eps: the cosine's eps in FeatureMix.
        mix_strategy: ``"similarity"`` (the paper's cosine-guided channel weights, :py:class:`FeatureMix`) or
            ``"fixed"``: every channel mixed with the scalar ``mix_lambda`` (``x_m_l = l x_l + (1 - l) x_u``, and
            symmetrically), an ablation.
        mix_lambda: the fixed strategy's weight of a sample's own features.
        dropout_placement: ``"decoder"`` (default): dropout only on the features handed to the decoder (skip
            connections and bottleneck), the encoder itself running undisturbed, as UniMatch's feature perturbation;
            ``"cascade"``: the dropped features feed the next encoder stage and the decoder (so dropout compounds
            through the encoder). The paper does not say which; ``"decoder"`` selected better models on the LA
            quality protocol's validation cases (two seeds, ``BENCHMARKS.md``), ``"cascade"`` was the default
            before.
        backbone: a custom backbone; when given, the V-Net arguments above are ignored.

    Raises:
        ValueError: when a stage index is out of range.

    Example::

        net = STLUNet(in_channels=1, out_channels=2, n_filters=16)
        out = net(x_labeled, x_unlabeled)      # train(): STLUOutput of four logits tensors
        logits = net.eval()(x)                  # eval(): one logits tensor
    """

    # the two-stream pass is Python-only (``forward_streams`` is ``@torch.jit.unused``); so is its mixing layer
    __jit_ignored_attributes__ = ["feature_mix"]

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batch",
        mix_stages: Optional[Sequence[int]] = None,
        dropout_stages: Optional[Sequence[int]] = None,
        dropout_prob: float = 0.5,
        detach_weight: bool = False,
        eps: float = 1e-8,
        backbone: Optional[nn.Module] = None,
        mix_strategy: str = "similarity",
        mix_lambda: float = 0.5,
        dropout_placement: str = "decoder",
    ) -> None:
        super().__init__()
        if mix_strategy not in MIX_STRATEGIES:
            raise ValueError(f"mix_strategy must be 'similarity' or 'fixed', got {mix_strategy!r}.")
        if dropout_placement not in DROPOUT_PLACEMENTS:
            raise ValueError(f"dropout_placement must be 'cascade' or 'decoder', got {dropout_placement!r}.")
        if not 0.0 <= mix_lambda <= 1.0:
            raise ValueError(f"mix_lambda must be in [0, 1], got {mix_lambda}.")
        self.mix_strategy = mix_strategy
        self.mix_lambda = float(mix_lambda)
        self.dropout_placement = dropout_placement
        if backbone is None:
            backbone = VNet(
                spatial_dims=spatial_dims,
                in_channels=in_channels,
                out_channels=out_channels,
                n_filters=n_filters,
                normalization=normalization,
                dropout=False,
            )
        for attr in ("encoder", "decode_stages"):
            if not hasattr(backbone, attr):
                raise ValueError(f"the backbone needs an `{attr}` attribute, {type(backbone).__name__} has none.")
        self.backbone = backbone
        n_stages = len(backbone.encoder)  # type: ignore[arg-type]
        mix = list(range(n_stages)) if mix_stages is None else [int(s) for s in mix_stages]
        drop = list(mix) if dropout_stages is None else [int(s) for s in dropout_stages]
        for name, stages in (("mix_stages", mix), ("dropout_stages", drop)):
            bad = [s for s in stages if not 0 <= s < n_stages]
            if bad:
                raise ValueError(f"{name} must be stage indices in [0, {n_stages - 1}], got {bad}.")
        self.mix_stages = sorted(set(mix))
        self.dropout_stages = sorted(set(drop))
        self.feature_mix = FeatureMix(eps=eps, detach_weight=detach_weight)
        drop_t = nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d
        self.channel_dropout = drop_t(p=dropout_prob)

    def forward(
        self, x: torch.Tensor, x_unlabeled: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: the (labeled) images, (B, C, *spatial).
            x_unlabeled: the unlabeled images, same shape as ``x``; when None, the single-stream network runs.

        Returns:
            the logits (B, out_channels, *spatial) when ``x_unlabeled`` is None, otherwise an
            :py:class:`STLUOutput` ``(mix_labeled, mix_unlabeled, drop_labeled, drop_unlabeled)``.

        Raises:
            ValueError: when the labeled and unlabeled batches differ in shape.
        """
        if x_unlabeled is None:
            return self.backbone(x)
        return self.forward_streams(x, x_unlabeled)

    @torch.jit.unused
    def _mix(self, h: torch.Tensor, b: int) -> torch.Tensor:
        if self.mix_strategy == "similarity":
            return self.feature_mix.mix_batch(h, b)
        lam = self.mix_lambda
        h_l, h_u = h[:b], h[b:]
        return torch.cat([lam * h_l + (1 - lam) * h_u, lam * h_u + (1 - lam) * h_l], dim=0)

    @torch.jit.unused
    def forward_streams(
        self, x_labeled: torch.Tensor, x_unlabeled: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run both streams over the concatenated labeled and unlabeled batch; returns an :py:class:`STLUOutput`."""
        if x_labeled.shape != x_unlabeled.shape:
            raise ValueError(
                "STLUNet pairs labeled and unlabeled samples one to one: got labeled batch "
                f"{list(x_labeled.shape)} and unlabeled batch {list(x_unlabeled.shape)}."
            )
        b = x_labeled.shape[0]
        x = torch.cat([x_labeled, x_unlabeled], dim=0)
        mixed: list[torch.Tensor] = []
        dropped: list[torch.Tensor] = []
        h_mix, h_drop = x, x
        # until the first stage that mixes or drops, both streams see the same input: compute those stages once
        shared = True
        for k, stage in enumerate(self.backbone.encoder):  # type: ignore[arg-type]
            h_mix = stage(h_mix)
            h_drop = h_mix if shared else stage(h_drop)
            if k in self.mix_stages:
                h_mix = self._mix(h_mix, b)
                shared = False
            if k in self.dropout_stages and self.dropout_placement == "cascade":
                h_drop = self.channel_dropout(h_drop)
                shared = False
            mixed.append(h_mix)
            to_decoder = k in self.dropout_stages and self.dropout_placement == "decoder"
            dropped.append(self.channel_dropout(h_drop) if to_decoder else h_drop)
        mix_logits = self.backbone.decode_stages(mixed)  # type: ignore[operator]
        drop_logits = self.backbone.decode_stages(dropped)  # type: ignore[operator]
        return STLUOutput(mix_logits[:b], mix_logits[b:], drop_logits[:b], drop_logits[b:])
