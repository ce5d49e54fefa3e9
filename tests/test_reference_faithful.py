"""Each baseline as its reference code has it (issue: faithful baselines), checked on the same inputs against the
reference's formula or behaviour written out independently here; the method files' settings are checked as parsed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from conftest import REPO_ROOT
from monai_stlu.engines import CPSMethod, MCNetPlusMethod, MeanTeacherMethod, UAMTMethod
from monai_stlu.engines.methods import context_mask, init_weights
from monai_stlu.handlers import IterationLrHandler
from monai_stlu.losses import SegDiceCELoss, SegDiceLoss
from monai_stlu.networks import MCNetPlus, VNet
from monai_stlu.optimizers import PolyDecay, StepDecay

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"


def parsed(*files: str, **overrides):
    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p.update({"bundle_root": str(REPO_ROOT / "bundles" / "stlu_la"), **overrides})
    return p


def softmax64(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# --- Dice forms ---------------------------------------------------------------------------------------------------
def mcnet_binary_dice64(logits, y):
    """MC-Net's / SS-Net's ``Binary_dice_loss`` of the foreground softmax over the batch: sum p + sum g, eps 1e-8."""
    p, g = softmax64(logits)[:, 1], y[:, 0].astype(np.float64)
    return 1 - (2 * (p * g).sum() + 1e-8) / (p.sum() + g.sum() + 1e-8)


def uamt_dice64(logits, y):
    """UA-MT's ``dice_loss`` of the foreground softmax: squared denominators, smoothing 1e-5."""
    p, g = softmax64(logits)[:, 1], y[:, 0].astype(np.float64)
    return 1 - (2 * (p * g).sum() + 1e-5) / ((p * p).sum() + (g * g).sum() + 1e-5)


def ce64(logits, y):
    return -(np.log(softmax64(logits)) * np.eye(2)[y[:, 0]].transpose(0, 4, 1, 2, 3)).sum(1).mean()


def uamt_dice_ce64(logits, y):
    """UA-MT's supervised loss: 0.5 (CE + dice_loss(foreground))."""
    return 0.5 * (ce64(logits, y) + uamt_dice64(logits, y))


def ssl4mis_dice_ce64(logits, y):
    """SSL4MIS's 3D scripts' supervised loss: 0.5 (CE + DiceLoss(2)), the squared Dice of each class averaged."""
    p, onehot = softmax64(logits), np.eye(2)[y[:, 0]].transpose(0, 4, 1, 2, 3)
    dice = np.mean([1 - (2 * (p[:, c] * onehot[:, c]).sum() + 1e-5)
                    / ((p[:, c] ** 2).sum() + (onehot[:, c] ** 2).sum() + 1e-5) for c in range(2)])
    return 0.5 * (ce64(logits, y) + dice)


def random_logits_and_label(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(2, 2, 6, 5, 4)), rng.integers(0, 2, (2, 1, 6, 5, 4))


def test_mcnet_binary_dice_configuration_matches_its_formula():
    logits, y = random_logits_and_label(0)
    want = mcnet_binary_dice64(logits, y)
    cfg = parsed("train.json", "methods/mcnet_plus.json")
    loss = cfg.get_parsed_content("method").sup_loss
    assert float(loss(torch.tensor(logits), torch.tensor(y))) == pytest.approx(want, rel=1e-7)
    squared = uamt_dice64(logits, y)  # UA-MT's dice_loss (STLU default)
    assert float(SegDiceLoss()(torch.tensor(logits), torch.tensor(y))) == pytest.approx(squared, rel=1e-7)
    assert abs(want - squared) > 0.05  # the two forms differ materially on the same inputs


def test_cps_supervised_loss_is_ssl4mis_dice_over_all_classes_plus_ce():
    logits, y = random_logits_and_label(1)
    cfg = parsed("train.json", "methods/cps.json")
    loss = cfg.get_parsed_content("method").sup_loss
    assert isinstance(loss, SegDiceCELoss)
    assert float(loss(torch.tensor(logits), torch.tensor(y))) == pytest.approx(ssl4mis_dice_ce64(logits, y), rel=1e-6)


