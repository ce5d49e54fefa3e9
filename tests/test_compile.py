"""The trainer's ``compile`` option (``torch.compile`` of the network and the method's own networks, in place): the same
losses as eager over a few iterations, the same parameters afterwards, and checkpoints that load into a plain network.

The quick tests use the ``aot_eager`` backend (Dynamo's graph capture and AOT autograd, the same kernels as eager: the
losses agree to rounding in seconds); the long test compiles with the default Inductor backend, as a user would, which
takes about a minute on a CPU."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from bundle_utils import quick_subset
from conftest import sphere_cases
from monai_stlu.engines import MeanTeacherMethod, SemiSupervisedTrainer, STLUMethod, SupervisedMethod
from monai_stlu.networks import STLUNet, VNet

METHODS = {
    "supervised": (SupervisedMethod, lambda: VNet(n_filters=2)),
    "mean_teacher": (MeanTeacherMethod, lambda: VNet(n_filters=2)),
    "stlu": (STLUMethod, lambda: STLUNet(n_filters=2)),
}


def train(method: str, compile: bool, compile_kwargs: dict | None = None, iterations: int = 3):
    """``iterations`` steps from the same seed; returns the losses, the trainer and its method."""
    torch.manual_seed(0)
    method_cls, build = METHODS[method]
    net = build()
    labeled = DataLoader(Dataset(sphere_cases(4, size=32, seed=0)), batch_size=2)
    unlabeled = DataLoader(Dataset(sphere_cases(4, size=32, seed=1, with_label=False)), batch_size=2)
    trainer = SemiSupervisedTrainer(
        device="cpu",
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=labeled,
        unlabeled_data_loader=unlabeled,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9),
        method=method_cls(),
        compile=compile,
        compile_kwargs=compile_kwargs,
        decollate=False,
    )
    if hasattr(trainer.method, "consistency_weight"):
        trainer.method.consistency_weight = 0.5  # a consistency term that counts, without a ramp handler
    if hasattr(trainer.method, "gamma"):
        trainer.method.gamma = 0.5
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.run()
    return losses, trainer


def assert_same_as_eager(method: str, compile_kwargs: dict, rtol: float, update_rtol: float) -> None:
    """Losses within ``rtol``; the parameters' change over the run within ``update_rtol`` of eager's, in norm."""
    eager, plain = train(method, compile=False)
    compiled, trainer = train(method, compile=True, compile_kwargs=compile_kwargs)
    assert len(compiled) == len(eager) == 3
    assert compiled == pytest.approx(eager, rel=rtol), (compiled, eager)
    # the compiled modules keep their type and state_dict keys: a checkpoint loads into a plain network as before
    state = trainer.network.state_dict()
    assert list(state) == list(plain.network.state_dict())
    torch.manual_seed(0)
    fresh = METHODS[method][1]()  # the weights both runs started from
    start = {k: v.clone() for k, v in fresh.state_dict().items()}
    fresh.load_state_dict(state)
    # the same updates: the compiled run's change of every parameter against the eager run's, in aggregate
    names = [n for n, _ in plain.network.named_parameters()]
    step_eager = torch.cat([(plain.network.state_dict()[n] - start[n]).flatten() for n in names])
    step_compiled = torch.cat([(state[n] - start[n]).flatten() for n in names])
    assert step_eager.norm() > 0
    assert (step_compiled - step_eager).norm() <= update_rtol * step_eager.norm(), (
        float((step_compiled - step_eager).norm() / step_eager.norm()))
    assert trainer.compiled_modules == [trainer.network, *trainer.method.compiled_modules()]
    assert plain.compiled_modules == []
    for module in trainer.compiled_modules:  # the teacher was copied before compiling: its own module
        assert getattr(module, "_compiled_call_impl", None) is not None
    assert len({id(m) for m in trainer.compiled_modules}) == len(trainer.compiled_modules)


@pytest.mark.parametrize("method", quick_subset(sorted(METHODS), {"stlu"}))  # the others: long suite
def test_compiled_training_equals_eager(method):
    assert_same_as_eager(method, {"backend": "aot_eager"}, rtol=1e-4, update_rtol=1e-3)


def test_the_entry_points_other_methods_call_are_compiled_too():
    """DTC calls ``forward_sdf``, which ``nn.Module.compile`` (``forward`` only) would leave eager: the trainer
    compiles it as well, and the compiled run's losses are eager's."""
    from monai_stlu.engines import DTCMethod
    from monai_stlu.engines.semi_supervised_trainer import compile_entry_points
    from monai_stlu.networks.nets import SDFVNet

    METHODS["dtc"] = (DTCMethod, lambda: SDFVNet(n_filters=2))
    try:
        eager, _ = train("dtc", compile=False)
        torch._dynamo.reset()
        compiled, trainer = train("dtc", compile=True, compile_kwargs={"backend": "aot_eager"})
    finally:
        del METHODS["dtc"]
    assert compiled == pytest.approx(eager, rel=1e-4)
    entry = trainer.network.__dict__["forward_sdf"]
    assert getattr(entry, "_torchdynamo_orig_callable", None) is not None  # a torch.compile wrapper
    assert list(trainer.network.state_dict()) == list(SDFVNet(n_filters=2).state_dict())
    assert compile_entry_points(VNet(n_filters=2), {"backend": "aot_eager"}) == []  # a network with forward only


def test_the_teacher_and_second_networks_are_compiled_and_losses_are_not():
    _, trainer = train("mean_teacher", compile=False, iterations=1)
    modules = trainer.method.compiled_modules()
    assert [type(m).__name__ for m in modules] == ["VNet"] and modules[0] is trainer.method.teacher
    _, stlu = train("stlu", compile=False, iterations=1)
    assert stlu.method.compiled_modules() == []  # STLU-Net's losses have no parameters: only the network compiles


@pytest.mark.long
@pytest.mark.parametrize("method", ["supervised", "stlu"])
def test_inductor_compiled_training_equals_eager(method):
    # Inductor draws random numbers with its own generator unless told to use eager's: STLU-Net's channel dropout
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        # Inductor fuses and reorders float32 sums: losses agree to 1e-3; STLU-Net's argmax pseudo-labels flip on
        # voxels where its two streams tie to rounding, so its updates differ by about 1 % after three steps
        assert_same_as_eager(method, {}, rtol=1e-3, update_rtol=0.05)


@pytest.mark.slow
@pytest.mark.long  # a benchmark's check, with the protocol checks; compiled training itself: the quick tests above
def test_speed_benchmark_times_the_compiled_trainer_against_the_eager_bare_step(tmp_path):
    import json

    from benchmarks import gpu_speed

    _, trainer = train("mean_teacher", compile=True, compile_kwargs={"backend": "aot_eager"}, iterations=1)
    modules = trainer.compiled_modules
    compiled = [m._compiled_call_impl for m in modules]
    with gpu_speed.eager(trainer):
        assert all(m._compiled_call_impl is None for m in modules)  # the bare loop's network calls run eagerly
    assert [m._compiled_call_impl for m in modules] == compiled

    out = tmp_path / "speed.json"
    gpu_speed.main(["--tiny", "--methods", "supervised", "--json", str(out), "--override", "compile", "true",
                    "compile_kwargs", '{"backend": "aot_eager"}'])
    row = json.loads(out.read_text())["methods"][0]
    assert row["compiled"] is True and row["bare_s_per_iteration"] > 0 and row["step_tflop"] > 0


def test_cuda_graph_mode_starts_a_step_per_iteration_and_keeps_its_own_prediction(monkeypatch):
    """With CUDA graphs (``mode`` reduce-overhead/max-autotune) a graph's outputs are overwritten by its next replay,
    and DAN and SASSNet run the network again (their discriminator step) before the metrics read the prediction: each
    iteration marks a new step and reports a copy of its prediction, not the method's tensor. (The mechanism, on the
    CPU; the GPU run is the cuda-marked test below.)"""
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    returned = []
    orig = SupervisedMethod.forward

    def forward(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        returned.append(out["pred"])
        return out

    monkeypatch.setattr(SupervisedMethod, "forward", forward)
    torch.manual_seed(0)
    net = VNet(n_filters=2)
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, epoch_length=2,
        train_data_loader=DataLoader(Dataset(sphere_cases(4, size=32, seed=0)), batch_size=2),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=SupervisedMethod(), decollate=False,
        compile=True, compile_kwargs={"backend": "aot_eager"},
    )
    assert trainer.cuda_graphs is False and not marks
    trainer.cuda_graphs = True  # as compile_kwargs {"mode": "reduce-overhead"} sets it
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output["pred"]))
    trainer.run()
    assert len(marks) == 2 and len(seen) == 2
    for ours, theirs in zip(seen, returned):
        assert ours.data_ptr() != theirs.data_ptr() and torch.equal(ours, theirs.detach())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dan_trains_with_cuda_graphs():
    """DAN's discriminator step runs the compiled network again within the iteration: with reduce-overhead the
    iteration completes and its metrics read a live prediction."""
    from monai_stlu.engines import DANMethod

    torch.manual_seed(0)
    net = VNet(n_filters=2).cuda()
    trainer = SemiSupervisedTrainer(
        device="cuda", max_epochs=1, epoch_length=3,
        train_data_loader=DataLoader(Dataset(sphere_cases(4, size=32, seed=0)), batch_size=2),
        unlabeled_data_loader=DataLoader(Dataset(sphere_cases(4, size=32, seed=1, with_label=False)), batch_size=2),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=DANMethod(), decollate=False,
        compile=True, compile_kwargs={"mode": "reduce-overhead"},
    )
    sums = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sums.append(float(e.state.output["pred"].sum())))
    trainer.run()
    assert trainer.cuda_graphs and len(sums) == 3 and all(s == s for s in sums)
