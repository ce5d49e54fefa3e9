from __future__ import annotations

from .datalist import DATA_HELP, LA_CASE_PATH, check_h5_case, h5_split, json_split, semi_supervised_split
from .h5_reader import H5Reader, is_h5_source, write_h5_case
from .synthetic import SYNTHETIC_LAYOUTS, synthetic_case, write_synthetic_la
from .validate_case import ValidateSegmentationd
from .finite_file_check import CheckFiniteFiled
from .find_images import case_id, data_root, find_images
from .atomic_nibabel_writer import AtomicNibabelWriter
from .converters import (
    brats_normalise,
    cdf_clip_value,
    convert_brats,
    convert_la,
    convert_pancreas,
    la_crop_box,
    nifti_datalist,
    pancreas_normalise,
)
from .dicom_series import dicom_series_files, find_dicom_series, instance_order_reversed
from .raw_intensity import RawIntensityd
from .raw_geometry import RawGeometryd
from .datastore import IMAGE_PATTERNS, epoch_length, is_datastore_list, unlabeled_cases