@pytest.mark.parametrize("method, reference", [
    (MeanTeacherMethod, ssl4mis_dice_ce64),
    (CPSMethod, ssl4mis_dice_ce64),
    (UAMTMethod, uamt_dice_ce64),
    (MCNetPlusMethod, mcnet_binary_dice64),
])
def test_class_defaults_are_the_named_references_supervised_loss(method, reference):
    """Built from Python with no arguments, each baseline has its one reference's supervised loss, as its bundle
    override file has (the two differ from each other: Mean Teacher's Dice counts both classes, UA-MT's only the
    foreground)."""
    rng = np.random.default_rng(4)
    y = (rng.random((2, 1, 6, 5, 4)) < 0.2).astype(np.int64)  # a small foreground, as the atrium is
    logits = rng.normal(size=(2, 2, 6, 5, 4))
    logits[:, 1] += 1.5 * y[:, 0] - 0.5  # a prediction that partly finds it
    got = float(method().sup_loss(torch.tensor(logits), torch.tensor(y)))
    assert got == pytest.approx(reference(logits, y), rel=1e-6)
    others = {ssl4mis_dice_ce64, uamt_dice_ce64, mcnet_binary_dice64} - {reference}
    assert all(abs(got - other(logits, y)) > 0.03 for other in others)  # the inputs tell the forms apart
    name = {MeanTeacherMethod: "mean_teacher", CPSMethod: "cps", UAMTMethod: "ua_mt", MCNetPlusMethod: "mcnet_plus"}
    configured = parsed("train.json", f"methods/{name[method]}.json").get_parsed_content("method").sup_loss
    assert float(configured(torch.tensor(logits), torch.tensor(y))) == pytest.approx(got, rel=1e-6)


# --- networks: dropout and MC-Net+ decoders ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["supervised", "mean_teacher", "ua_mt", "cps", "bcp"])
def test_vnet_baselines_train_with_dropout(method):
    net = parsed("train.json", f"methods/{method}.json", n_filters=2).get_parsed_content("network_def")
    assert isinstance(net, VNet) and isinstance(net.dropout, torch.nn.Dropout3d) and net.dropout.p == 0.5


def test_mcnet_plus_shared_bottleneck_dropout_and_aligned_trilinear():
    torch.manual_seed(0)
    net = MCNetPlus(n_filters=2)
    assert isinstance(net.backbone.dropout, torch.nn.Dropout3d)  # on the shared bottleneck, in training
    x = torch.randn(1, 1, 32, 32, 16)
    net.train()
    deep = net.backbone.encode(x)[-1]
    zeroed = (deep.abs().sum(dim=(2, 3, 4)) == 0).float().mean()
    assert 0.0 < float(zeroed) < 1.0  # some bottleneck channels dropped
    net.eval()
    torch.testing.assert_close(net.backbone.encode(x)[-1], net.backbone.encode(x)[-1])
    up = net.extra_decoders[0][0].up[0]
    assert up.mode == "trilinear" and up.align_corners is True
    h = torch.randn(1, 2, 3, 4, 5)
    torch.testing.assert_close(up(h), F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=True))


