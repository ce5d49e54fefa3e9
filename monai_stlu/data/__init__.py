"""Data: h5 and NIfTI readers and writers, data lists and splits, converters, synthetic cases, data checks.

Names load from their modules on first use (``monai_stlu.data.H5Reader`` in a bundle config imports what it names),
so the commands that need no MONAI (``monai_stlu synth``) do not import it.
"""

from __future__ import annotations

from monai_stlu.utils.lazy_package import lazy_exports

_MODULES = {
    "datalist": ("DATA_HELP", "LA_CASE_PATH", "check_h5_case", "h5_split", "json_split", "semi_supervised_split"),
    "h5_files": ("open_h5", "read_h5_dataset", "write_h5_case"),
    "h5_reader": ("H5Reader", "is_h5_source"),
    "synthetic": ("SYNTHETIC_LAYOUTS", "synthetic_case", "write_synthetic_la"),
    "validate_case": ("ValidateSegmentationd",),
    "finite_file_check": ("CheckFiniteFiled",),
    "image_files": ("case_id", "data_root", "find_images"),
    "atomic_nibabel_writer": ("AtomicNibabelWriter",),
    "converters": (
        "brats_normalise", "cdf_clip_value", "convert_brats", "convert_la", "convert_pancreas", "la_crop_box",
        "nifti_datalist", "pancreas_normalise",
    ),
    "dicom_series": ("dicom_series_files", "find_dicom_series", "instance_order_reversed"),
    "raw_intensity": ("RawIntensityd",),
    "raw_geometry": ("RawGeometryd",),
    "translated_crop": ("RandTranslatedCropd", "overlap_slices"),
    "datastore": ("IMAGE_PATTERNS", "epoch_length", "is_datastore_list", "unlabeled_cases"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES, globals())
