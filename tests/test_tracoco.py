"""TraCoCo, "Translation Consistent Co-training" (Liu et al., IEEE TMI 2024), against its reference
(``yyliu01/TraCoCo``, ``Code/VnetLA``): the crop pair drawn as ``Dataloader/augmentation.py``'s ``RandomCrop`` with the
same random stream, the CRC loss as ``Utils/losses.py``'s ``semi_crc_loss``, the translation terms and CutMix as
``train.py`` writes them, and one whole iteration's loss and gradients composed from those reference functions, in
float64."""

from __future__ import annotations

import copy

import numpy
import pytest
import torch
import torch.nn.functional as F

from monai_stlu.data import RandTranslatedCropd
from monai_stlu.engines import TraCoCoMethod
from monai_stlu.engines.methods import cutmix, cutmix_boxes
from monai_stlu.losses import ConfidentRegionalCELoss, TranslationConsistencyLoss
from monai_stlu.networks.nets import VNet


def reference_crop_starts(rng, shape, size):
    """``RandomCrop.__call__``'s draws (no padding needed) and its ranges, with ``numpy.random`` replaced by ``rng``;
    the patch size (112, 112, 80 there) is ``size``."""
    (w, h, d), (pw, ph, pd) = shape, size
    w1, h1, d1 = rng.randint(0, w - pw), rng.randint(0, h - ph), rng.randint(0, d - pd)
    cx = rng.randint(0, w1) if w1 != 0 else w1
    cy = rng.randint(0, h1) if h1 != 0 else h1
    cz = rng.randint(0, d1) if d1 != 0 else d1
    cx = cx + int(w1 / 2) if w1 - cx > pw else cx
    cy = cy + int(h1 / 2) if h1 - cy > ph else cy
    normal = [[0 if cx < w1 else cx - w1, pw - (w1 - cx) if cx < w1 else pw],
              [0 if cy < h1 else cy - h1, ph - (h1 - cy) if cy < h1 else ph],
              [0 if cz < d1 else cz - d1, pd - (d1 - cz) if cz < d1 else pd]]
    cons = [[0 if cx > w1 else w1 - cx, pw - (cx - w1) if cx > w1 else pw],
            [0 if cy > h1 else h1 - cy, ph - (cy - h1) if cy > h1 else ph],
            [0 if cz > d1 else d1 - cz, pd - (cz - d1) if cz > d1 else pd]]
    return (w1, h1, d1), (cx, cy, cz), normal, cons


def test_the_crop_pair_is_drawn_as_the_reference():
    shape, size = (90, 70, 30), (24, 20, 12)
    volume = torch.randn(1, *shape, dtype=torch.float64)
    from monai_stlu.data import overlap_slices

    t = RandTranslatedCropd(["image", "label"], size, allow_missing_keys=True)
    t.set_random_state(7)
    rng = numpy.random.RandomState(7)
    seen_far = False
    for _ in range(200):
        out = t({"image": volume, "label": volume * 2})
        (w1, h1, d1), (cx, cy, cz), normal, cons = reference_crop_starts(rng, shape, size)
        assert torch.equal(out["image"], volume[:, w1:w1 + 24, h1:h1 + 20, d1:d1 + 12])
        assert torch.equal(out["image_translated"], volume[:, cx:cx + 24, cy:cy + 20, cz:cz + 12])
        assert torch.equal(out["label_translated"], out["image_translated"] * 2)
        assert out["translation"].tolist() == [cx - w1, cy - h1, cz - d1]
        first, second = overlap_slices(out["translation"].tolist(), size)
        if all(0 <= r[0] < r[1] for r in normal + cons):
            assert [[s.start, s.stop] for s in first] == normal and [[s.start, s.stop] for s in second] == cons
        else:  # no shared voxel along an axis (the reference's range is then empty on one side, and skipped)
            assert any(s.stop <= s.start for s in first) and any(s.stop <= s.start for s in second)
        seen_far |= w1 > 24 or h1 > 20
    assert seen_far  # the "no-overlap" fix was exercised


