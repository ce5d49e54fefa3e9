"""From the raw releases to a trained bundle and back to the raw scans: synthetic Pancreas-CT DICOM series and
BraTS-2019 NIfTI folders are converted, trained on, exported (ONNX against onnxruntime), and a raw scan sent to
inference gets its segmentation on its own grid; the label-free geometry steps undone on the prediction are
checked against the converter's own arrays."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import ITKReader, MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImage, LoadImaged

from bundle_utils import config_list, run_bundle
from monai_stlu.data import RawGeometryd, convert_brats, convert_pancreas, find_images
from test_converters import write_dicom_series

SMALL = ["--n_filters", "4", "--progress", "false", "--patch_size", "[32, 32, 32]", "--amp", "false"]  # inference keys
TRAIN_SMALL = SMALL + ["--val_stride", "[16, 16, 16]"]


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grid = np.indices(shape).astype(np.float64)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius**2


def _prediction(folder) -> nib.Nifti1Image:
    files = sorted(folder.rglob("*_seg.nii.gz"))
    assert len(files) == 1, files
    return nib.load(str(files[0]))


def test_raw_geometry_round_trip_puts_the_prediction_back_on_the_input_grid(tmp_path):
    """An anisotropic, oblique-origin NIfTI resampled, reordered and cropped, then a 'prediction' (the ball mask and
    its complement) inverted by Invertd: same shape and affine as the input, the ball where it was."""
    shape, spacing = (40, 36, 18), (0.8, 0.9, 2.0)
    ball = _ball(shape, (18, 20, 9), 6.5, spacing)
    image = np.where(_ball(shape, (20, 18, 9), 13.0, spacing), 50.0 + 100.0 * ball, 0.0).astype(np.float32)
    affine = np.diag([-0.8, -0.9, 2.0, 1.0])
    affine[:3, 3] = [12.0, -4.0, 30.0]
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "scan.nii.gz"))
    pre = Compose([LoadImaged("image", reader="ITKReader"), EnsureChannelFirstd("image"),
                   RawGeometryd("image", spacing=(1.0, 1.0, 1.0), axes=(2, 1, 0), crop_foreground=True)])
    d = pre({"image": str(tmp_path / "scan.nii.gz")})
    x = d["image"]
    assert all(24 <= n <= 29 for n in x.shape[1:]), x.shape  # the 26 mm brain's box at 1 mm (36 x 32 x 32 before)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(x.affine)[:3, :3], axis=0), [1, 1, 1], atol=1e-6)  # 1 mm
    mask = (x > 100).float()
    d["pred"] = MetaTensor(torch.cat([1 - mask, mask]).as_tensor(), meta=x.meta)  # a network output has no record
    out = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d)["pred"]
    loaded = LoadImage(reader=ITKReader(), image_only=True)(str(tmp_path / "scan.nii.gz"))
    assert tuple(out.shape[1:]) == shape
    np.testing.assert_allclose(np.asarray(out.affine), np.asarray(loaded.affine), atol=1e-5)
    back = out.argmax(0).numpy().astype(bool)
    dice = 2 * (back & ball).sum() / (back.sum() + ball.sum())
    assert dice > 0.9, dice
    h5 = MetaTensor(torch.ones(1, 8, 8, 8), meta={"filename_or_obj": "/d/case.h5"})
    assert RawGeometryd("image", spacing=(2.0, 2.0, 2.0), axes=(2, 1, 0))({"image": h5})["image"].shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="not a permutation"):
        RawGeometryd("image", axes=(0, 0, 1))


def _brats_case(folder, name, rng, modalities=("flair", "t2")):
    """A BraTS-like case: a skull-stripped 'brain' (zero outside), a tumour brighter in FLAIR, darker in T1 (seg
    labels 1, 2, 4), in BraTS's LPS-like storage (negative x/y axes)."""
    shape = (48, 44, 36)
    brain = _ball(shape, (24, 22, 18), 16.0)
    tumour = _ball(shape, (20 + rng.randint(0, 6), 20, 16), 6.0)
    smooth = np.indices(shape).sum(0) / 10.0
    contrast = {"flair": 300.0, "t1": -100.0, "t1ce": 200.0, "t2": 150.0}
    case = folder / name
    case.mkdir(parents=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    for m in modalities:
        image = np.where(brain, 400.0 + 20.0 * smooth + contrast[m] * tumour + rng.normal(0, 5, shape), 0.0)
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(case / f"{name}_{m}.nii.gz"))
    seg = np.where(tumour, np.where(np.indices(shape)[0] % 2, 2, 4), 0)
    seg[tumour & (np.indices(shape)[2] == 16)] = 1
    nib.save(nib.Nifti1Image(seg.astype(np.uint8), affine), str(case / f"{name}_seg.nii.gz"))


