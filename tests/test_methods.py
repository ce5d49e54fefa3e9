"""Each baseline's defining math on tiny tensors, against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset

from conftest import sphere_cases
from monai_stlu.engines import (
    BCPMethod,
    CPSMethod,
    MCNetPlusMethod,
    MeanTeacherMethod,
    SemiSupervisedTrainer,
    SupervisedMethod,
    UAMTMethod,
)
from monai_stlu.engines.methods import clipped_noise, context_mask, region_loss, sharpen
from monai_stlu.engines.methods.bcp import dice_ce_loss
from monai_stlu.handlers import EMATeacherHandler, RampUpHandler
from monai_stlu.networks import MCNetPlus, VNet


def log_softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def tiny_trainer(method, network, iterations=2):
    labeled = DataLoader(Dataset(sphere_cases(2, seed=0)), batch_size=2)
    unlabeled = DataLoader(Dataset(sphere_cases(2, seed=1, with_label=False)), batch_size=2)
    return SemiSupervisedTrainer(
        "cpu", 1, labeled, network, torch.optim.SGD(network.parameters(), lr=0.01), method,
        unlabeled_data_loader=unlabeled if method.uses_unlabeled else None, epoch_length=iterations,
    )


# --- EMA teacher -------------------------------------------------------------------------------------------------
def test_ema_update_matches_formula():
    student, teacher = VNet(n_filters=2), VNet(n_filters=2)
    handler = EMATeacherHandler(teacher, student, decay=0.99)
    before = [p.detach().double().clone() for p in teacher.parameters()]
    for step, alpha in [(0, 0.0), (4, 0.8), (1000, 0.99)]:
        assert handler.alpha(step) == pytest.approx(alpha)
    handler.update(4)
    for t, s, b in zip(teacher.parameters(), student.parameters(), before):
        want = (0.8 * b + 0.2 * s.detach().double()).numpy()
        np.testing.assert_allclose(t.detach().double().numpy(), want, rtol=1e-6, atol=1e-7)
    handler.update(0)  # alpha 0: a copy of the student
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)


def test_ema_handler_runs_after_each_iteration_from_start_iteration():
    student, teacher = VNet(n_filters=2), VNet(n_filters=2)
    first = next(teacher.parameters()).detach().clone()
    engine = Engine(lambda e, b: None)
    EMATeacherHandler(teacher, student, start_iteration=3).attach(engine)
    engine.run(range(3), max_epochs=1)
    assert torch.equal(next(teacher.parameters()), first)  # iterations 0-2: before the start
    engine.run(range(4), max_epochs=2)
    # step 0 copies the student; later steps average equal values
    torch.testing.assert_close(next(teacher.parameters()), next(student.parameters()))


def test_noise_is_clipped():
    torch.manual_seed(1)
    x = torch.zeros(100_000)
    n = clipped_noise(x, std=0.1, clip=0.2)
    assert n.abs().max() <= 0.2 and (n.abs() == 0.2).any()
    assert n.std() == pytest.approx(0.1, rel=0.05)
    torch.manual_seed(2)
    small = clipped_noise(x, std=0.01, clip=0.2)
    torch.manual_seed(2)
    torch.testing.assert_close(small, torch.randn_like(x) * 0.01)  # far inside the clip: untouched


def test_mean_teacher_consistency_and_attach():
    torch.manual_seed(0)
    net = VNet(n_filters=2)
    method = MeanTeacherMethod(noise_std=0.0)
    trainer = tiny_trainer(method, net)
    assert method.teacher is not None and all(not p.requires_grad for p in method.teacher.parameters())
    x = torch.randn(2, 1, 16, 16, 16)
    student_logits = torch.randn(2, 2, 16, 16, 16)
    got = method.consistency(student_logits, x)["consistency"]
    with torch.no_grad():
        t = np.exp(log_softmax64(method.teacher(x).numpy()))
    s = np.exp(log_softmax64(student_logits.numpy()))
    assert float(got) == pytest.approx(((s - t) ** 2).mean(), rel=1e-5)
    trainer.run()
    assert trainer.state.iteration == 2


# --- UA-MT ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("iteration", [0, 500, 7500, 15000])
def test_uncertainty_threshold_schedule(iteration):
    method = UAMTMethod()
    handler = RampUpHandler(method, "threshold", start_value=0.75 * math.log(2), end_value=math.log(2),
                            ramp_length=15000, iterations_per_step=1)
    engine = Engine(lambda e, b: None)
    engine.state.iteration = iteration + 1
    handler(engine)
    want = (0.75 + 0.25 * math.exp(-5 * (1 - min(iteration / 15000, 1)) ** 2)) * math.log(2)
    assert method.threshold == pytest.approx(want, rel=1e-12)


def test_uncertainty_mask_and_consistency():
    torch.manual_seed(0)
    method = UAMTMethod(passes=3, noise_std=0.0)
    method.teacher = VNet(n_filters=2).eval()  # deterministic teacher: every pass agrees
    x = torch.randn(2, 1, 16, 16, 16)
    student_logits = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        t = np.exp(log_softmax64(method.teacher(x).numpy()))
    s = np.exp(log_softmax64(student_logits.numpy()))
    entropy = -(t * np.log(t + 1e-6)).sum(axis=1, keepdims=True)
    method.threshold = float(np.median(entropy))
    out = method.consistency(student_logits, x)
    mask = (entropy < method.threshold).astype(np.float64)
    assert 0 < mask.mean() < 1
    want = (mask * (s - t) ** 2).sum() / (2 * mask.sum() + 1e-16)
    assert float(out["consistency"]) == pytest.approx(want, rel=1e-4)
    assert float(out["certain_fraction"]) == pytest.approx(mask.mean(), abs=1e-6)


# --- CPS -------------------------------------------------------------------------------------------------------------
def test_cross_pseudo_labels():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 5, 4, 3)), rng.normal(size=(2, 3, 5, 4, 3))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    got = CPSMethod.cross_pseudo_loss(ta, tb)
    ya, yb = a.argmax(1), b.argmax(1)
    lsa, lsb = log_softmax64(a), log_softmax64(b)
    ce = lambda ls, y: -np.take_along_axis(ls, y[:, None], axis=1).mean()
    assert float(got.detach()) == pytest.approx(ce(lsa, yb) + ce(lsb, ya), rel=1e-6)
    got.backward()  # pseudo-labels are constants: the gradient is that of CE with fixed targets
    pa = np.exp(lsa)
    onehot = np.eye(3)[yb].transpose(0, 4, 1, 2, 3)
    np.testing.assert_allclose(ta.grad.numpy(), (pa - onehot) / yb.size, rtol=1e-6, atol=1e-10)


def test_cps_second_network_differs_and_is_optimised():
    net = VNet(n_filters=2)
    method = CPSMethod(seed_b=7)
    trainer = tiny_trainer(method, net)
    assert len(trainer.optimizer.param_groups) == 2
    pa, pb = next(net.parameters()), next(method.network_b.parameters())
    assert pa.shape == pb.shape and not torch.allclose(pa, pb)
    before = pb.detach().clone()
    trainer.run()
    assert not torch.equal(before, next(method.network_b.parameters()))


# --- MC-Net+ ---------------------------------------------------------------------------------------------------------
def test_sharpen_matches_binary_formula():
    p = torch.rand(2, 1, 4, 4, 4, dtype=torch.float64)
    prob = torch.cat([1 - p, p], dim=1)
    want = p**10 / (p**10 + (1 - p) ** 10)
    torch.testing.assert_close(sharpen(prob, 0.1)[:, 1:], want)
    three = torch.softmax(torch.randn(2, 3, 4, 4, 4, dtype=torch.float64), dim=1)
    torch.testing.assert_close(sharpen(three, 0.5).sum(1), torch.ones(2, 4, 4, 4, dtype=torch.float64))


def test_mutual_consistency_matches_loops():
    rng = np.random.default_rng(3)
    logits = [rng.normal(size=(2, 2, 4, 4, 3)) for _ in range(3)]
    got = MCNetPlusMethod(temperature=0.1).mutual_consistency([torch.tensor(z) for z in logits])
    probs = [np.exp(log_softmax64(z)) for z in logits]
    sharp = [p**10 / (p**10).sum(1, keepdims=True) for p in probs]
    want = sum(((probs[i] - sharp[j]) ** 2).mean() for i in range(3) for j in range(3) if i != j)
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_mcnet_plus_network_and_method():
    net = MCNetPlus(n_filters=2)
    outs = net.forward_all(torch.randn(2, 1, 32, 32, 16))
    assert len(outs) == 3 and not torch.allclose(outs[0], outs[1])
    net.eval()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))
    with pytest.raises(TypeError, match="multi-decoder"):
        MCNetPlusMethod()(VNet(n_filters=2), x, torch.zeros_like(x).long(), x)


# --- BCP ---------------------------------------------------------------------------------------------------------------
def test_context_mask_cube():
    for shape in [(112, 112, 80), (30, 21, 12)]:
        m = context_mask(shape, 2 / 3)
        zeros = (m == 0).nonzero()[:, 2:]
        size = [int(s * 2 / 3) for s in shape]
        assert int((m == 0).sum()) == np.prod(size)
        assert (zeros.max(0).values - zeros.min(0).values + 1).tolist() == size  # one contiguous cube
    with pytest.raises(ValueError):
        context_mask((8, 8, 8), 0.0)


def bcp_mask_dice64(p, y, m, smooth=1e-5):
    """BCP's mask_DiceLoss in float64: per sample and class (background included), not squared, mean."""
    n, c = p.shape[:2]
    inter = (p * y * m).reshape(n, c, -1).sum(2)
    union = ((p + y) * m).reshape(n, c, -1).sum(2)
    return 1 - ((2 * inter + smooth) / (union + smooth)).mean()