def reference_crc(inputs, targets, threshold=0.65, neg_threshold=0.1):
    """``semi_crc_loss`` as written in the reference (binary classes)."""
    targets_prob = F.softmax(targets, dim=1)
    pos_weight = targets_prob.max(1)[0]
    pos_mask = pos_weight >= threshold
    neg_weight = targets_prob.min(1)[0]
    neg_mask = neg_weight < neg_threshold
    y_tilde = torch.argmax(targets, dim=1)
    if not torch.any(pos_mask):
        positive = torch.tensor([0.0], dtype=inputs.dtype)
    else:
        positive = F.nll_loss(torch.log_softmax(inputs, dim=1), y_tilde, reduction="none") * pos_weight
        positive = positive[pos_mask]
    if not torch.any(neg_mask):
        negative = torch.tensor([0.0], dtype=inputs.dtype)
    else:
        inverse = torch.clamp(1 - F.softmax(inputs, dim=1), min=1e-6, max=1.0)
        negative = F.nll_loss(inverse.log(), (1 - y_tilde), reduction="none") * neg_weight
        negative = negative[neg_mask]
    return positive.mean() + negative.mean()


@pytest.mark.parametrize("scale", [3.0, 0.01])  # confident targets, then none (both terms empty)
def test_the_crc_loss_and_its_gradient_are_the_references(scale):
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, 2, 6, 5, 4, generator=g, dtype=torch.float64)
    targets = torch.randn(2, 2, 6, 5, 4, generator=g, dtype=torch.float64) * scale
    ours_in, ref_in = inputs.clone().requires_grad_(), inputs.clone().requires_grad_()
    ours = ConfidentRegionalCELoss()(ours_in, targets)
    ref = reference_crc(ref_in, targets)
    assert float(ours) == pytest.approx(float(ref), rel=1e-12, abs=1e-15)
    if scale > 1:
        assert float(ref) > 0
        ours.backward()
        ref.backward()
        torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-10, atol=1e-14)


def reference_translation_terms(sup_outputs, cons_outputs, normal_ranges, cons_ranges):
    """``train.py``'s spatial loss loop and ``NegEntropy`` (weights 0.3 and 0.1 applied by the caller there)."""
    spatial = torch.zeros(1, dtype=sup_outputs.dtype)
    collection = []
    for i in range(cons_outputs.shape[0]):
        (nx, ny, nz), (cx, cy, cz) = normal_ranges[i], cons_ranges[i]
        a = sup_outputs[i][:, nx[0]:nx[1], ny[0]:ny[1], nz[0]:nz[1]]
        b = cons_outputs[i][:, cx[0]:cx[1], cy[0]:cy[1], cz[0]:cz[1]]
        if not all(list(a.shape)) > 0 or not all(list(b.shape)) > 0:
            continue
        a = a.clamp(min=1e-6, max=1.0)
        b = b.clamp(min=1e-6, max=1.0)
        spatial += F.kl_div(torch.log_softmax(a, dim=1), torch.softmax(b, dim=1), reduction="none").mean()
        collection += [a, b]
    entropy = torch.zeros(1, dtype=sup_outputs.dtype)
    for t in collection:
        p = torch.softmax(t, dim=0)
        entropy += torch.sum(p.log() * p, dim=0).mean()
    return 0.3 * spatial + 0.1 * entropy / len(collection)


def ranges_from(shift, size):
    """The reference's ranges from the crops' start difference ``d = cons - normal``."""
    normal = [[0 if d > 0 else 0, p + d if d < 0 else p] if d <= 0 else [d, p] for d, p in zip(shift, size)]
    cons = [[-d if d < 0 else 0, p if d <= 0 else p - d] for d, p in zip(shift, size)]
    return normal, cons


def test_the_translation_terms_and_their_gradient_are_the_references():
    g = torch.Generator().manual_seed(2)
    size = (8, 7, 6)
    sup = torch.randn(3, 2, *size, generator=g, dtype=torch.float64)
    cons = torch.randn(3, 2, *size, generator=g, dtype=torch.float64)
    shifts = torch.tensor([[-3, -1, 0], [0, -6, -2], [-9, 0, 0]])  # the last: no overlap along x, skipped
    ours_in = [sup.clone().requires_grad_(), cons.clone().requires_grad_()]
    ref_in = [sup.clone().requires_grad_(), cons.clone().requires_grad_()]
    ours = TranslationConsistencyLoss()(*ours_in, shifts)
    ranges = [ranges_from(s, size) for s in shifts.tolist()]
    ref = reference_translation_terms(*ref_in, [r[0] for r in ranges], [r[1] for r in ranges])
    assert float(ours) == pytest.approx(float(ref), rel=1e-12)
    ours.backward()
    ref.sum().backward()
    for a, b in zip(ours_in, ref_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)
    assert float(ref_in[1].grad.abs().sum()) > 0  # the translated crop is trained too, as in the reference