@pytest.mark.long  # the quick suite keeps the LA raw scan (test_raw_intensity.py)
def test_brats_raw_scan_gets_the_prediction_of_its_converted_h5(tmp_path):
    """One network (random, no checkpoint) run on a raw FLAIR and on the h5 the converter made of it: the
    prediction written on the raw grid, moved as the converter moves the image (transpose, brain box), equals
    the h5's prediction; both bundle inference paths therefore see the same input."""
    raw = tmp_path / "raw" / "HGG"
    _brats_case(raw, "BraTS19_T_1", np.random.RandomState(0), modalities=("flair",))
    convert_brats(str(tmp_path / "raw"), str(tmp_path / "BraTS"))
    h5_path = tmp_path / "BraTS" / "data" / "BraTS19_T_1.h5"
    common = ["--bundle_root", str(tmp_path), "--load_pretrain", "false", "--eval_stride", "[16, 16, 16]", *SMALL]
    preds = {}
    for name, source in (("h5", h5_path), ("raw", raw)):
        run_bundle("run", "--config_file", config_list("stlu_brats", "inference.json"), *common,
                   "--input_dir", str(source), "--output_dir", str(tmp_path / f"out_{name}"))
        preds[name] = _prediction(tmp_path / f"out_{name}")
    flair = nib.load(str(raw / "BraTS19_T_1" / "BraTS19_T_1_flair.nii.gz"))
    assert preds["raw"].shape == flair.shape
    np.testing.assert_allclose(preds["raw"].affine, flair.affine, atol=1e-5)  # written in the input's space
    # the converter's geometry (SimpleITK order, brain box with its upper bound exclusive) applied to the raw one
    zyx = np.asanyarray(preds["raw"].dataobj).transpose(2, 1, 0)
    nz = np.nonzero(np.asanyarray(flair.dataobj).transpose(2, 1, 0))
    moved = zyx[tuple(slice(int(a.min()), int(a.max())) for a in nz)]
    h5_pred = np.asanyarray(preds["h5"].dataobj)
    with h5py.File(h5_path) as f:
        assert h5_pred.shape == f["image"].shape == moved.shape
    assert 0.001 < h5_pred.mean() < 0.999  # a random network still marks some voxels, not all
    assert (moved != h5_pred).mean() < 1e-3, (moved != h5_pred).mean()


@pytest.fixture(scope="module")
def pancreas_data(tmp_path_factory):
    """Five synthetic CT cases as DICOM series (0.8 x 0.8 x 2 mm, HU) with NIH-style label NIfTIs, converted."""
    root = tmp_path_factory.mktemp("pancreas")
    rng = np.random.RandomState(0)
    for i in range(1, 6):
        hu = np.full((64, 64, 24), -100.0) + rng.normal(0, 10, (64, 64, 24))  # soft tissue
        organ = _ball(hu.shape, (28 + 2 * i, 30, 12), 9.0, (0.8, 0.8, 2.0))
        hu[organ] = 120.0
        hu[:, :6] = -1000.0  # air
        series = root / "Pancreas-CT" / f"PANCREAS_{i:04d}" / "study" / "series"
        write_dicom_series(series, hu)
        affine = np.asarray(LoadImage(reader=ITKReader(), image_only=True)(str(series)).affine)
        (root / "labels").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(organ.astype(np.uint8), affine), str(root / "labels" / f"label{i:04d}.nii.gz"))
    convert_pancreas(str(root / "Pancreas-CT"), str(root / "labels"), str(root / "Pancreas"))
    (root / "Pancreas" / "train.list").write_text("image0001\nimage0002\nimage0003\nimage0004\n")
    (root / "Pancreas" / "test.list").write_text("image0005\n")
    return root


@pytest.mark.long
def test_pancreas_from_dicom_trains_exports_and_segments_a_raw_series(pancreas_data, tmp_path):
    common = ["--bundle_root", str(tmp_path), "--dataset_dir", str(pancreas_data / "Pancreas"),
              "--train_list", "train.list", "--test_list", "test.list", "--num_labeled", "2", "--num_val", "0", *TRAIN_SMALL]
    run_bundle("run", "training", "--config_file", config_list("stlu_pancreas", "train.json", "quick.json"), *common,
               "--max_iterations", "2", "--val_interval", "2")
    model = tmp_path / "models" / "model.pt"
    assert model.is_file()
    series = pancreas_data / "Pancreas-CT" / "PANCREAS_0005" / "study" / "series"
    assert [i["image"] for i in find_images(str(pancreas_data / "Pancreas-CT" / "PANCREAS_0005"))] == [str(series)]
    run_bundle("run", "--config_file", config_list("stlu_pancreas", "inference.json"), "--bundle_root", str(tmp_path),
               *SMALL, "--eval_stride", "[16, 16, 16]", "--input_dir", str(series), "--output_dir", str(tmp_path / "pred"))
    pred = _prediction(tmp_path / "pred")
    loaded = LoadImage(reader=ITKReader(), image_only=True)(str(series))
    assert pred.shape == tuple(loaded.shape) == (64, 64, 24)  # on the series' own grid, not the 1 mm one
    np.testing.assert_allclose(pred.affine, np.asarray(loaded.affine), atol=1e-4)
    assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1}

    _onnx_parity("stlu_pancreas", model, tmp_path / "model.onnx")


