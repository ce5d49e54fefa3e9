from __future__ import annotations

from .fast_path import as_plain_tensor, autocast, autocast_dtype, cpu_supports_bf16, to_channels_last
from .ramps import ramp_value, sigmoid_rampup
from .bundle import bundle_root
from .flags import as_bool
from .plots import plot_run, read_scalars
from .distributed import average_buffers, broadcast_module, ddp, init_distributed, is_distributed, save_rank_networks
from .errors import explain, install_error_hook, is_command_line_run
from .run_lock import RunLock, RunLockedError
from .settings_check import check_command_line_keys, check_optional_packages, check_settings
