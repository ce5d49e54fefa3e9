"""MCF, "Mutual Correction Framework" (Wang et al., CVPR 2023), against its reference (``WYC-321/MCF``,
``code/train_MCF.py``, ``networks/ResNet34.py``, ``resnet.py``, ``test_util.py``): one whole iteration's losses and
gradients written here in float64 the way the reference computes them, for either subnet leading; the networks'
sizes counted from the reference's layer list; the initialisation; the ensemble the reference tests."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.engines import MCFMethod
from monai_stlu.losses import DifferenceReviewLoss
from monai_stlu.networks.nets import MCFNet, ResNetVNet, VNet

T = 0.1


def reference_losses(v_outputs, r_outputs, label, labeled_bs, consistency_weight):
    """``train_MCF.py``'s loop body from the two subnets' logits: returns (v_loss, r_loss, good_student)."""

    def dice_loss(score, target):  # utils/losses.py dice_loss
        target = target.double()
        smooth = 1e-5
        intersect = torch.sum(score * target)
        y_sum = torch.sum(target * target)
        z_sum = torch.sum(score * score)
        return 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)

    def mse(a, b):  # its softmax_mse_loss: no softmax, element-wise squares
        return (a - b) ** 2

    v_label = label[:, 0].long()
    v_loss_seg = F.cross_entropy(v_outputs[:labeled_bs], v_label[:labeled_bs])
    v_soft = F.softmax(v_outputs, dim=1)
    v_dice = dice_loss(v_soft[:labeled_bs, 1], v_label[:labeled_bs] == 1)
    r_loss_seg = F.cross_entropy(r_outputs[:labeled_bs], v_label[:labeled_bs])
    r_soft = F.softmax(r_outputs, dim=1)
    r_dice = dice_loss(r_soft[:labeled_bs, 1], v_label[:labeled_bs] == 1)
    good_student = 0 if v_dice < r_dice else 1
    v_predict = torch.max(v_soft[:labeled_bs], 1)[1]
    r_predict = torch.max(r_soft[:labeled_bs], 1)[1]
    diff_mask = ((v_predict == 1) ^ (r_predict == 1)).to(torch.int32)
    v_mse = torch.sum(diff_mask * mse(v_soft[:labeled_bs, 1], v_label[:labeled_bs])) / (torch.sum(diff_mask) + 1e-16)
    r_mse = torch.sum(diff_mask * mse(r_soft[:labeled_bs, 1], v_label[:labeled_bs])) / (torch.sum(diff_mask) + 1e-16)
    v_sup = (v_loss_seg + v_dice) + 0.5 * v_mse
    r_sup = (r_loss_seg + r_dice) + 0.5 * r_mse
    v_p = torch.pow(v_soft[labeled_bs:].clone().detach(), 1 / T)
    r_p = torch.pow(r_soft[labeled_bs:].clone().detach(), 1 / T)
    v_plabel = v_p / torch.sum(v_p, dim=1, keepdim=True)
    r_plabel = r_p / torch.sum(r_p, dim=1, keepdim=True)
    if good_student == 0:
        dist = mse(r_soft[labeled_bs:], v_plabel)
        return v_sup, r_sup + consistency_weight * torch.sum(dist) / dist.numel(), good_student
    dist = mse(v_soft[labeled_bs:], r_plabel)
    return v_sup + consistency_weight * torch.sum(dist) / dist.numel(), r_sup, good_student


@pytest.mark.parametrize("leader", ["vnet", "resnet"])
def test_one_iteration_is_the_references(leader):
    """The loss and every parameter's gradient of one iteration, with the V-Net or the ResNet subnet leading (the
    other made to predict background everywhere, so its labeled Dice loss is the larger), in float64 without
    dropout so both computations see the same outputs."""
    torch.manual_seed(0)
    net = MCFNet(n_filters=4, dropout=False).double().train()
    behind = net.resnet if leader == "vnet" else net.vnet
    with torch.no_grad():
        behind.head.bias.copy_(torch.tensor([3.0, -3.0], dtype=torch.float64))
    image = torch.randn(4, 1, 16, 16, 16, dtype=torch.float64)
    label = torch.zeros(2, 1, 16, 16, 16, dtype=torch.float64)
    label[:, :, 4:12, 3:11, 5:13] = 1
    method = MCFMethod(consistency_weight=0.37, init="default")
    out = method(net, image[:2], label, image[2:])
    out["loss"].backward()
    ours = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    v_out, r_out = net.forward_pair(image)
    v_loss, r_loss, good = reference_losses(v_out, r_out, label, 2, 0.37)
    assert good == (0 if leader == "vnet" else 1)
    assert float(out["vnet_leads"]) == (1.0 if leader == "vnet" else 0.0)
    assert float(out["loss"].detach()) == pytest.approx(float(v_loss + r_loss), rel=1e-10)
    assert float(out["unsup"]) > 0
    v_loss.backward()  # the reference's two backward passes into two optimisers
    r_loss.backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-8, atol=1e-12, msg=name)
    # the leader's parameters get no gradient from the pseudo-label term: its loss is its supervised loss alone
    lead = net.vnet if leader == "vnet" else net.resnet
    assert any(float(p.grad.abs().sum()) > 0 for p in lead.parameters())


def test_the_difference_review_counts_only_disagreeing_voxels():
    """With three classes: the squared error of the foreground channels where the two argmaxes differ, divided by the
    count of such voxels (the reference's binary form generalised channel by channel)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 5, 4, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, 5, 4, 3, generator=g, dtype=torch.float64)
    label = torch.randint(0, 3, (2, 1, 5, 4, 3), generator=g)
    loss = DifferenceReviewLoss()(a, b, label)
    p = torch.softmax(a, 1)
    total, count = 0.0, 0
    for n in range(2):
        for idx in torch.cartesian_prod(torch.arange(5), torch.arange(4), torch.arange(3)):
            x, y, z = idx.tolist()
            if int(a[n, :, x, y, z].argmax()) != int(b[n, :, x, y, z].argmax()):
                count += 1
                total += sum((float(p[n, c, x, y, z]) - float(label[n, 0, x, y, z] == c)) ** 2 for c in (1, 2))
    assert count > 0
    assert float(loss) == pytest.approx(total / count, rel=1e-12)
    same = DifferenceReviewLoss()(a, a, label)
    assert float(same) == 0.0  # no disagreement, nothing to review


def reference_resnet34_size(n=16, classes=2):
    """``Resnet34``: ``resnet34()`` (stem 7x7x7 without bias + BN, BasicBlocks [3, 4, 6, 3] of 32..256 channels, the
    first of each layer with stride 2 and a 1x1x1 conv-BN shortcut; ``fc`` commented out) under V-Net's decoder."""

    def block(i, o, shortcut):
        return i * o * 27 + 2 * o + o * o * 27 + 2 * o + ((i * o + 2 * o) if shortcut else 0)

    ch = [n, 2 * n, 4 * n, 8 * n, 16 * n]
    total = 1 * n * 343 + 2 * n
    for k, count in enumerate([3, 4, 6, 3]):
        total += block(ch[k], ch[k + 1], True) + (count - 1) * block(ch[k + 1], ch[k + 1], False)
    for k, convs in zip([3, 2, 1, 0], [3, 3, 2, 1]):  # block_five_up..block_nine
        i, o = ch[k + 1], ch[k]
        total += i * o * 8 + o + 2 * o + convs * (o * o * 27 + o + 2 * o)
    return total + n * classes + classes


def test_the_subnets_are_the_references_size():
    assert sum(p.numel() for p in ResNetVNet().parameters()) == reference_resnet34_size() == 17_930_354
    assert sum(p.numel() for p in MCFNet().parameters()) == 17_930_354 + sum(p.numel() for p in VNet().parameters())
    net = ResNetVNet(n_filters=4).eval()
    feats = net.encode(torch.randn(1, 1, 32, 32, 16))
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 32, 32, 16), (8, 16, 16, 8), (16, 8, 8, 4), (32, 4, 4, 2),
                                                   (64, 2, 2, 1)]


def test_the_reference_initialisation():
    """Every convolution and transposed convolution Kaiming-normal (std sqrt(2 / fan_in), fan_in of a transposed
    weight = its output channels x kernel volume, as PyTorch's), BatchNorm weights 1 and biases 0."""
    torch.manual_seed(0)
    net = MCFNet(n_filters=8)
    MCFMethod().attach(type("Engine", (), {"network": net})())
    for m in net.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) and m.weight.numel() > 5000:
            w = m.weight
            fan_in = w.shape[1] * math.prod(w.shape[2:])
            assert float(w.std()) == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.1), m
        elif isinstance(m, nn.BatchNorm3d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())


def test_the_network_predicts_the_mean_of_both_softmaxes():
    """``test_single_case``: ``(softmax(vnet) + softmax(resnet)) / 2``; the output's softmax gives it back, and it
    scripts for export."""
    torch.manual_seed(0)
    net = MCFNet(n_filters=4).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    mean = 0.5 * (torch.softmax(net.vnet(x), 1) + torch.softmax(net.resnet(x), 1))
    torch.testing.assert_close(torch.softmax(net(x), 1), mean, rtol=1e-5, atol=1e-6)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))