def test_region_loss_matches_bcp_formula():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 2, 6, 5, 4))
    t_out, t_in = rng.integers(0, 2, (2, 1, 6, 5, 4)), rng.integers(0, 2, (2, 1, 6, 5, 4))
    mask = np.ones((1, 1, 6, 5, 4))
    mask[..., 1:5, 1:4, 1:3] = 0
    args = (torch.tensor(logits), torch.tensor(t_out), torch.tensor(t_in), torch.tensor(mask))
    ls = log_softmax64(logits)
    p = np.exp(ls)
    total = 0.0
    for t, r, w in ((t_out, mask, 1.0), (t_in, 1 - mask, 0.5)):
        y = np.eye(2)[t[:, 0]].transpose(0, 4, 1, 2, 3)
        r = np.broadcast_to(r, (2, 1, 6, 5, 4))
        ce = -(ls * y).sum(1)
        total += w * bcp_mask_dice64(p, y, r) + w * (ce * r[:, 0]).sum() / r.sum()
    got = region_loss(*args, 1.0, 0.5)
    assert float(got) == pytest.approx(total / 2, rel=1e-6)
    # the region weight scales the region's whole Dice loss: it does not cancel inside the ratio
    diff = float(region_loss(*args, 1.0, 1.0)) - float(got)
    y_in = np.eye(2)[t_in[:, 0]].transpose(0, 4, 1, 2, 3)
    ce_in = (-(ls * y_in).sum(1) * (1 - mask[:, 0])).sum() / np.broadcast_to(1 - mask, (2, 1, 6, 5, 4)).sum()
    want = 0.5 * (bcp_mask_dice64(p, y_in, np.broadcast_to(1 - mask, (2, 1, 6, 5, 4))) + ce_in) / 2
    assert diff == pytest.approx(want, rel=1e-6) and diff > 0.01


