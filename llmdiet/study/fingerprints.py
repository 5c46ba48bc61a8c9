"""What decides each study job's output, as data its fingerprint hashes: a student's distillation, data and Trainer
settings (:func:`student_fingerprint`, shared with the alpha sweep), the identity of models and eval sets, and the
calibration rows of the quantizers."""

from __future__ import annotations

from pathlib import Path

from llmdiet.config import ConfigError
from llmdiet.constants import REFERENCE_DATASET
from llmdiet.study.config import StudyConfig

# Seq2SeqTrainingArguments that do not change the trained student (everything else is in the fingerprint)
NEUTRAL_TRAINING_KEYS = {
    "output_dir",
    "logging_dir",
    "run_name",
    "disable_tqdm",
    "report_to",
    "dataloader_num_workers",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_token",
    "hub_private_repo",
    "hub_always_push",
    "hub_revision",
    "logging_steps",
    "logging_strategy",
    "logging_first_step",
    "logging_nan_inf_filter",
    "save_total_limit",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "log_level",
    "log_level_replica",
    "log_on_each_node",
    "save_safetensors",
    "save_on_each_node",
    "save_only_model",
    "local_rank",
    "ddp_backend",
    "print_steps",
    "skip_memory_metrics",
    "include_num_input_tokens_seen",
    "project",
    "trackio_space_id",
}


# ----------------------------------------------------------------------------- distill arguments


def _cache_usable(options: dict) -> bool:
    """Whether a student with these flags can train from the shared teacher cache (its method's and modifiers'
    declarations: gkd, dml and the hidden-state loss cannot; nor can replay students, whose rows differ)."""
    from llmdiet.distill.methods import get_method

    method = get_method(options.get("method") or "kd")
    replay = bool(options.get("replay_set"))  # other rows than the shared cache's
    return method.teacher_cache and float(options.get("hidden_weight") or 0) == 0 and not replay


def distill_options(
    cfg: StudyConfig, overrides: dict, output_dir: str, student_model: str | None = None
) -> tuple[str | None, dict]:
    """(preset, llmdiet distill options) of one student: the shared ``distill`` section, then the student's own.
    A shared ``teacher_cache`` (one top-k cache of the teacher, built once in ``shared/``) is dropped for the
    students that cannot use it: they run the live teacher."""
    shared = dict(cfg.distill)
    preset = shared.pop("preset", None)
    if "teacher_cache" in shared and "teacher_cache" not in overrides and not _cache_usable({**shared, **overrides}):
        shared.pop("teacher_cache")
    options = {
        "seed": cfg.seed,
        **shared,
        **overrides,
        "teacher_model": cfg.teacher,
        "student_model": student_model or cfg.student,  # a pruned model, for the recovery of the prune section
        "output_dir": output_dir,
    }
    if cfg.tokenizer and "tokenizer" not in options:
        options["tokenizer"] = cfg.tokenizer
    return preset, options


def distill_arguments(cfg: StudyConfig, overrides: dict, output_dir: str, student_model: str | None = None):
    """(DistillationArguments, DataArguments, Seq2SeqTrainingArguments) of one student, built directly from the
    study's values and checked by the same dataclasses as ``llmdiet distill``."""
    from llmdiet.distill.job import settings_from_options
    from llmdiet.distill.settings import check_training_arguments

    preset, options = distill_options(cfg, overrides, output_dir, student_model)
    where = f"{cfg.path}: distill/methods settings of student '{Path(output_dir).name}'"
    settings = settings_from_options(preset, None, where=where, resumable=False, **options)  # the study resumes
    try:
        check_training_arguments(settings.training)  # its notes are logged once, by the training job
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return settings


def train_params_data(cfg: StudyConfig, overrides: dict):
    """The DataArguments of one student (its training and dev rows)."""
    return distill_arguments(cfg, overrides, str(cfg.root / "students" / "_check"))[1]


def alpha_default(cfg: StudyConfig) -> float:
    return float(cfg.distill.get("alpha", 0.5))


# ----------------------------------------------------------------------------- identities


