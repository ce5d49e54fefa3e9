"""Every method's schedule follows its own reference at the same fraction of any run: the consistency weight and the
learning rate at iteration i of a B-iteration run equal the reference's at iteration i x budget / B, computed here
from the references' own formulas and constants (read from their code: the files named below)."""

from __future__ import annotations

import math

import pytest

from conftest import REPO_ROOT
from monai_stlu.bundle.schedules import schedule_points, schedule_table
from monai_stlu.handlers import RampUpHandler

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"

# method: (reference file, its max_iterations, consistency weight, consistency_rampup, weight computed after the
# counter's increment, LR rule: None constant / ("step", 2500) base * 0.1 ** (iter // 2500) / ("step", 2500, 1) the
# same divisions one iteration later (MCF sets them after the iteration counted 2,500, before its increment) /
# ("poly",) base * (1 - iter / max) ** 0.9, pre-training iterations)
REFERENCES = {
    "stlu": ("STLU-Net paper", 15000, 1.0, 40, 0, None, None),
    "supervised": ("STLU-Net recipe", 15000, None, None, 0, None, None),
    "supervised_ssl4mis": ("SSL4MIS train_fully_supervised_3D.py", 30000, None, None, 0, ("poly",), None),
    "supervised_uamt": ("UA-MT train_LA.py", 6000, None, None, 0, ("step", 2500), None),
    "supervised_ssnet": ("SS-Net train_ss_3d.py", 15000, None, None, 0, ("step", 2500), None),
    "mean_teacher": ("SSL4MIS train_mean_teacher_3D.py", 30000, 0.1, 200, 0, ("poly",), None),
    "cps": ("SSL4MIS train_cross_pseudo_supervision_3D.py", 30000, 0.1, 200, 0, ("poly",), None),
    "ict": ("SSL4MIS train_interpolation_consistency_training_3D.py", 30000, 0.1, 200, 0, ("poly",), None),
    "dan": ("SSL4MIS train_adversarial_network_3D.py", 30000, 0.1, 200, 0, ("poly",), None),
    "cct": ("SSL4MIS train_cross_consistency_training_2D.py", 30000, 0.1, 200, 0, ("poly",), None),
    "urpc": ("SSL4MIS train_uncertainty_rectified_pyramid_consistency_3D.py", 60000, 0.1, 400, 0, ("poly",), None),
    "ua_mt": ("UA-MT train_LA_meanteacher_certainty_unlabel.py", 6000, 0.1, 40, 0, ("step", 2500), None),
    "dtc": ("DTC train_la_dtc.py", 6000, 1.0, 40, 0, ("step", 2500), None),
    "sassnet": ("SASSnet train_gan_sdfloss.py", 6000, 0.01, 40, 0, ("step", 2500), None),
    "mcnet": ("MC-Net train_mcnet_3d.py", 15000, 1.0, 40, 0, None, None),
    "mcnet_plus": ("MC-Net train_mcnet_3d.py", 15000, 1.0, 40, 0, None, None),
    "ssnet": ("SS-Net train_ss_3d.py", 15000, 1.0, 40, 1, ("step", 2500), None),
    "bcp": ("BCP LA_BCP_train.py", 15000, None, None, 0, ("step", 2500), 2000),
    "ml": ("ML train_Mutual_Reliable.py", 15000, 1.0, 40, 1, None, None),
    "mcf": ("MCF train_MCF.py", 6000, 0.1, 40, 0, ("step", 2500, 1), None),
    # TraCoCo ramps every iteration (step 1) over 40 epochs of 8 labeled cases / 2 per batch = 160 iterations, to 0.3
    # with 8 labeled cases; its poly rate is computed before each step from the count after the increment
    "tracoco": ("TraCoCo Code/VnetLA/train.py", 9000, 0.3, 160, 1, ("poly", "ahead"), None, 1),
}