def test_bcp_pretraining_loss_is_half_ce_plus_dice_of_the_mixed_label():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(1, 2, 6, 5, 4))
    target = rng.integers(0, 2, (1, 1, 6, 5, 4))
    ls = log_softmax64(logits)
    y = np.eye(2)[target[:, 0]].transpose(0, 4, 1, 2, 3)
    want = (-(ls * y).sum(1).mean() + bcp_mask_dice64(np.exp(ls), y, np.ones_like(y[:, :1]))) / 2
    assert float(dice_ce_loss(torch.tensor(logits), torch.tensor(target))) == pytest.approx(want, rel=1e-6)


class Recorder(torch.nn.Module):
    """A real V-Net that also keeps the inputs it was given."""

    def __init__(self):
        super().__init__()
        self.net = VNet(n_filters=2)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_bcp_copy_paste_both_ways():
    torch.manual_seed(0)
    method = BCPMethod(pretrain_iterations=0, largest_component=False)
    method.teacher = VNet(n_filters=2).eval()
    net = Recorder()
    xl, xu = torch.randn(2, 1, 32, 32, 16), torch.randn(2, 1, 32, 32, 16)
    y = (torch.rand(2, 1, 32, 32, 16) > 0.5).long()
    torch.manual_seed(11)
    out = method(net, xl, y, xu)
    torch.manual_seed(11)
    m = context_mask((32, 32, 16))
    x1, x2 = net.inputs[-2], net.inputs[-1]  # two separate passes, as the reference
    torch.testing.assert_close(x1, xl[:1] * m + xu[:1] * (1 - m))  # labeled outside, unlabeled cube
    torch.testing.assert_close(x2, xu[1:] * m + xl[1:] * (1 - m))  # unlabeled outside, labeled cube
    with torch.no_grad():
        pseudo = (torch.softmax(method.teacher(xu[:1]), 1)[:, 1:] >= 0.5).long()
    torch.testing.assert_close(out["label"], y[:1] * m + pseudo * (1 - m))
    pre = BCPMethod(pretrain_iterations=5)
    torch.manual_seed(11)
    out = pre(net, xl, y, xu)
    torch.testing.assert_close(net.inputs[-1], xl[:1] * m + xl[1:] * (1 - m))  # pre-training: labeled into labeled
    assert out["stage"] == 0.0