def _onnx_parity(bundle: str, model, onnx_path, in_channels: int = 1, extra=()) -> None:
    """The bundle's ONNX export of the trained model against the PyTorch network (onnxruntime, tolerance 1e-4)."""
    import onnxruntime as ort

    from conftest import REPO_ROOT
    from monai_stlu.networks import STLUNet

    run_bundle("onnx_export", "network_def", "--filepath", str(onnx_path), "--ckpt_file", str(model),
               "--meta_file", str(REPO_ROOT / "bundles" / bundle / "configs" / "metadata.json"),
               "--config_file", config_list(bundle, "inference.json"), "--n_filters", "4", *extra,
               "--input_shape", f"[1,{in_channels},32,32,32]",
               "--converter_kwargs", "{'input_names': ['image'], 'output_names': ['pred']}")
    net = STLUNet(in_channels=in_channels, n_filters=4).eval()
    net.load_state_dict(torch.load(model, weights_only=True))
    x = torch.randn(1, in_channels, 32, 32, 32)
    with torch.no_grad():
        ref = net(x).numpy()
    out = ort.InferenceSession(str(onnx_path)).run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.long
def test_brats_two_sequences_convert_train_and_segment_raw_cases(tmp_path):
    """``--modalities flair,t2``: the converter writes both sequences, the bundle stacks them as two input
    channels, and raw cases (one folder per case, one file per sequence) are grouped and segmented."""
    raw = tmp_path / "raw" / "LGG"
    rng = np.random.RandomState(1)
    names = [f"BraTS19_M_{i}" for i in range(6)]
    for name in names:
        _brats_case(raw, name, rng)
    out = tmp_path / "BraTS"
    convert_brats(str(tmp_path / "raw"), str(out), modalities="flair,t2")
    with h5py.File(out / "data" / f"{names[0]}.h5") as f:
        assert {"image", "label", "flair", "t2"} <= set(f) and np.array_equal(f["image"][...], f["flair"][...])
        assert f["t2"].shape == f["flair"].shape and not np.allclose(f["t2"][...], f["flair"][...])
    (out / "train.txt").write_text("\n".join(names[:4]) + "\n")
    (out / "val.txt").write_text(names[4] + "\n")
    (out / "test.txt").write_text(names[5] + "\n")
    common = ["--bundle_root", str(tmp_path), "--dataset_dir", str(out), "--num_labeled", "2", "--train_list",
              "train.txt", "--val_list", "val.txt", "--test_list", "test.txt",
              "--modalities", "['flair', 't2']", *TRAIN_SMALL]
    run_bundle("run", "training", "--config_file", config_list("stlu_brats", "train.json", "quick.json"), *common,
               "--max_iterations", "2", "--val_interval", "2")
    state = torch.load(str(tmp_path / "models" / "model.pt"), weights_only=True)
    first = next(v for k, v in state.items() if k.endswith("weight") and v.ndim == 5)
    assert first.shape[1] == 2  # two input channels
    items = find_images(str(raw), modalities=["flair", "t2"])
    assert [i["id"] for i in items] == names and all(len(i["image"]) == 2 for i in items)
    run_bundle("run", "--config_file", config_list("stlu_brats", "inference.json"), "--bundle_root", str(tmp_path),
               "--modalities", "['flair', 't2']", *SMALL, "--eval_stride", "[16, 16, 16]", "--input_dir",
               str(raw / names[5]), "--output_dir", str(tmp_path / "pred"))
    pred = _prediction(tmp_path / "pred")
    assert pred.shape == (48, 44, 36)
    _onnx_parity("stlu_brats", tmp_path / "models" / "model.pt", tmp_path / "model.onnx", in_channels=2,
                 extra=["--modalities", "['flair', 't2']"])
    with pytest.raises(FileNotFoundError, match="t1ce"):
        find_images(str(raw), modalities=["flair", "t1ce"])