# --- learning-rate schedules ----------------------------------------------------------------------------------------
def test_step_and_poly_factors_match_the_reference_updates():
    step = StepDecay(2500)
    for it in (0, 2499, 2500, 4999, 5000, 14999):
        assert step(it) == pytest.approx(0.1 ** (it // 2500))  # UA-MT: base_lr * 0.1 ** (iter_num // 2500)
    bcp = StepDecay(2500, start=2000)
    assert bcp(1999) == 1.0 and bcp(2000) == 1.0 and bcp(4499) == 1.0 and bcp(4500) == pytest.approx(0.1)
    poly = PolyDecay(15000)
    # SSL4MIS's loop: iteration iter_num steps with the current rate, then sets base * (1 - iter_num / max) ** 0.9
    used, lr = [], 1.0
    for iter_num in range(15002):
        used.append(lr)
        lr = (1.0 - iter_num / 15000) ** 0.9 if iter_num <= 15000 else 0.0
    for it in (0, 1, 2, 3, 7500, 14999, 15000, 15001):
        assert poly(it) == pytest.approx(used[it], abs=1e-12), it


def test_iteration_lr_handler_schedules_every_group_and_resumes():
    net_a, net_b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net_a.parameters(), lr=0.01)
    engine = Engine(lambda e, b: None)
    engine.optimizer = opt
    IterationLrHandler(StepDecay(3)).attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append([g["lr"] for g in opt.param_groups]))

    @engine.on(Events.ITERATION_STARTED)
    def add_group(e):  # a group added after construction (CPS's second network) is scheduled too
        if e.state.iteration == 1 and len(opt.param_groups) == 1:
            opt.add_param_group({"params": list(net_b.parameters()), "lr": 0.02})

    engine.run(range(7), max_epochs=1)
    assert seen[0] == [0.01] and seen[3] == pytest.approx([0.001, 0.002]) and seen[6] == pytest.approx([1e-4, 2e-4])


@pytest.mark.parametrize(
    "method,kind,start",
    [("stlu", None, 0), ("supervised", None, 0), ("mcnet_plus", None, 0), ("ua_mt", StepDecay, 0),
     ("bcp", StepDecay, 2000), ("mean_teacher", PolyDecay, 0), ("cps", PolyDecay, 0)],
)
def test_each_method_file_sets_its_reference_schedule(method, kind, start):
    files = ["train.json"] + ([f"methods/{method}.json"] if method != "stlu" else [])
    factor = parsed(*files).get_parsed_content("lr_factor")
    if kind is None:
        assert factor is None
    else:
        assert isinstance(factor, kind) and factor.start == start
        if kind is PolyDecay:
            assert factor.max_iterations == 15000


def test_bcp_batches_and_budget():
    cfg = parsed("train.json", "methods/bcp.json")
    assert cfg.get_parsed_content("labeled_batch_size") == 4 and cfg.get_parsed_content("unlabeled_batch_size") == 4
    assert cfg.get_parsed_content("total_iterations") == 17000  # 2,000 pre-training + 15,000 self-training
    assert cfg.get_parsed_content("ema_decay") == 0.99 and cfg.get("method")["ema_decay"] == "@ema_decay"
    assert "@validate::evaluator" in cfg.get("method")["validator"]  # this run's best pre-training model
    assert cfg.get_parsed_content("largest_component") is True  # BCP's test_LA.py keeps the largest component


# --- augmentation -----------------------------------------------------------------------------------------------
def test_random_flips_never_flip_z():
    cfg = parsed("train.json", patch_size=[8, 8, 6])
    flip = next(t for t in cfg.get_parsed_content("train#random_transforms") if type(t).__name__ == "OneOf")
    vol = torch.arange(8 * 8 * 6, dtype=torch.float32).reshape(1, 8, 8, 6)
    seen = set()
    for seed in range(40):
        flip.set_random_state(seed)
        out = flip({"image": vol.clone()})["image"]
        axes = tuple(a for a in range(3) if torch.equal(out, torch.flip(vol, dims=(a + 1,))))
        assert len(axes) == 1 and axes[0] in (0, 1)  # exactly one flip, along x or y
        seen.add(axes[0])
    assert seen == {0, 1}


# --- evaluation -----------------------------------------------------------------------------------------------------
def test_evaluation_is_fp32_by_default_and_lcc_is_optional():
    cfg = parsed("train.json", "evaluate.json")
    assert cfg.get_parsed_content("validate#inferer").use_amp is False
    post = cfg.get_parsed_content("validate#postprocessing")
    assert [type(t).__name__ for t in post.transforms] == ["AsDiscreted"]
    cfg = parsed("train.json", "evaluate.json", largest_component=True)
    post = cfg.get_parsed_content("validate#postprocessing")
    pred = torch.zeros(1, 12, 12, 12)
    pred[0, 1:3, 1:3, 1:3] = 1
    pred[0, 5:10, 5:10, 5:10] = 1
    logits = torch.cat([1 - pred, pred])  # what the inferer gives: channel-first probabilities
    out = post({"pred": logits})["pred"]
    assert int(out.sum()) == 125 and int(out[0, 1, 1, 1]) == 0