def test_bcp_pseudo_label_keeps_the_largest_component():
    logits = torch.zeros((1, 2, 12, 12, 12))
    logits[0, 1] = -4.0
    logits[0, 1, 1:3, 1:3, 1:3] = 4.0  # 8 voxels
    logits[0, 1, 6:10, 6:10, 6:10] = 4.0  # 64 voxels
    logits[0, 1, 10, 10, 10] = 4.0  # touches the big one only diagonally: joined (26-connectivity)
    pl = BCPMethod().pseudo_label(logits)
    assert pl.shape == (1, 1, 12, 12, 12) and int(pl.sum()) == 65 and int(pl[0, 0, 1, 1, 1]) == 0
    assert int(BCPMethod(largest_component=False).pseudo_label(logits).sum()) == 73
    assert int(BCPMethod().pseudo_label(torch.zeros(1, 2, 4, 4, 4) - torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1)).sum()) == 0


def test_bcp_self_training_starts_from_this_runs_best_pretraining_model(tmp_path):
    from monai.engines import SupervisedEvaluator
    from monai.handlers import MeanDice, from_engine
    from monai.transforms import AsDiscreted

    torch.manual_seed(3)
    torch.save(VNet(n_filters=2).state_dict(), tmp_path / "model.pt")  # another run's model in the folder: not read
    net = VNet(n_filters=2)
    val_cases = DataLoader(Dataset(sphere_cases(1, seed=5)), batch_size=1)
    validator = SupervisedEvaluator(
        "cpu", val_cases, net, postprocessing=AsDiscreted(keys=["pred", "label"], argmax=(True, False), to_onehot=2),
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
    )
    method = BCPMethod(pretrain_iterations=3, validator=validator)
    trainer = tiny_trainer(method, net, iterations=4)
    trainer.optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    seen, validated = {}, []

    @validator.on(Events.EPOCH_COMPLETED)
    def snapshot(v):  # every validation's Dice and the network it scored
        validated.append((v.state.metrics["dice"], {k: t.clone() for k, t in net.state_dict().items()}))

    @trainer.on(Events.ITERATION_COMPLETED)
    def validate_like_the_bundle(engine):  # the bundle's ValidationHandler, every 2 iterations here
        if engine.state.iteration % 2 == 0:
            validator.run(engine.state.epoch)

    @trainer.on(Events.ITERATION_STARTED)
    def record(engine):
        if engine.state.iteration == 4:  # after the method switched to self-training
            seen["student"] = {k: v.clone() for k, v in net.state_dict().items()}
            seen["momentum"] = len(engine.optimizer.state)

    trainer.run()
    assert len(validated) == 3  # iteration 2 (the bundle's), iteration 3 (end of pre-training), iteration 4
    best = max(validated[:2], key=lambda mv: mv[0])[1]  # the best of the pre-training validations
    assert method.iteration == 3 and seen["momentum"] == 0  # a fresh optimizer: no momentum carried over
    for k, v in best.items():
        torch.testing.assert_close(seen["student"][k], v)  # the student started from this run's best model
    assert method.best_pretrain is None and method.get_extra_state()["best_pretrain"] is None
    start = dict(zip(dict(net.named_parameters()), [seen["student"][k] for k, _ in net.named_parameters()]))
    for (name, t), s in zip(method.teacher.named_parameters(), net.parameters()):
        # teacher = that model, then one EMA step with the fixed decay 0.99 (no warm-up)
        torch.testing.assert_close(t, 0.99 * start[name] + 0.01 * s.detach(), rtol=1e-5, atol=1e-6)


def test_supervised_needs_no_unlabeled_loader():
    net = VNet(n_filters=2)
    trainer = tiny_trainer(SupervisedMethod(), net, iterations=3)
    trainer.run()
    assert trainer.state.iteration == 3 and trainer.unlabeled_data_loader is None
