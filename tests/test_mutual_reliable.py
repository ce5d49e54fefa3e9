"""ML, "mutual learning with reliable pseudo label" (Su et al., MedIA 2024), against its reference
(``Jiawei0o0/mutual-learning-with-reliable-pseudo-labels``, ``code/train_Mutual_Reliable.py``): the consistency term
written here in float64 the way the reference computes it (loops over images and classes, ``F.cosine_similarity``,
``nn.CrossEntropyLoss`` on the probabilities, ``nn.MSELoss``), its gradient, one whole iteration's loss, and the
network's size against the reference's ``mine3d_v1``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_stlu.engines import MutualReliableMethod
from monai_stlu.losses import ReliableMutualLoss
from monai_stlu.networks.nets import MCNetPlus


def reference_consistency(y_all, outfeats, num_classes=2):
    """The reference's double loop over (student i, teacher j), as written there."""
    loss_consist = 0
    n = len(y_all)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            u1 = -1.0 * torch.sum(y_all[i] * torch.log(y_all[i] + 1e-6), dim=1)
            u2 = -1.0 * torch.sum(y_all[j] * torch.log(y_all[j] + 1e-6), dim=1)
            mask = (u1 > u2).to(y_all[i].dtype)
            batch_o, c_o, w_o, h_o, d_o = y_all[j].shape
            batch_f, c_f, w_f, h_f, d_f = outfeats[j].shape
            teacher_f = outfeats[j].reshape(batch_f, c_f, -1)
            index = torch.argmax(y_all[j], dim=1, keepdim=True)
            bank = torch.zeros(batch_f, num_classes, c_f, dtype=y_all[i].dtype)
            for ba in range(batch_f):
                for k in range(num_classes):
                    m = (index[ba] == k).to(y_all[i].dtype)
                    bank[ba, k] = (outfeats[j][ba] * m).sum(-1).sum(-1).sum(-1) / (m.sum() + 1e-6)
            bank = F.normalize(bank, dim=-1)
            mask_t = torch.zeros_like(y_all[i])
            for ba in range(batch_o):
                for k in range(num_classes):
                    mask_t[ba, k] = F.cosine_similarity(teacher_f[ba], bank[ba, k].unsqueeze(1), dim=0).view(
                        w_f, h_f, d_f)
            weight = (1 - nn.MSELoss(reduction="none")(mask_t, y_all[j])).mean(1) * mask
            loss_t = nn.CrossEntropyLoss(reduction="none")(y_all[i], torch.argmax(y_all[j], dim=1).detach())
            loss_consist += (loss_t * weight.detach()).sum() / (mask.sum() + 1e-6)
    return loss_consist


def test_the_consistency_term_and_its_gradient_are_the_references():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(3, 2, 6, 5, 4, generator=g, dtype=torch.float64) * 2 for _ in range(2)]
    feats = [torch.relu(torch.randn(3, 4, 6, 5, 4, generator=g, dtype=torch.float64)) for _ in range(2)]
    feats[1][0, :, 0, 0, 0] = 0.0  # a voxel with no feature at all (ReLU, dropout): cosine 0 both ways
    ours_in = [x.clone().requires_grad_() for x in logits]
    ref_in = [x.clone().requires_grad_() for x in logits]
    ours = ReliableMutualLoss()(ours_in, feats)
    y_all = torch.stack([torch.softmax(x, dim=1) for x in ref_in])  # the reference's y_all (one tensor)
    ref = reference_consistency(list(y_all), feats)
    # ours computes in float32 (the training precision): the value to float32's rounding
    assert float(ours) == pytest.approx(float(ref), rel=1e-5) and float(ref) > 0
    ours.backward()
    ref.backward()
    for a, b in zip(ours_in, ref_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    # the weight carries no gradient: only the students' probabilities move
    assert all(f.grad is None for f in feats)


def test_one_iteration_is_the_references_loss():
    """``0.5 * sum_k Binary_dice(p_k[:L, 1], y) + w * consistency`` on the network's own outputs (same seed for the
    dropout masks), the Dice written as the reference's ``Binary_dice_loss``."""
    torch.manual_seed(0)
    net = MCNetPlus(n_filters=2, upsample_modes=("deconv", "nearest")).train()
    image = torch.randn(4, 1, 16, 16, 16)
    label = (torch.rand(2, 1, 16, 16, 16) > 0.6).float()
    method = MutualReliableMethod(consistency_weight=0.7)
    torch.manual_seed(1)
    out = method(net, image[:2], label, image[2:])
    torch.manual_seed(1)
    logits, feats = net.forward_all_features(image)

    def binary_dice(p, t, ep=1e-8):
        return 1 - (2 * torch.sum(p * t) + ep) / (torch.sum(p) + torch.sum(t) + ep)

    probs = [torch.softmax(o.double(), dim=1) for o in logits]
    sup = sum(binary_dice(p[:2, 1], label[:, 0].double() == 1) for p in probs)
    cons = reference_consistency(probs, [f.double() for f in feats])
    expected = 0.5 * sup + 0.7 * cons
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(out["sup"]) == pytest.approx(float(sup), rel=1e-4)


def test_the_network_is_the_references_size():
    """``mine3d_v1``: MC-Net's encoder and two decoders (up_type 0 and 2) of the same size as MC-Net's ``mcnet3d_v1``
    (12,347,716 parameters at 16 filters, checked against that reference in test_review_methods_part2.py): nearest
    and trilinear decoders carry the same convolutions."""
    net = MCNetPlus(upsample_modes=("deconv", "nearest"))
    assert sum(p.numel() for p in net.parameters()) == 12_347_716
    net.eval()
    x = torch.randn(1, 1, 32, 32, 32)
    logits, feats = net.forward_all_features(x)
    assert len(logits) == len(feats) == 2 and feats[0].shape == (1, 16, 32, 32, 32)
    torch.testing.assert_close(net(x), logits[0])  # the first decoder predicts, as the reference's test does