def reference_cut_mix(volume, mask, rand_index, boxes):
    """``Trainer.cut_mix`` given its permutation and ``rand_bbox``'s boxes (its ground-truth mix is for logging)."""
    mix_volume, mix_target = volume.clone(), mask.clone()
    for i in range(volume.shape[0]):
        x1, x2, y1, y2 = boxes[i]
        mix_volume[i, :, x1:x2, y1:y2] = volume[rand_index[i], :, x1:x2, y1:y2]
        mix_target[i, :, x1:x2, y1:y2] = mask[rand_index[i], :, x1:x2, y1:y2]
    return mix_volume, mix_target


def test_cutmix_boxes_follow_rand_bbox():
    torch.manual_seed(0)
    for _ in range(50):
        perm, boxes = cutmix_boxes(4, 32, 24)
        assert sorted(perm.tolist()) == [0, 1, 2, 3]
        for x1, x2, y1, y2 in boxes:
            assert 0 <= x1 <= x2 <= 32 and 0 <= y1 <= y2 <= 24
            assert x2 >= 32 // 8 and y2 >= 24 // 8  # the centre is drawn from [W/8, W) x [H/8, H)
    v, m = torch.randn(4, 1, 32, 24, 8), torch.randn(4, 2, 32, 24, 8)
    ours = cutmix([v, m], perm, boxes)
    ref = reference_cut_mix(v, m, perm.tolist(), boxes)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


def test_one_iteration_is_the_references():
    """Without noise and dropout (so both computations see the same outputs), in float64: the loss of both networks,
    B's CutMix drawn from the same seed, composed from the reference functions above; every parameter's gradient."""
    torch.manual_seed(0)
    net_a = VNet(n_filters=2, dropout=False).double().train()
    net_b = copy.deepcopy(net_a)
    for p in net_b.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    size = (16, 16, 16)
    x = torch.randn(4, 1, *size, dtype=torch.float64)
    x_t = torch.randn(4, 1, *size, dtype=torch.float64)
    shifts = torch.tensor([[-3, -2, 0], [-1, 0, -4], [0, 0, 0], [-5, -5, -1]])
    label = torch.zeros(2, 1, *size, dtype=torch.float64)
    label[:, :, 3:12, 4:10, 5:13] = 1
    method = TraCoCoMethod(noise=0.0, consistency_weight=0.45)
    method.network_b = net_b
    extras = {"labeled": {"image_translated": x_t[:2], "translation": shifts[:2]},
              "unlabeled": {"image_translated": x_t[2:], "translation": shifts[2:]}}
    torch.manual_seed(5)
    out = method(net_a, x[:2], label, x[2:], extras=extras)
    out["loss"].backward()
    ours = {n: p.grad.clone() for n, p in [*net_a.named_parameters(prefix="a"), *net_b.named_parameters(prefix="b")]}
    net_a.zero_grad()
    net_b.zero_grad()

    def dice_loss(scores, targets, smooth=1e-5):  # Utils/losses.py
        intersect = torch.sum(scores * targets)
        return 1 - (2 * intersect + smooth) / (torch.sum(scores * scores) + torch.sum(targets * targets) + smooth)

    ranges = [ranges_from(s, size) for s in shifts.tolist()]
    normal, cons = [r[0] for r in ranges], [r[1] for r in ranges]
    y = label[:, 0].long()
    total = 0
    torch.manual_seed(5)
    for model, other, mix in ((net_a, net_b, False), (net_b, net_a, True)):
        sup_out, cons_out = model(x), model(x_t)
        trans = reference_translation_terms(sup_out, cons_out, normal, cons)
        sup = 0.5 * (F.cross_entropy(sup_out[:2], y) + dice_loss(F.softmax(sup_out, 1)[:2, 1], (y == 1).double()))
        with torch.no_grad():
            pseudo = other(x)
        inp = x
        if mix:
            perm, boxes = cutmix_boxes(4, 16, 16)
            inp, pseudo = reference_cut_mix(x, pseudo, perm.tolist(), boxes)
        crc = reference_crc(model(inp)[2:], pseudo[2:])
        total = total + sup + (crc + trans) * 0.45
    assert float(out["loss"].detach()) == pytest.approx(float(total), rel=1e-10)
    total.sum().backward()
    for n, p in [*net_a.named_parameters(prefix="a"), *net_b.named_parameters(prefix="b")]:
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-8, atol=1e-12, msg=n)
