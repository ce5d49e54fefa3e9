"""URPC, CCT, ICT and MC-Net (the review's methods, part 2) and the baselines pinned to one reference each, against
the reference code's formulas written out here in float64 (HiLab-git/SSL4MIS train_uncertainty_rectified_pyramid_
consistency_3D.py, train_cross_consistency_training_2D.py and networks/unet.py, train_interpolation_consistency_
training_3D.py, train_mean_teacher_3D.py, train_cross_pseudo_supervision_3D.py; ycwu1997/MC-Net train_mcnet_3d.py with
mcnet3d_v1); schedules at several iterations and the method files as parsed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from monai_stlu.engines import CCTMethod, ICTMethod, URPCMethod
from monai_stlu.handlers import RampUpHandler
from monai_stlu.networks.layers import ActiveDropout, AttentionDropout, FeatureNoise
from monai_stlu.networks.nets import CCTVNet, MCNetPlus, PyramidVNet
from monai_stlu.optimizers import PolyDecay
from test_review_methods import DTYPES, label_volume, parsed, reference_weight

n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731


def ssl4mis_sup(logits, label, b):
    """0.5 (CE + DiceLoss(2)) of SSL4MIS in float64: squared Dice of each class (smooth 1e-5), averaged."""
    z = logits[:b].double()
    p = torch.softmax(z, 1)
    y = F.one_hot(label[:b, 0], z.shape[1]).movedim(-1, 1).double()
    dice = sum(1 - (2 * (p[:, c] * y[:, c]).sum() + 1e-5) / ((p[:, c] ** 2).sum() + (y[:, c] ** 2).sum() + 1e-5)
               for c in range(z.shape[1])) / z.shape[1]
    return 0.5 * (F.cross_entropy(z, label[:b, 0]) + dice)


# --- perturbations and networks --------------------------------------------------------------------------------------
def test_cct_perturbations_are_ssl4mis_ones():
    x = torch.rand(3, 4, 5, 6, 7) + 0.1
    torch.manual_seed(0)
    noisy = FeatureNoise(0.3)(x)
    torch.manual_seed(0)
    n = (torch.rand(x.shape[1:]) * 2 - 1) * 0.3  # one noise vector for every sample (x.shape[1:])
    torch.testing.assert_close(noisy, x + x * n.unsqueeze(0))
    drop = ActiveDropout(0.3).eval()  # F.dropout(x, p): on even in eval mode
    assert (drop(x) == 0).float().mean().item() == pytest.approx(0.3, abs=0.05)
    torch.manual_seed(1)
    out = AttentionDropout(0.7, 0.9)(x)
    torch.manual_seed(1)
    t = 0.7 + 0.2 * float(torch.rand(()))
    att = x.mean(1, keepdim=True)
    for i in range(3):  # the max is per sample, the threshold draw shared
        keep = (att[i] < att[i].max() * t).float()
        torch.testing.assert_close(out[i], x[i] * keep)
    assert 0.7 <= t <= 0.9


def test_cct_network_has_three_perturbed_auxiliary_decoders():
    torch.manual_seed(0)
    net = CCTVNet(n_filters=4)
    assert len(net.aux_decoders) == 3 and n_params(net.aux_decoders[0]) == n_params(net.backbone.decoder)
    x = torch.randn(2, 1, 16, 16, 16)
    outs = net.forward_all(x)
    assert len(outs) == 4 and all(o.shape == (2, 2, 16, 16, 16) for o in outs)
    net.eval()
    torch.testing.assert_close(net(x), net.backbone(x))
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_pyramid_levels_are_upsampled_stage_heads():
    torch.manual_seed(0)
    net = PyramidVNet(n_filters=4).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    outs = net.forward_all(x)
    torch.testing.assert_close(outs[0], net(x))
    feats = net.backbone.encode(x)
    h, stages = feats[-1], []
    for j, stage in enumerate(net.backbone.decoder):
        h = stage(h, feats[3 - j])
        stages.append(h)
    for level, scale in ((1, 2), (2, 4), (3, 8)):  # dsv2 x2, dsv3 x4, dsv4 x8 (trilinear, align_corners False)
        head = net.aux_heads[3 - level]
        want = F.interpolate(head(stages[3 - level]), scale_factor=scale, mode="trilinear", align_corners=False)
        torch.testing.assert_close(outs[level], want)
    assert [d.p for d in net.stage_dropout] == [0.5, 0.3, 0.2, 0.1]


def test_mcnet_two_decoders_has_mcnet3d_v1s_parameter_count():
    # counted from ycwu1997/MC-Net networks/VNet.py: MCNet3d_v1(n_channels=1, n_classes=2, normalization='batchnorm',
    # has_dropout=True) and MCNet3d_v2 (MC-Net+)
    assert n_params(MCNetPlus(upsample_modes=("deconv", "trilinear"))) == 12_347_716
    assert n_params(MCNetPlus()) == 15_246_566


# --- losses against the references ----------------------------------------------------------------------------------
@DTYPES
def test_urpc_iteration_loss_matches_the_reference(dtype, rel):
    torch.manual_seed(0)
    net = PyramidVNet(n_filters=4).to(dtype).eval()
    xl, xu, lab = torch.randn(2, 1, 16, 16, 16, dtype=dtype), torch.randn(2, 1, 16, 16, 16, dtype=dtype), label_volume()
    method = URPCMethod()
    method.consistency_weight = 0.3
    out = method(net, xl, lab, xu)
    with torch.no_grad():
        outs = [o.double() for o in net.forward_all(torch.cat([xl, xu]))]
    sup = sum(ssl4mis_sup(o, lab, 2) for o in outs) / 4  # (sum of 4 CE + 4 Dice) / 8
    soft = [torch.softmax(o, 1) for o in outs]
    preds = sum(soft) / 4
    kl = torch.nn.KLDivLoss(reduction="none")
    cons = 0
    for s in soft:
        var = torch.sum(kl(torch.log(s[2:]), preds[2:]), dim=1, keepdim=True)
        ev = torch.exp(-var)
        cons = cons + torch.mean((preds[2:] - s[2:]) ** 2 * ev) / (torch.mean(ev) + 1e-8) + torch.mean(var)
    want = sup + 0.3 * cons / 4
    assert out["loss"].dtype == dtype and out["loss"].item() == pytest.approx(want.item(), rel=rel)


@DTYPES
def test_cct_iteration_loss_matches_the_reference(dtype, rel):
    torch.manual_seed(0)
    net = CCTVNet(n_filters=4).to(dtype).eval()
    xl, xu, lab = torch.randn(2, 1, 16, 16, 16, dtype=dtype), torch.randn(2, 1, 16, 16, 16, dtype=dtype), label_volume()
    method = CCTMethod()
    method.consistency_weight = 0.2
    torch.manual_seed(4)
    out = method(net, xl, lab, xu)
    torch.manual_seed(4)  # the same perturbation draws
    with torch.no_grad():
        outs = [o.double() for o in net.forward_all(torch.cat([xl, xu]))]
    sup = sum(ssl4mis_sup(o, lab, 2) for o in outs) / 4
    soft = [torch.softmax(o[2:], 1) for o in outs]
    cons = sum(torch.mean((soft[0] - s) ** 2) for s in soft[1:]) / 3
    assert out["loss"].dtype == dtype and out["loss"].item() == pytest.approx((sup + 0.2 * cons).item(), rel=rel)


class _Trainer(Engine):
    def __init__(self, network):
        super().__init__(lambda e, b: None)
        self.network = network


@DTYPES
def test_ict_iteration_loss_matches_the_reference(dtype, rel):
    torch.manual_seed(0)
    from monai_stlu.networks.nets import VNet

    net = VNet(n_filters=4, dropout=True).to(dtype).eval()
    method = ICTMethod(consistency_weight=0.25)
    method.attach(_Trainer(net))
    method.teacher.eval()
    teacher = copy.deepcopy(method.teacher).double()
    xl, xu, lab = torch.randn(2, 1, 16, 16, 16, dtype=dtype), torch.randn(2, 1, 16, 16, 16, dtype=dtype), label_volume()
    torch.manual_seed(7)
    out = method(net, xl, lab, xu)
    torch.manual_seed(7)
    lam = torch.distributions.Beta(0.2, 0.2).sample((1, 1, 1, 1, 1)).double()  # np.random.beta(0.2, 0.2, (1, ...))
    mixed = xu[0:1].double() * (1 - lam) + xu[1:2].double() * lam
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        outputs = net64(torch.cat([xl.double(), mixed]))
        target = torch.softmax(teacher(xu[0:1].double()), 1) * (1 - lam) + torch.softmax(teacher(xu[1:2].double()), 1) * lam
    sup = ssl4mis_sup(outputs, lab, 2)
    cons = torch.mean((torch.softmax(outputs[2:], 1) - target) ** 2)
    assert out["loss"].dtype == dtype and out["loss"].item() == pytest.approx((sup + 0.25 * cons).item(), rel=rel)
    assert out["pred"].shape[0] == 2


# --- schedules and files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,weight,rampup,lr,budget",
    [("ict", 0.1, 200, 0.01, 30000), ("urpc", 0.1, 400, 0.1, 60000), ("cct", 0.1, 200, 0.01, 30000),
     ("mcnet", 1.0, 40, 0.01, 15000), ("mean_teacher", 0.1, 200, 0.01, 30000), ("cps", 0.1, 200, 0.01, 30000)],
)
def test_method_files_follow_their_one_reference(method, weight, rampup, lr, budget):
    """At the reference's own budget, the method file's ramp, LR and losses are the reference's."""
    cfg = parsed("train.json", f"methods/{method}.json", max_iterations=budget)
    ramp = RampUpHandler(None, "consistency_weight", cfg.get_parsed_content("unsup_weight"), 0.0,
                         cfg.get_parsed_content("ramp_length"), cfg.get_parsed_content("ramp_iterations"))
    for it in (0, 150, 6000, 14999, 29999, 30000, 59999, 60000):
        assert ramp.value(it) == pytest.approx(reference_weight(weight, rampup, it), rel=1e-12), it
    assert cfg.get_parsed_content("learning_rate") == lr
    factor = cfg.get_parsed_content("lr_factor")
    if method == "mcnet":
        assert factor is None  # MC-Net trains at a constant 0.01
        net = cfg.get_parsed_content("network_def")
        assert len(net.extra_decoders) == 1 and net.extra_decoders[0][0].up[0].mode == "trilinear"
        m = cfg.get_parsed_content("method")
        assert m.lambda_sup == 0.5 and m.temperature == 0.1
    else:
        assert isinstance(factor, PolyDecay)
        sup = cfg.get_parsed_content("method").sup_loss
        assert sup.dice.include_background if hasattr(sup, "dice") else True
    if method in ("ict", "mean_teacher"):
        assert cfg.get_parsed_content("method").ema_decay == 0.99
    if method == "ict":
        assert cfg.get_parsed_content("method").alpha == 0.2


