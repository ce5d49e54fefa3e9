"""The paper's analyses as switches: mixing strategy, dropout placement and pseudo-supervision direction."""

from __future__ import annotations

import pytest
import torch

from monai_stlu.engines import STLUMethod
from monai_stlu.losses import SegDiceLoss, SymmetricPseudoLabelLoss
from monai_stlu.networks import STLUNet


def test_fixed_lambda_mixing_matches_a_manual_two_stream_pass():
    torch.manual_seed(0)
    net = STLUNet(n_filters=2, mix_strategy="fixed", mix_lambda=0.7, dropout_prob=0.0).eval()
    xl, xu = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 1, 16, 16, 16)
    out = net(xl, xu)
    h, feats = torch.cat([xl, xu]), []
    for stage in net.backbone.encoder:
        h = stage(h)
        h = torch.cat([0.7 * h[:1] + 0.3 * h[1:], 0.7 * h[1:] + 0.3 * h[:1]])
        feats.append(h)
    want = net.backbone.decode(feats)
    torch.testing.assert_close(out.mix_labeled, want[:1])
    torch.testing.assert_close(out.mix_unlabeled, want[1:])


@pytest.mark.parametrize("placement", ["cascade", "decoder"])
def test_dropout_placement(placement):
    torch.manual_seed(0)
    net = STLUNet(n_filters=2, mix_stages=[], dropout_stages=[0], dropout_prob=1.0, dropout_placement=placement).eval()
    net.channel_dropout.train()  # p = 1: the dropped stage-0 features are all zero
    x = torch.randn(2, 1, 16, 16, 16)
    out = net(x[:1], x[1:])
    plain = net.backbone.encode(x)
    zero0 = torch.zeros_like(plain[0])
    if placement == "decoder":  # the encoder runs undisturbed; only the decoder's stage-0 input is dropped
        feats = [zero0, *plain[1:]]
    else:  # the zeros cascade through every deeper stage
        feats, h = [zero0], zero0
        for stage in list(net.backbone.encoder)[1:]:
            h = stage(h)
            feats.append(h)
    want = net.backbone.decode(feats)
    torch.testing.assert_close(torch.cat([out.drop_labeled, out.drop_unlabeled]), want)


@pytest.mark.parametrize("mode", ["symmetric", "mix_only", "drop_only"])
def test_pseudo_supervision_direction(mode):
    torch.manual_seed(0)
    net = STLUNet(n_filters=2, dropout_prob=0.0).eval()
    xl, xu = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 1, 16, 16, 16)
    y = (torch.rand(1, 1, 16, 16, 16) > 0.5).long()
    method = STLUMethod(gamma=1.0, pseudo_supervision=mode)
    result = method(net, xl, y, xu)
    o = net(xl, xu)
    dice, pl = SegDiceLoss(), SymmetricPseudoLabelLoss.pseudo_label
    want = {
        "symmetric": dice(o.drop_unlabeled, pl(o.mix_unlabeled)) + dice(o.mix_unlabeled, pl(o.drop_unlabeled)),
        "mix_only": dice(o.mix_unlabeled, pl(o.drop_unlabeled)),
        "drop_only": dice(o.drop_unlabeled, pl(o.mix_unlabeled)),
    }[mode]
    assert result["unsup"] == pytest.approx(float(want), rel=1e-5)


def test_bad_switch_values_are_named():
    with pytest.raises(ValueError, match="mix_strategy"):
        STLUNet(n_filters=2, mix_strategy="mixup")
    with pytest.raises(ValueError, match="dropout_placement"):
        STLUNet(n_filters=2, dropout_placement="head")
    with pytest.raises(ValueError, match="pseudo_supervision"):
        STLUMethod(pseudo_supervision="both")


def test_confidence_gated_pseudo_labels_leave_unconfident_voxels_out():
    import numpy as np

    torch.manual_seed(1)
    a, b = torch.randn(2, 2, 6, 5, 4, dtype=torch.float64), torch.randn(2, 2, 6, 5, 4, dtype=torch.float64) * 2
    plain = SymmetricPseudoLabelLoss()
    torch.testing.assert_close(SymmetricPseudoLabelLoss(threshold=0.0)(a, b), plain(a, b))  # every voxel counts

    def gated64(learner, teacher, tau):  # squared foreground Dice over the batch, confident voxels only (float64)
        p = torch.softmax(learner, 1)[:, 1].numpy()
        t = torch.softmax(teacher, 1).numpy()
        y, m = (t[:, 1] > t[:, 0]).astype(float), (t.max(1) >= tau).astype(float)
        return 1 - (2 * (p * y * m).sum() + 1e-5) / ((p * p * m).sum() + (y * m).sum() + 1e-5)

    loss = SymmetricPseudoLabelLoss(threshold=0.8)
    want = gated64(a, b, 0.8) + gated64(b, a, 0.8)
    assert float(loss(a, b)) == pytest.approx(want, rel=1e-5)
    assert abs(want - float(plain(a, b))) > 1e-3 and np.isfinite(want)
    method = STLUMethod(gamma=1.0, pseudo_threshold=0.8)
    assert method.unsup_loss.threshold == 0.8
    with pytest.raises(TypeError, match="MONAI DiceLoss"):
        SymmetricPseudoLabelLoss(loss=lambda x, y: x.mean(), threshold=0.5)


@pytest.mark.parametrize("given, expected", [("false", False), ("true", True), (False, False), (1, True)])
def test_detach_weight_from_the_command_line_reads_by_meaning(given, expected):
    # `python -m monai.bundle run ... --detach_weight false` hands the network the string "false"
    assert STLUNet(n_filters=2, detach_weight=given).feature_mix.detach_weight is expected
    with pytest.raises(ValueError, match="maybe"):
        STLUNet(n_filters=2, detach_weight="maybe")
