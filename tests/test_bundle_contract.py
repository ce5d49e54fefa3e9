"""The MONAI bundle contract and the run-folder rules, on synthetic LA-layout data (no download, no shared data):
methods one after another in one bundle folder, a checkpoint that does not fit, ``--num_val 0``, MONAI's
``check_properties`` for the train and infer workflows, and ``--tracking mlflow``."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bundle_utils import config_list, run_bundle
from conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "bundles" / "stlu_la" / "configs"
QUICK = ["--num_val", "1", "--max_iterations", "4", "--val_interval", "2", "--progress", "false"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from monai_stlu.data import write_synthetic_la

    return write_synthetic_la(str(tmp_path_factory.mktemp("synth")), num_train=12, num_test=2, shape=(64, 64, 48))


def train(root, synth, *configs, extra=(), check=True):
    files = ["train.json", "quick.json", *configs]
    return run_bundle("run", "training", "--config_file", config_list("stlu_la", *files), "--dataset_dir", synth,
                      "--bundle_root", str(root), *QUICK, *extra, check=check)


def mismatch_line(log: str) -> str:
    """The one-sentence error the run stopped with."""
    return next(x for x in log.splitlines() if x.startswith("monai_stlu.handlers.checkpoint_fit.CheckpointMismatchError:"))


@pytest.mark.long
def test_methods_one_after_another_keep_their_own_models(synth, tmp_path):
    train(tmp_path, synth)  # STLU-Net: the bundle's own model, models/model.pt
    stlu_model = (tmp_path / "models" / "model.pt").read_bytes()
    proc = train(tmp_path, synth, "methods/supervised.json")  # starts afresh in its own folder, no key dump
    assert "resumed from" not in proc.stdout + proc.stderr
    assert (tmp_path / "models" / "model.pt").read_bytes() == stlu_model  # STLU's model untouched
    sup = torch.load(tmp_path / "models" / "supervised" / "model.pt", weights_only=True)
    assert "head.weight" in sup and not any(k.startswith("backbone.") for k in sup)  # a plain V-Net
    # a second STLU run resumes STLU's own checkpoint
    proc = train(tmp_path, synth, extra=["--max_iterations", "6"])
    log = proc.stdout + proc.stderr
    assert "resumed from" in log and os.path.join("models", "checkpoint_epoch=2.pt") in log
    # evaluation and export pick the method's own model
    run_bundle("run", "--config_file", config_list("stlu_la", "train.json", "quick.json", "methods/supervised.json",
                                                    "evaluate.json"),
               "--dataset_dir", synth, "--bundle_root", str(tmp_path), "--num_eval_cases", "1", "--progress", "false")
    assert (tmp_path / "eval" / "supervised" / "metrics.csv").is_file()
    assert not (tmp_path / "eval" / "metrics.csv").exists()
    ts = tmp_path / "sup.ts"
    run_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--bundle_root", str(tmp_path),
               "--ckpt_file", str(tmp_path / "models" / "supervised" / "model.pt"),
               "--meta_file", str(CONFIGS / "metadata.json"),
               "--config_file", config_list("stlu_la", "inference.json", "methods/supervised.json"), "--n_filters", "8")
    assert torch.jit.load(str(ts))(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


@pytest.mark.long  # the quick suite keeps the evaluation-side refusal (next test): one bundle run fewer than four
def test_a_checkpoint_that_does_not_fit_is_refused_in_one_sentence(synth, tmp_path):
    train(tmp_path, synth)
    proc = train(tmp_path, synth, extra=["--n_filters", "4"], check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Missing key" not in err and "Unexpected key" not in err  # no state-dict dump
    line = mismatch_line(err)
    assert str(tmp_path / "models" / "checkpoint_epoch=2.pt") in line
    assert "STLUMethod" in line and "n_filters 8" in line and "n_filters 4" in line
    assert "--output_subdir" in line and "--resume false" in line
    # the second way out works as written: lowercase 'false' from the command line
    ok = train(tmp_path, synth, extra=["--n_filters", "4", "--resume", "false"])
    assert "resumed from" not in ok.stdout + ok.stderr
    # another method forced into the same folder is refused by name too
    proc = train(tmp_path, synth, "methods/mean_teacher.json", extra=["--output_subdir", ""], check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "MeanTeacherMethod" in err and "STLUMethod" in err


def test_evaluating_a_model_of_another_network_is_refused(synth, tmp_path):
    from monai_stlu.networks import VNet

    # what a supervised run writes (a plain V-Net's state dict, told apart by its weights) where STLU-Net's model goes;
    # written here rather than trained: one bundle run fewer (training it is in test_methods_one_after_another)
    (tmp_path / "models").mkdir()
    torch.save(VNet(n_filters=8).state_dict(), tmp_path / "models" / "model.pt")
    proc = run_bundle("run", "--config_file", config_list("stlu_la", "train.json", "quick.json", "evaluate.json"),
                      "--dataset_dir", synth, "--bundle_root", str(tmp_path), "--num_eval_cases", "1", check=False)
    assert proc.returncode != 0
    line = mismatch_line(proc.stdout + proc.stderr)
    assert "VNet (n_filters 8" in line and "STLUNet (n_filters 8" in line and "model.pt" in line


def test_missing_model_says_how_to_make_it(synth, tmp_path):
    proc = run_bundle("run", "--config_file", config_list("stlu_la", "train.json", "quick.json", "evaluate.json"),
                      "--dataset_dir", synth, "--bundle_root", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert f"{tmp_path}/models/model.pt: no trained model there" in proc.stdout + proc.stderr


@pytest.mark.long
def test_num_val_0_saves_the_final_network(synth, tmp_path):
    proc = train(tmp_path, synth, extra=["--num_val", "0"])
    log = proc.stdout + proc.stderr
    assert "saved final checkpoint" in log and "val_mean_dice" not in log
    model = tmp_path / "models" / "model.pt"
    sd = torch.load(model, weights_only=True)
    ckpt = torch.load(tmp_path / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    for k, v in ckpt["network"].items():  # the final network is the one of the last checkpoint
        torch.testing.assert_close(sd[k], v)
    run_bundle("run", "--config_file", config_list("stlu_la", "train.json", "quick.json", "evaluate.json"),
               "--dataset_dir", synth, "--bundle_root", str(tmp_path), "--num_eval_cases", "1", "--progress", "false")
    assert (tmp_path / "eval" / "metrics.csv").is_file()


@pytest.mark.parametrize("method", [None, "supervised", "ua_mt", "bcp"])
def test_monai_check_properties(method, synth, tmp_path):
    from monai.bundle import ConfigWorkflow

    extra = [str(CONFIGS / "methods" / f"{method}.json")] if method else []
    # BCP draws unlabeled batches of 4: 8 labeled + 1 validation case of 12 would leave 3, refused before training
    train_args = {"num_val": 1, **({"num_labeled": 4} if method == "bcp" else {})}
    for config, kind, args in (("train.json", "train", train_args), ("inference.json", "infer", {"load_pretrain": False})):
        wf = ConfigWorkflow(
            config_file=[str(CONFIGS / config), *extra], meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"), workflow_type=kind, bundle_root=str(tmp_path),
            dataset_dir=synth, **args,
        )
        wf.initialize()
        assert wf.check_properties() in (None, []), (config, wf.check_properties())
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(CONFIGS / "train.json"), *extra])
    handlers = p["train"]["handlers"]
    assert isinstance(handlers, list) and all(isinstance(h, dict) and "_target_" in h for h in handlers)
    p["bundle_root"], p["dataset_dir"] = str(tmp_path), synth
    for key in ("train#inferer", "train#key_metric", "train#handlers"):
        assert p.get_parsed_content(key) is not None
    # the training Dice needs no per-case post-processing (an optional property less: no train#postprocessing); the
    # output stays decollated as MONAI's trainers leave it, which MONAI's --tracking mlflow settings expect
    assert "decollate" not in p["train"]["trainer"] and "postprocessing" not in p["train"]


@pytest.mark.long
def test_override_file_edits_a_handler_by_id(synth, tmp_path):
    """What MONAI Label and MONAI's bundle properties do: edit one handler of the list by its id."""
    override = tmp_path / "edit.json"
    override.write_text(json.dumps({"train#handlers#2#iteration_log": "$lambda engine, event: event % 2 == 0",
                                    "train#handlers#0#end_value": 0.25}))
    proc = run_bundle("run", "training", "--config_file",
                      config_list("stlu_la", "train.json", "quick.json")[:-1] + f",'{override}']",
                      "--dataset_dir", synth, "--bundle_root", str(tmp_path / "b"), *QUICK, "--log_interval", "1",
                      "--ramp_iterations", "150")  # the ramp at its first step throughout (a short run scales it)
    log = proc.stdout + proc.stderr
    gammas = [float(x.split("gamma: ")[1].split()[0]) for x in log.splitlines() if "gamma: " in x]
    assert len(gammas) == 2 and gammas[0] == pytest.approx(0.25 * 2.718281828 ** -5, abs=5e-5)  # 4 decimals logged