# --- UA-MT, BCP cube, CPS initialisation --------------------------------------------------------------------------
def test_ua_mt_teacher_passes_are_half_as_many_on_a_duplicated_batch():
    calls = []

    class Teacher(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    method = UAMTMethod(passes=8)
    method.teacher = Teacher()
    method.uncertainty(torch.randn(2, 1, 4, 4, 4))
    assert calls == [4, 4, 4, 4]  # 4 passes of the doubled unlabeled batch of 2
    calls.clear()
    method.duplicate_batch = False
    method.uncertainty(torch.randn(2, 1, 4, 4, 4))
    assert calls == [2] * 8


def test_bcp_cube_origin_excludes_the_upper_bound():
    starts = set()
    for seed in range(200):
        m = context_mask((9, 9, 9), 2 / 3, generator=torch.Generator().manual_seed(seed))
        starts.add(int((m[0, 0] == 0).nonzero()[:, 0].min()))
    assert starts == {0, 1, 2}  # cube of 6 in 9: origins 0..2 (randint(0, 3)), never 3


@pytest.mark.parametrize("scheme,std", [("kaiming", lambda fi, fo: (2 / fi) ** 0.5), ("xavier", lambda fi, fo: (2 / (fi + fo)) ** 0.5)])
def test_cps_weight_initialisations(scheme, std):
    net = init_weights(VNet(n_filters=16), scheme, seed=3)
    conv = net.encoder[3][0]  # a 2x2x2 stride-2 conv 32 -> 64
    fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert float(conv.weight.std()) == pytest.approx(std(fan_in, fan_out), rel=0.05)
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    with pytest.raises(ValueError, match="scheme"):
        init_weights(net, "orthogonal")


def test_cps_networks_start_kaiming_and_xavier():
    cfg = parsed("train.json", "methods/cps.json")
    assert cfg.get_parsed_content("method").init_a == "kaiming" and cfg.get_parsed_content("method").init_b == "xavier"
    # a documented key: the bundle's own initialisation, as every other method has it
    same = parsed("train.json", "methods/cps.json", cps_init_a="default", cps_init_b="default")
    same = same.get_parsed_content("method")
    assert same.init_a == same.init_b == "default"


@pytest.mark.parametrize("method, kept", [("bcp", True), ("dtc", True), ("ssnet", True), ("sassnet", False),
                                          ("mcnet", False), ("stlu", False)])
def test_evaluation_keeps_the_largest_component_where_the_reference_test_does(method, kept):
    """BCP's, DTC's and SS-Net's test_LA.py post-process with the largest connected component (nms=1 by default);
    SASSNet's (nms=0), MC-Net's and the STLU-Net paper's do not."""
    files = ["train.json", "evaluate.json"] + ([f"methods/{method}.json"] if method != "stlu" else [])
    assert parsed(*files).get_parsed_content("largest_component") is kept


def test_the_cpu_protocol_trains_and_evaluates_in_float32():
    """The same numbers on every CPU: amp off, whatever bf16 the machine has."""
    assert parsed("train.json", "cpu_protocol.json").get_parsed_content("amp") is False
    assert parsed("train.json", "cpu_protocol.json", "evaluate.json").get_parsed_content("amp") is False


def test_method_table_in_the_bundle_readme_names_each_schedule():
    text = (REPO_ROOT / "bundles" / "stlu_la" / "docs" / "README.md").read_text()
    for words in ("poly", "÷10 every 2,500", "4 + 4", "Binary", "largest connected component"):
        assert words in text, words
    json.loads((CONFIGS / "evaluate.json").read_text())  # still valid JSON
