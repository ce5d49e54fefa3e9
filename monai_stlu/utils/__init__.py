from __future__ import annotations

from .lazy_package import lazy_exports

# names re-exported from the submodules, loaded on first use: the command line's --help and the error hook need
# none of torch or MONAI, which the heavier helpers import
_EXPORTS = {
    "fast_path": ("argmax", "as_plain_tensor", "at_least_float32", "autocast", "autocast_dtype", "cpu_name",
                  "cpu_supports_bf16", "module_to_channels_last", "to_channels_last"),
    "ramps": ("ramp_value", "sigmoid_rampup"),
    "bundle": ("bundle_root", "source_commit"),
    "flags": ("as_bool",),
    "best_metric": ("BEST_METRIC_KEYS", "best_metric_state", "restore_best_metric"),
    "plots": ("plot_run", "read_scalars"),
    "distributed": ("any_rank", "average_buffers", "broadcast_module", "check_shards", "ddp", "init_distributed",
                    "is_distributed", "save_rank_networks"),
    "errors": ("explain", "install_error_hook", "is_command_line_run"),
    "run_lock": ("RunLock", "RunLockedError"),
    "settings_check": ("check_command_line_keys", "check_optional_packages", "check_settings", "top_level_values"),
    "model_record": ("RECORD_KEY", "RECORD_SCHEMA", "SETTINGS_SCHEMA", "ModelRecordError", "attach_model_record",
                     "check_model_record", "load_model_file", "model_record_of", "read_model_record",
                     "record_overrides"),
    "lazy_package": ("lazy_exports",),
    "entry_point_ddp": ("EntryPointDDP",),
    "names": ("BACKBONES", "DROPOUT_PLACEMENTS", "METHOD_NAMES", "MIX_STRATEGIES"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