@pytest.mark.long
def test_mlflow_tracking_reaches_a_local_store(synth, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"  # a local store (MLflow 3 has no plain file store)
    train(tmp_path, synth, extra=["--tracking", "mlflow", "--tracking_uri", uri, "--experiment_name", "stlu_test"])
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("stlu_test")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    # named by method, labels and seed; the run's settings as parameters
    assert run.info.run_name == "STLUMethod_8labeled_seed1337", run.info.run_name
    params = run.data.params
    assert {k: params.get(k) for k in ("bundle", "method", "network", "num_labeled", "seed", "n_filters")} == {
        "bundle": "stlu_la", "method": "STLUMethod", "network": "STLUNet", "num_labeled": "8", "seed": "1337",
        "n_filters": "8"}, params
    assert params["patch_size"] == "[64, 64, 48]" and params["commit"] and params["max_epochs"] == "2"
    metrics = run.data.metrics
    assert "val_mean_dice" in metrics and 0.0 <= metrics["val_mean_dice"] <= 1.0
    assert any(k.startswith("Loss") or k in ("loss", "train_loss") for k in metrics), sorted(metrics)
    history = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert len(history) == 2  # one per validation (every 2 of 4 iterations)
    # the evaluation of the trained model is tracked too: a second run of the experiment with the test Dice
    run_bundle("run", "--config_file", config_list("stlu_la", "train.json", "quick.json", "evaluate.json"),
               "--dataset_dir", synth, "--bundle_root", str(tmp_path), "--progress", "false", "--tracking", "mlflow",
               "--tracking_uri", uri, "--experiment_name", "stlu_test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    assert sorted(r.info.run_name for r in runs) == ["STLUMethod_8labeled_seed1337", "STLUMethod_8labeled_seed1337_test"]
    test_dice = [r.data.metrics["test_mean_dice"] for r in runs if "test_mean_dice" in r.data.metrics]
    assert len(test_dice) == 1 and 0.0 <= test_dice[0] <= 1.0