def test_pinned_mean_teacher_uses_ssl4mis_dice_over_every_class():
    cfg = parsed("train.json", "methods/mean_teacher.json")
    sup = cfg.get_parsed_content("method").sup_loss
    torch.manual_seed(0)
    logits, lab = torch.randn(2, 2, 8, 8, 8), label_volume(2, (8, 8, 8))
    assert sup(logits, lab).item() == pytest.approx(ssl4mis_sup(logits, lab, 2).item(), rel=1e-5)
    assert np.isclose(reference_weight(0.1, 200, 6000), 0.1 * np.exp(-5 * (1 - 40 / 200) ** 2))


@pytest.mark.parametrize("budget, expected", [(1000, (100, 10, 1000 / 6, 133)), (2500, (250, 25, 2500 / 6, 333)),
                                             (3000, (300, 30, 500, 400))])
def test_cpu_protocol_scales_every_schedule_with_its_budget(budget, expected):
    """The CPU protocol's schedules and validations follow its budget (BCP's reference: 15,000 iterations after 2,000
    of pre-training): at 1,000 iterations a ramp step of 10, an LR step of 166.7, a validation every 100; at 2,500
    (the protocol's own) and 3,000 the same fractions."""
    cfg = parsed("train.json", "cpu_protocol.json", "methods/bcp.json", max_iterations=budget)
    keys = ("val_interval", "ramp_iterations", "lr_step", "bcp_pretrain_iterations")
    assert tuple(cfg.get_parsed_content(k) for k in keys) == pytest.approx(expected)
