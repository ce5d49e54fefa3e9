from __future__ import annotations

from .atomic_checkpoint_saver import PARTIAL_SUFFIX, AtomicCheckpointSaver, remove_partial_files
from .ramp_up_handler import RampUpHandler
from .resume_checkpoint_loader import ResumeCheckpointLoader, checkpoints_newest_first, latest_checkpoint
from .segmentation_metrics_saver import SegmentationMetricsSaver, write_csv_atomic
from .utils import loss_terms, onehot_pred_label
from .ema_teacher_handler import EMATeacherHandler
from .checkpoint_fit import (
    CheckpointMismatchError,
    check_checkpoint_fits,
    check_run_matches,
    check_state_dict_fits,
    describe_module,
    describe_state_dict,
)
from .run_info import RunInfo
from .model_checkpoint_loader import ModelCheckpointLoader
from .iteration_lr_handler import IterationLrHandler
from .pseudo_label_quality_handler import PseudoLabelQualityHandler
from .progress_plot_handler import ProgressPlotHandler
from .tracking_params_handler import TrackingParamsHandler
from .time_limit_handler import TimeLimitHandler