def reference_weight(weight: float, rampup: float, iteration: float, step: float = 150) -> float:
    """``consistency * ramps.sigmoid_rampup(iter_num // 150, consistency_rampup)``, the references' form (``step``
    1: TraCoCo's ramp of every iteration)."""
    current = min(max(iteration // step, 0.0), rampup)
    return weight * math.exp(-5.0 * (1.0 - current / rampup) ** 2)


def reference_lr_factor(rule, iteration: float, budget: int, done: float) -> float:
    """The LR factor the reference trains its 0-based ``iteration`` with: the step rule is set after the iteration
    that reaches a multiple of 2,500, so it applies from that index on; the poly rule is computed after each step from
    the count before it, so iteration r trains with the value of r - 1 (``done``: that count, scaled)."""
    if rule is None:
        return 1.0
    if rule == ("poly", "ahead"):  # TraCoCo: lr = base (1 - iter_num / max) ** 0.9 with iter_num = iteration + 1
        return (1.0 - (iteration + 1) / budget) ** 0.9
    if rule[0] == "step":
        delay = rule[2] if len(rule) > 2 else 0
        return 0.1 ** (max(iteration - delay, 0) // rule[1])
    return (1.0 - done / budget) ** 0.9


def parsed(method: str, budget: int):
    from monai.bundle import ConfigParser

    files = [str(CONFIGS / "train.json")] + ([str(CONFIGS / "methods" / f"{method}.json")] if method != "stlu" else [])
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"max_iterations": budget, "bundle_root": str(REPO_ROOT / "bundles" / "stlu_la")})
    return parser


def test_every_method_file_names_its_reference_budget():
    for method, (_, budget, *_rest) in REFERENCES.items():
        assert parsed(method, 1000).get_parsed_content("reference_iterations") == budget, method
    assert set(REFERENCES) == {p.stem for p in (CONFIGS / "methods").glob("*.json")}


@pytest.mark.parametrize("budget", [1000, 3000])
@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_the_schedule_is_the_references_at_the_same_fraction(method, budget):
    """At 40 points through a run of ``budget`` iterations: the ramped weight, the LR factor and BCP's pre-training are
    the reference's at the matching iteration of its own budget."""
    _, ref_budget, weight, rampup, after_increment, lr_rule, pretrain, *step = REFERENCES[method]
    cfg = parsed(method, budget)
    scale = ref_budget / budget
    if pretrain is not None:
        assert cfg.get_parsed_content("bcp_pretrain_iterations") == round(pretrain / scale)
    start = cfg.get_parsed_content("bcp_pretrain_iterations") if pretrain is not None else 0
    ramp = RampUpHandler(None, "w", cfg.get_parsed_content("unsup_weight"), 0.0, cfg.get_parsed_content("ramp_length"),
                         cfg.get_parsed_content("ramp_iterations"), cfg.get_parsed_content("ramp_offset"))
    factor = cfg.get_parsed_content("lr_factor")
    for i in range(0, budget, budget // 40):
        ref_i = i * scale  # the reference's iteration at the same fraction (a whole number for these budgets)
        if weight is not None:
            # the reference counts its increment in its own iterations: one of them, scaled, is `after_increment`
            expected = reference_weight(weight, rampup, (i + after_increment) * scale, *step)
            assert ramp.value(i) == pytest.approx(expected, rel=1e-12), (method, i)
        if factor is None:
            assert lr_rule is None
        else:
            expected = reference_lr_factor(lr_rule, ref_i, ref_budget, max(i - 1, 0) * scale)
            assert factor(start + i) == pytest.approx(expected, rel=1e-9, abs=1e-12), (method, i)


# each semi-supervised method's recipe (LR rule and supervised loss) and the supervised-only run that shares it, as
# read from the references: SSL4MIS's 3D scripts train with poly LR and 0.5 (CE + Dice of both classes) as its
# train_fully_supervised_3D.py; UA-MT, DTC, SASSNet (and BCP, MCF, whose step rule is the nearest) with steps
# of / 10, as UA-MT's train_LA.py; SS-Net with its own steps of / 10 and its Binary_dice_loss alone; STLU-Net, MC-Net
# and MC-Net+ with a constant LR and a foreground Dice
MATCHED = {
    "supervised_ssl4mis": ("mean_teacher", "cps", "ict", "dan", "cct", "urpc", "tracoco"),
    "supervised_uamt": ("ua_mt", "dtc", "sassnet", "bcp", "mcf"),
    "supervised_ssnet": ("ssnet",),
    "supervised": ("stlu", "mcnet", "mcnet_plus", "ml"),
}


@pytest.mark.parametrize("recipe", sorted(MATCHED))
def test_every_method_names_the_supervised_run_of_its_recipe(recipe):
    """A method's gain is measured against the supervised-only run with its LR rule (and, where the reference's
    loss is of the same family, its supervised loss)."""
    from monai_stlu.losses import SegDiceCELoss, SegDiceLoss
    from monai_stlu.optimizers import PolyDecay, StepDecay

    sup = parsed(recipe, 3000)
    assert sup.get_parsed_content("matched_supervised") == recipe
    assert sup.get_parsed_content("unlabeled_data_loader") is None
    loss = sup.get_parsed_content("method#sup_loss")
    kind = {"supervised": type(None), "supervised_ssl4mis": PolyDecay, "supervised_uamt": StepDecay,
            "supervised_ssnet": StepDecay}[recipe]
    assert type(sup.get_parsed_content("lr_factor")) is kind
    if recipe == "supervised_ssl4mis":  # 0.5 CE + 0.5 Dice over both classes
        assert isinstance(loss, SegDiceCELoss) and loss.dice.include_background and loss.lambda_ce == 0.5
    elif recipe == "supervised_uamt":  # 0.5 CE + 0.5 foreground Dice
        assert isinstance(loss, SegDiceCELoss) and not loss.dice.include_background and loss.lambda_dice == 0.5
    elif recipe == "supervised_ssnet":  # SS-Net's Binary_dice_loss: the loss its method file trains the labeled with
        ssnet = parsed("ssnet", 3000).get_parsed_content("method#sup_loss")
        assert type(loss) is SegDiceLoss and not loss.include_background and not loss.squared_pred
        assert (loss.smooth_nr, loss.smooth_dr) == (ssnet.smooth_nr, ssnet.smooth_dr) == (1e-8, 1e-8)
        assert ssnet.squared_pred is False
    else:  # the foreground Dice STLU-Net's own supervised part uses
        assert type(loss) is SegDiceLoss and not loss.include_background
    for method in MATCHED[recipe]:
        cfg = parsed(method, 3000)
        assert cfg.get_parsed_content("matched_supervised") == recipe, method
        assert type(cfg.get_parsed_content("lr_factor")) is kind, method
    assert {m for ms in MATCHED.values() for m in ms} | set(MATCHED) == set(REFERENCES)


def test_the_bundle_readme_table_is_the_one_the_configs_give():
    """The README's schedule table is generated from the configs, and says what the references do at their budgets."""
    text = (REPO_ROOT / "bundles" / "stlu_la" / "docs" / "README.md").read_text()
    start, end = "written by monai_stlu.bundle.schedules.schedule_table -->\n", "<!-- end of schedule table -->"
    assert text.split(start, 1)[1].split(end, 1)[0] == schedule_table(), "regenerate the table (see its heading)"
    assert schedule_points("dtc", 6000)["lr_steps"] == [2500, 5000]
    assert schedule_points("mean_teacher", 30000)["ramp_end"] == 30000
    assert schedule_points("ssnet", 15000)["ramp_end"] == 6000 - 1  # counted after SS-Net's increment
    assert schedule_points("mean_teacher", 1000)["ramp_end"] == 1000
    assert schedule_points("bcp", 1000)["pretrain"] == 133