# Flags that say where things run or are cached, never what the student becomes (the teacher and student models
# enter by content instead of by path).
PLACEMENT_ONLY = (
    "teacher_cache",
    "sequence_kd_file",
    "rebuild_caches",
    "teacher_model",
    "student_model",
    "device",
    "teacher_device_map",
    "teacher_max_memory",
    "teacher_offload_folder",
    "plan",
    "plan_gpu_gib",
)


def student_fingerprint(args, data, training, teacher: dict, student: dict) -> dict:
    """Everything that decides a trained student: its distillation, data and Trainer settings (all of them but the
    ones that cannot change the weights) and the content of its teacher and initial student. The study's train
    jobs and the alpha sweep key their students by this one rule."""
    from dataclasses import asdict

    dist = {k: v for k, v in asdict(args).items() if k not in PLACEMENT_ONLY}
    dist["teacher_cache_used"] = bool(args.teacher_cache)  # top-k + tail targets instead of the full teacher
    targs = {k: v for k, v in training.to_dict().items() if k not in NEUTRAL_TRAINING_KEYS}
    return {
        "distillation": dist,
        "data": _data_identity(data),
        "training": targs,
        "teacher": teacher,
        "student": student,
    }


def _data_identity(data) -> dict:
    from dataclasses import asdict

    from llmdiet.evaluation.eval_sets import resolve_eval_set
    from llmdiet.fingerprint import file_sha256

    out = asdict(data)
    if data.data_files and Path(data.data_files).is_file():
        out["data_files_sha256"] = file_sha256(data.data_files)
    if data.replay_set:  # the replay rows' content, not just the names
        specs = [resolve_eval_set(name) for name in data.replay_set]
        out["replay_sets"] = [{**spec.describe(), "data": spec.fingerprint()} for spec in specs]
    return out


def train_params(cfg: StudyConfig, label: str, overrides: dict, identities: dict) -> dict:
    args, data, training = distill_arguments(cfg, overrides, str(cfg.root / "students" / label))
    return student_fingerprint(args, data, training, identities[cfg.teacher], identities[cfg.student])


def model_identity_of(name: str) -> dict:
    from llmdiet.fingerprint import model_identity
    from llmdiet.modeling import resolve_model

    path = resolve_model(name)
    return model_identity(path) if Path(path).exists() else {"hub_id": name}


def eval_set_identity(name: str) -> dict:
    from llmdiet.evaluation.eval_sets import resolve_eval_set

    spec = resolve_eval_set(name)
    return {
        "name": spec.name,
        "version": spec.version,
        "fingerprint": spec.fingerprint(),
        "prefix": spec.prefix,
        "rows": [spec.start, spec.stop],
    }


def calibration(cfg: StudyConfig) -> dict:
    """Calibration rows of the static quantizers and GPFQ: the study's training data unless configured."""
    flags = dict(cfg.distill)
    q = cfg.quantize
    file = q.calibration_file or flags.get("data_files") or _preset_value(cfg, "data_files")
    hub = (
        {}
        if file
        else {"dataset": [flags.get("dataset_name") or REFERENCE_DATASET, flags.get("dataset_split") or "train"]}
    )
    return {
        **hub,  # only without a file, so file-based fingerprints are unchanged
        "file": file,
        "source_column": q.calibration_source_column
        or flags.get("source_column")
        or _preset_value(cfg, "source_column")
        or "en",
        "target_column": flags.get("target_column") or _preset_value(cfg, "target_column") or "fr",
        # None: each model's family decides (the T5 prefix for T5-family models only)
        "prefix": _first_set(flags.get("source_prefix"), _preset_value(cfg, "source_prefix"), None),
        "count": q.calibration_count,
    }


def _first_set(*values):
    """The first value that is not None ("" is a value: no prefix); None when all are."""
    return next((v for v in values if v is not None), None)


def _preset_value(cfg: StudyConfig, key: str):
    from llmdiet.distill.presets import PRESETS

    preset = cfg.distill.get("preset")
    return PRESETS[preset]().get(key) if preset in PRESETS else None
