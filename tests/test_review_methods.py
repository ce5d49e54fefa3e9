"""DTC, SASSNet, SS-Net and DAN (the review's methods, part 1) against their reference code's formulas, written out
here independently in float64 from the reference scripts (HiLab-git/DTC train_la_dtc.py, kleinzcy/SASSnet
train_gan_sdfloss.py, ycwu1997/SS-Net train_ss_3d.py, HiLab-git/SSL4MIS train_adversarial_network_3D.py); parameter
counts are the reference networks' (counted by instantiating the reference classes); schedules at several
iterations; the method files' settings as parsed."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.bundle import ConfigParser

from conftest import REPO_ROOT
from monai_stlu.engines import DANMethod, DTCMethod, SASSNetMethod, SSNetMethod
from monai_stlu.handlers import RampUpHandler
from monai_stlu.losses import SDFLoss, VATLoss, normalized_sdf
from monai_stlu.networks.nets import FCDiscriminator, PrototypeVNet, SDFVNet, VNet
from monai_stlu.optimizers import PolyDecay, StepDecay

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"
n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731


def label_volume(b=2, size=(16, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(b, 1, *size, dtype=torch.long)
    for i in range(b):
        lo = torch.randint(2, 6, (3,), generator=g)
        lab[i, 0, lo[0]:lo[0] + 7, lo[1]:lo[1] + 6, lo[2]:lo[2] + 8] = 1
    return lab


def brute_sdf(mask: np.ndarray) -> np.ndarray:
    """DTC's compute_sdf for one mask by brute force: exact Euclidean distances between every pair of voxels, the
    inner boundary as foreground voxels with a 6-neighbour in the background (edges reflect)."""
    pos = mask.astype(bool)
    coords = np.argwhere(np.ones_like(pos)).astype(np.float64)
    fg, bg = coords[pos.ravel()], coords[~pos.ravel()]
    d_in = np.zeros(pos.shape)
    d_out = np.zeros(pos.shape)
    d_in[pos] = np.sqrt(((fg[:, None, :] - bg[None, :, :]) ** 2).sum(-1)).min(1)
    d_out[~pos] = np.sqrt(((bg[:, None, :] - fg[None, :, :]) ** 2).sum(-1)).min(1)
    sdf = (d_out - d_out.min()) / (d_out.max() - d_out.min()) - (d_in - d_in.min()) / (d_in.max() - d_in.min())
    padded = np.pad(pos, 1, mode="edge")
    boundary = np.zeros_like(pos)
    for axis, shift in itertools.product(range(3), (-1, 1)):
        nb = np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
        boundary |= pos & ~nb
    sdf[boundary] = 0.0
    return sdf


def parsed(*files: str, **overrides):
    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p.update({"bundle_root": str(REPO_ROOT / "bundles" / "stlu_la"), **overrides})
    return p


# --- shared pieces ---------------------------------------------------------------------------------------------------
def test_normalized_sdf_matches_dtcs_compute_sdf_by_brute_force():
    lab = label_volume(1, (10, 9, 8))[0, 0].numpy()
    lab[0, 0, 0] = 1  # a second component touching the volume's corner
    np.testing.assert_allclose(normalized_sdf(lab == 1), brute_sdf(lab == 1), atol=1e-12)
    assert normalized_sdf(np.zeros((4, 4, 4), bool)).sum() == 0  # an empty label: zeros, as the reference
    assert (normalized_sdf(np.ones((4, 4, 4), bool)) == -1).all()  # no background: defined (the reference: NaN)
    target = SDFLoss.target(label_volume(2, (10, 9, 8)), 1)
    assert target.shape == (2, 1, 10, 9, 8) and target.dtype == torch.float32


def test_networks_have_the_reference_parameter_counts():
    # counted from the reference classes: DTC/SASSNet vnet_sdf.VNet(n_channels=1, n_classes=1, normalization=
    # 'batchnorm', has_dropout=True); SASSNet FC3DDiscriminator(num_classes=1); SSL4MIS FC3DDiscriminator(
    # num_classes=2); SS-Net VNet(n_channels=1, n_classes=2, normalization='batchnorm', has_dropout=True)
    assert n_params(SDFVNet()) == 9_448_866
    assert n_params(FCDiscriminator(map_channels=1)) == 11_020_290
    assert n_params(FCDiscriminator(map_channels=2)) == 11_024_386
    assert n_params(PrototypeVNet()) == 9_457_318
    assert n_params(PrototypeVNet()) - n_params(VNet()) == 8_452  # SS-Net's heads


def test_sdf_vnet_is_a_two_class_segmentation_network_with_one_logit():
    torch.manual_seed(0)
    net = SDFVNet(n_filters=4).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    logits = net(x)
    z = net.backbone(x)
    assert logits.shape == (2, 2, 16, 16, 16) and z.shape == (2, 1, 16, 16, 16)
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1:], torch.sigmoid(z))
    seg, sdf = net.forward_sdf(x)
    torch.testing.assert_close(seg, logits)
    assert sdf.shape == (2, 1, 16, 16, 16) and sdf.abs().max() <= 1
    multi = SDFVNet(out_channels=3, n_filters=4).eval()
    seg, sdf = multi.forward_sdf(x)
    assert seg.shape[1] == 3 and sdf.shape[1] == 2  # one level set per foreground class
    ts = torch.jit.script(net)
    torch.testing.assert_close(ts(x), logits)


def test_discriminator_global_average_is_the_references_fixed_pooling():
    torch.manual_seed(0)
    d = FCDiscriminator(map_channels=1, ndf=4).eval()
    m, x = torch.randn(2, 1, 112, 112, 80), torch.randn(2, 1, 112, 112, 80)
    h = d.act(d.conv0(m) + d.conv1(x))
    for conv in (d.conv2, d.conv3, d.conv4):
        h = d.act(conv(h))
    assert h.shape[2:] == (7, 7, 5)
    want = d.classifier(torch.nn.AvgPool3d((7, 7, 5))(h).view(2, -1))  # SASSNet's pooling at its patch size
    torch.testing.assert_close(d(m, x), want)


# --- DTC -------------------------------------------------------------------------------------------------------------
def dtc_reference_loss(z, sdf_pred, label, b, w, beta=0.3, k=1500.0):
    """train_la_dtc.py in float64: outputs_soft = sigmoid(outputs); dice_loss(outputs_soft[:lbs, 0], label == 1);
    mse(outputs_tanh[:lbs, 0], compute_sdf(label)); consistency on every case."""
    z, s = z.double(), sdf_pred.double()
    p = torch.sigmoid(z[:, 0])
    y = (label[:b, 0] == 1).double()
    inter, z_sum, y_sum = (p[:b] * y).sum(), (p[:b] ** 2).sum(), (y * y).sum()
    dice = 1 - (2 * inter + 1e-5) / (z_sum + y_sum + 1e-5)
    gt = torch.from_numpy(np.stack([brute_sdf(label[i, 0].numpy() == 1) for i in range(b)]))
    sdf_loss = ((s[:b, 0] - gt) ** 2).mean()
    cons = ((torch.sigmoid(-k * s[:, 0]) - p) ** 2).mean()
    return dice + beta * sdf_loss + w * cons


# float32: the method as trained, against the float64 formula; float64: the method keeps float64 (its losses widen
# bfloat16/float16 only). Not to float64 rounding where MONAI's DiceLoss is a term: its one-hot target is float32 and
# its squared form takes sum(y^2) as a float32 norm squared (relative 1e-8)
DTYPES = pytest.mark.parametrize(
    "dtype,rel", [(torch.float32, 1e-5), (torch.float64, 1e-7)], ids=["float32", "float64"]
)


@DTYPES
def test_dtc_iteration_loss_matches_the_reference_formula(dtype, rel):
    torch.manual_seed(0)
    net = SDFVNet(n_filters=4).to(dtype).eval()  # eval: no dropout draw, so the float64 pass sees the same network
    xl, xu, lab = torch.randn(2, 1, 16, 16, 16, dtype=dtype), torch.randn(2, 1, 16, 16, 16, dtype=dtype), label_volume()
    method = DTCMethod()
    method.consistency_weight = 0.37
    out = method(net, xl, lab, xu)
    x = torch.cat([xl, xu])
    with torch.no_grad():
        z = net.backbone(x)
        h = net.backbone.decode_features(net.backbone.encode(x))
        sdf = torch.tanh(net.sdf_head(h))
    want = dtc_reference_loss(z, sdf, lab, 2, 0.37)
    assert out["loss"].dtype == dtype and out["loss"].item() == pytest.approx(want.item(), rel=rel)
    out["loss"].backward()
    assert net.sdf_head.weight.grad.abs().sum() > 0 and net.backbone.head.weight.grad.abs().sum() > 0


# --- adversarial: SASSNet and DAN ---------------------------------------------------------------------------------
class _Trainer(Engine):
    """The trainer attributes the adversarial methods read when attached (a real ignite engine)."""

    def __init__(self, network):
        super().__init__(lambda e, b: None)
        self.network = network
        self.amp, self.amp_dtype = False, None
        self.state.device = torch.device("cpu")
        from monai.engines.utils import IterationEvents

        self.register_events(*IterationEvents)


@pytest.mark.parametrize("kind", ["sassnet", "dan"])
def test_adversarial_generator_loss_and_discriminator_step_match_the_reference(kind):
    torch.manual_seed(1)
    net = (SDFVNet(n_filters=4) if kind == "sassnet" else VNet(n_filters=4, dropout=True)).eval()
    method = SASSNetMethod(ndf=8) if kind == "sassnet" else DANMethod(ndf=8)
    engine = _Trainer(net)
    method.attach(engine)
    method.consistency_weight = 0.05
    xl, xu, lab = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 16), label_volume()
    x = torch.cat([xl, xu])
    d_before = {k: v.clone() for k, v in method.discriminator.state_dict().items()}
    out = method(net, xl, lab, xu)
    # the reference's generator loss, in float64, D in eval mode (no dropout)
    d64 = FCDiscriminator(map_channels=method.discriminator.conv0.in_channels, ndf=8).double().eval()
    d64.load_state_dict(d_before)
    with torch.no_grad():
        if kind == "sassnet":
            z = net.backbone(x)
            sdf = torch.tanh(net.sdf_head(net.backbone.decode_features(net.backbone.encode(x))))
            sup = dtc_reference_loss(z, sdf, lab, 2, 0.0)
            d_map = sdf
        else:
            logits = net(x).double()
            p = torch.softmax(logits, 1)
            y = F.one_hot(lab[:, 0], 2).movedim(-1, 1).double()
            dice = sum(1 - (2 * (p[:2, c] * y[:, c]).sum() + 1e-5) / ((p[:2, c] ** 2).sum() + (y[:, c] ** 2).sum() + 1e-5)
                       for c in range(2)) / 2  # SSL4MIS DiceLoss(2): every class, squared, 1e-5
            sup = 0.5 * (dice + F.cross_entropy(logits[:2], lab[:, 0]))
            d_map = p
        adv = F.cross_entropy(d64(d_map[2:].double(), xu.double()), torch.tensor([1, 1]))
    assert out["loss"].item() == pytest.approx((sup + 0.05 * adv).item(), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in method.discriminator.parameters())  # the segmentation step leaves D alone
    # D's step after the optimizer step: the segmenter in eval mode, all four cases, targets [1, 1, 0, 0]
    net_before = {k: v.clone() for k, v in net.state_dict().items()}
    d64.train()
    torch.manual_seed(5)
    with torch.no_grad():
        maps = method.segment(net, x)["map"]
    method.discriminator.train()
    torch.manual_seed(5)
    want_d = F.cross_entropy(method.discriminator(maps, x), torch.tensor([1, 1, 0, 0]))
    torch.manual_seed(5)
    engine.state.output = {}
    method.discriminator_step(engine)
    assert engine.state.output["d_loss"].item() == pytest.approx(want_d.item(), rel=1e-5)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in net_before.items())  # eval mode: no BN update
    changed = [k for k, v in method.discriminator.state_dict().items() if not torch.equal(v, d_before[k])]
    assert "conv0.weight" in changed and "classifier.weight" in changed
    # Adam 1e-4, betas (0.9, 0.99), and its state travels in the method's state dict
    group = method.d_optimizer.param_groups[0]
    assert group["lr"] == 1e-4 and tuple(group["betas"]) == (0.9, 0.99)
    state = method.state_dict()
    fresh = SASSNetMethod(ndf=8) if kind == "sassnet" else DANMethod(ndf=8)
    fresh.load_state_dict(state)
    moment = method.d_optimizer.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(fresh.d_optimizer.state_dict()["state"][0]["exp_avg"], moment)


# --- SS-Net ------------------------------------------------------------------------------------------------------------
def ssnet_separation_reference(net, features, labels, memory, n_classes=2):
    """contrastive_class_to_class_learned_memory, float64, line by line (the selectors of a float64 ``net`` are used
    as they are, so gradients reach them; a float32 net's are copied to float64)."""

    def as_double(module):
        return module if next(module.parameters()).dtype == torch.float64 else copy.deepcopy(module).double()

    loss = 0.0
    for c in range(n_classes):
        fc = features[labels == c]
        mc = memory[c]
        if mc is not None and fc.shape[0] > 1 and mc.shape[0] > 1:
            mn = mc / mc.norm(dim=1, keepdim=True).clamp_min(1e-12)
            fn = fc / fc.norm(dim=1, keepdim=True).clamp_min(1e-12)
            dist = 1 - fn @ mn.T
            wf = torch.sigmoid(as_double(net.selectors[c])(fc.detach()))
            dist = dist * ((wf.shape[0] / wf.sum(dim=0)) * wf).repeat(1, dist.shape[1])
            wm = torch.sigmoid(as_double(net.memory_selectors[c])(mc)).permute(1, 0)
            dist = dist * ((wm.shape[0] / wm.sum(dim=0)) * wm).repeat(dist.shape[0], 1)
            loss = loss + dist.mean()
    return loss / n_classes


def test_ssnet_memory_keeps_the_lowest_ranked_correct_foreground_voxels():
    torch.manual_seed(0)
    net = PrototypeVNet(n_filters=4).train()
    method = SSNetMethod(elements_per_class=5)
    feats = torch.randn(40, 4)
    labels = torch.tensor([1] * 30 + [0] * 10)
    method.update_memory(net, feats, labels)
    net.projection_head.eval()
    with torch.no_grad():
        proj = net.projection_head(feats[:30])
        net.selectors[1].train()
        rank = torch.sigmoid(net.selectors[1](proj))[:, 0]
    keep = torch.sort(rank).indices[:5]  # the reference: ascending sort, the first elements_per_class
    torch.testing.assert_close(method.memory[1], proj[keep])
    assert method.memory[0].shape == (5, 32)  # any class given: 32-wide projections, at most elements_per_class
    method.update_memory(net, feats[:3], torch.tensor([1, 1, 1]))
    assert method.memory[1].shape == (3, 32) and method.memory[0].shape == (5, 32)  # no class-0 voxel: kept


@DTYPES
def test_ssnet_separation_matches_the_reference_loss(dtype, rel):
    torch.manual_seed(0)
    net = PrototypeVNet(n_filters=4).to(dtype).eval()
    method = SSNetMethod()
    memory = [None, torch.randn(7, 32, dtype=dtype)]
    method.memory = list(memory)
    feats = torch.randn(50, 32, dtype=dtype)
    labels = (torch.rand(50) > 0.4).long()
    got = method.separation(net, feats, labels)
    want = ssnet_separation_reference(net, feats.double(), labels, [None, memory[1].double()])
    assert got.dtype == dtype and got.item() == pytest.approx(want.item(), rel=rel)
    method.memory = [torch.randn(3, 32, dtype=dtype), memory[1]]  # with a background memory both classes count
    want = ssnet_separation_reference(net, feats.double(), labels, [method.memory[0].double(), memory[1].double()])
    assert method.separation(net, feats, labels).item() == pytest.approx(want.item(), rel=rel)


def test_ssnet_separation_gradients_match_the_reference_matrix_in_float64():
    """The separation is computed without the (rows x memory) matrix: the gradients to the features, the class
    selector and the memory selector equal those of the reference's matrix form, in float64."""
    torch.manual_seed(0)
    net = PrototypeVNet(n_filters=4).train()
    method = SSNetMethod()
    method.memory = [torch.randn(5, 32), torch.randn(9, 32)]
    feats = torch.randn(200, 32, requires_grad=True)
    labels = (torch.rand(200) > 0.3).long()
    method.separation(net, feats, labels).backward()
    net64 = copy.deepcopy(net).double()
    net64.zero_grad()
    feats64 = feats.detach().double().requires_grad_(True)
    ssnet_separation_reference(net64, feats64, labels, [m.double() for m in method.memory]).backward()
    torch.testing.assert_close(feats.grad.double(), feats64.grad, rtol=1e-4, atol=1e-9)
    for c in range(2):
        w, w64 = net.selectors[c][0].weight.grad, net64.selectors[c][0].weight.grad
        assert w is not None and w.abs().max() > 1e-6  # the class selector learns from the separation
        torch.testing.assert_close(w.double(), w64, rtol=1e-4, atol=1e-7)
        m = net.memory_selectors[c][0].weight.grad  # in the graph (DDP), its gradient ~0 as the reference's
        assert m is not None
        torch.testing.assert_close(m.double(), net64.memory_selectors[c][0].weight.grad, rtol=0, atol=1e-6)


def test_vat_matches_the_reference_power_iteration_in_float64():
    torch.manual_seed(0)
    net = VNet(n_filters=4).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    d0 = torch.rand(x.shape) - 0.5
    got = VATLoss(xi=10.0, epsilon=10.0)(net, x, direction=d0.clone())
    net64 = VNet(n_filters=4).double().eval()
    net64.load_state_dict(net.state_dict())
    x64 = x.double()

    def dice(p, t):  # Binary_dice_loss on the whole two-channel tensors
        return 1 - (2 * (p * t).sum() + 1e-8) / (p.sum() + t.sum() + 1e-8)

    def unit(d):
        return d / (d.view(d.shape[0], -1).norm(dim=1).view(-1, 1, 1, 1, 1) + 1e-8)

    with torch.no_grad():
        pred = torch.softmax(net64(x64), 1)
    d = unit(d0.double()).requires_grad_(True)
    dice(torch.softmax(net64(x64 + 10.0 * d), 1), pred).backward()
    d = unit(d.grad)
    want = dice(torch.softmax(net64(x64 + 10.0 * d), 1), pred)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    got64 = VATLoss(xi=10.0, epsilon=10.0)(net64, x64, direction=d0.double())  # float64 stays float64 throughout
    assert got64.dtype == torch.float64 and got64.item() == pytest.approx(want.item(), rel=1e-10)
    assert all(p.grad is None for p in net.parameters())  # the search leaves no gradient on the network


def test_vat_freezes_batch_norm_statistics_only_for_the_perturbed_passes():
    torch.manual_seed(0)
    net = VNet(n_filters=4).train()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    before = bn.num_batches_tracked.item()
    VATLoss()(net, torch.randn(2, 1, 16, 16, 16))
    assert bn.num_batches_tracked.item() == before + 1  # the clean pass (training mode) counts, the others do not
    assert bn.track_running_stats


@DTYPES
def test_ssnet_iteration_loss_matches_the_reference_composition(dtype, rel):
    torch.manual_seed(0)
    net = PrototypeVNet(n_filters=4).to(dtype).eval()
    xl, xu, lab = torch.randn(2, 1, 16, 16, 16, dtype=dtype), torch.randn(2, 1, 16, 16, 16, dtype=dtype), label_volume()
    method = SSNetMethod(elements_per_class=4)
    method.consistency_weight = 0.6
    torch.manual_seed(3)
    out = method(net, xl, lab, xu)
    x = torch.cat([xl, xu])
    with torch.no_grad():
        logits, emb = net.forward_embedding(x)
    p = torch.softmax(logits.double(), 1)
    y = (lab[:, 0] == 1).double()
    dice = 1 - (2 * (p[:2, 1] * y).sum() + 1e-8) / (p[:2, 1].sum() + y.sum() + 1e-8)
    feat_l = emb[:2].double().permute(0, 2, 3, 4, 1).reshape(-1, 4)
    feat_u = emb[2:].double().permute(0, 2, 3, 4, 1).reshape(-1, 4)
    net64 = copy.deepcopy(net).double()
    heads = lambda f: net64.prediction_head(net64.projection_head(f))  # noqa: E731
    memory = [None if m is None else m.double() for m in method.memory]
    sep = ssnet_separation_reference(net, heads(feat_l), lab[:, 0].reshape(-1), memory) + ssnet_separation_reference(
        net, heads(feat_u), p[2:].argmax(1).reshape(-1), memory)
    torch.manual_seed(3)
    vat = VATLoss()(net, x)
    want = dice + 0.6 * (vat.double() + 0.1 * sep)
    assert out["loss"].dtype == dtype and out["loss"].item() == pytest.approx(want.item(), rel=10 * rel)


# --- schedules and method files -----------------------------------------------------------------------------------
def reference_weight(consistency, rampup, iter_num):
    """get_current_consistency_weight(iter_num // 150) with ramps.sigmoid_rampup."""
    current = np.clip(iter_num // 150, 0.0, rampup)
    return consistency * float(np.exp(-5.0 * (1.0 - current / rampup) ** 2))


@pytest.mark.parametrize(
    "method,weight,rampup,offset,factor,budget",
    [("dtc", 1.0, 40, 0, StepDecay, 6000), ("sassnet", 0.01, 40, 0, StepDecay, 6000),
     ("ssnet", 1.0, 40, 1, StepDecay, 15000), ("dan", 0.1, 200, 0, PolyDecay, 30000)],
)
def test_method_files_set_the_references_weights_ramps_and_schedules(method, weight, rampup, offset, factor, budget):
    """At the reference's own budget (its max_iterations), the method file's ramp and LR are the reference's exactly."""
    cfg = parsed("train.json", f"methods/{method}.json", max_iterations=budget)
    ramp = RampUpHandler(
        None, "consistency_weight", cfg.get_parsed_content("unsup_weight"), 0.0,
        cfg.get_parsed_content("ramp_length"), cfg.get_parsed_content("ramp_iterations"),
        cfg.get_parsed_content("ramp_offset"),
    )
    for it in (0, 148, 149, 150, 299, 3000, 5999, 6000, 29999, 30000):
        # the weight used at 0-based iteration `it`: SS-Net computes it after incrementing its counter
        assert ramp.value(it) == pytest.approx(reference_weight(weight, rampup, it + offset), rel=1e-12), it
    lr = cfg.get_parsed_content("lr_factor")
    assert isinstance(lr, factor)
    if factor is StepDecay:
        assert [lr(i) for i in (2499, 2500, 5000)] == pytest.approx([1.0, 0.1, 0.01])  # base * 0.1 ** (iter // 2500)
    net = cfg.get_parsed_content("network_def", instantiate=True)
    # every reference trains with has_dropout=True: the V-Net's channel dropout (0.5) at the bottleneck and head
    assert any(isinstance(mod, torch.nn.Dropout3d) and mod.p == 0.5 for mod in net.modules())
    m = cfg.get_parsed_content("method")
    if method in ("sassnet", "dan"):
        assert m.d_optimizer.param_groups[0]["lr"] == 1e-4
        assert m.discriminator.conv0.in_channels == (1 if method == "sassnet" else 2)
    if method in ("dtc", "sassnet"):
        assert m.beta == 0.3
    if method == "dtc":
        assert m.k == 1500.0
    if method == "ssnet":
        assert (m.vat.xi, m.vat.epsilon, m.vat.power_iterations) == (10.0, 10.0, 1)
        assert m.elements_per_class == 32 and m.separation_weight == 0.1


def test_reference_weight_helper_agrees_with_the_package_ramp():
    from monai_stlu.utils import ramp_value

    assert ramp_value(4500, 1.0) == pytest.approx(reference_weight(1.0, 40, 4500))
    assert math.isclose(reference_weight(0.1, 200, 0), 0.1 * math.exp(-5))


def test_ssnet_mask_sized_parts_run_in_float32_under_bf16_autocast():
    """The memory update and the separation work on rows picked by masks (a new count every iteration); under bf16
    autocast on a CPU each new shape was another oneDNN matmul the process kept (SS-Net's protocol run grew past 13
    GB). They run in float32, as the reference: the memory, the separation and its selectors' outputs are float32,
    and the loss equals the one computed without autocast for those parts."""
    from monai_stlu.engines.methods.ssnet import SSNetMethod
    from monai_stlu.networks.nets.prototype_vnet import PrototypeVNet

    torch.manual_seed(0)
    net = PrototypeVNet(n_filters=4)
    method = SSNetMethod()
    feats = torch.randn(300, 4)
    labels = (torch.rand(300) > 0.5).long()
    predicted = torch.randn(300, 32, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        method.update_memory(net, feats, labels)
        sep = method.separation(net, predicted, labels)
    assert method.memory[1] is not None and method.memory[1].dtype == torch.float32
    assert sep.dtype == torch.float32
    want = method.separation(net, predicted.float(), labels)  # no autocast at all
    torch.testing.assert_close(sep, want)
