"""The study as named jobs with dependencies, fingerprints and resumable runs.

Every model of the study has a label (``teacher``, ``student-vanilla``, ``alpha-0.5``, a method name, or
``<base>+<quantization method>``) and is produced and scored by jobs:

=================  ====================================================  ==============================
job                what it does                                          writes
=================  ====================================================  ==============================
train/<student>    ``llmdiet distill`` with the study's flags             students/<student>/
quantize/<model>   ``llmdiet quantize`` of a float model                  quantized/<model>/
eval/<model>       ``llmdiet eval`` on every test set and the dev set, CIs  eval/<model>/
bits/<model>       the 2-8-bit RTN/GPFQ sweep of one float model          bits/<model>/
speed              every model timed in interleaved rounds (study.speed)  speed/
=================  ====================================================  ==============================

A job's fingerprint is a hash of everything that decides its output (its settings, the content of its
input models and data) and of its dependencies' fingerprints. ``jobs/<job>.json`` records the fingerprint a
job ran with and whether it finished: a re-run skips finished jobs with the same fingerprint, resumes an
interrupted one (training from its last checkpoint, evaluation from its last batch), and moves the output of
a job whose fingerprint changed to ``stale/`` before redoing it (nothing is deleted, nothing stale is reused).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmdiet.config import ConfigError
from llmdiet.study.config import StudyConfig

logger = logging.getLogger(__name__)

VANILLA = "student-vanilla"
TEACHER = "teacher"
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


@dataclass
class ModelEntry:
    label: str
    role: str  # teacher | vanilla | student | quantized | speculative (the teacher with a student drafting)
    path: str  # hub id, local directory or artifact directory
    base: str  # the float model a quantized model comes from (itself otherwise)
    producer: str | None = None  # the job that makes it (None: given)
    method: str | None = None  # quantization method
    alpha: float | None = None  # distillation alpha of a student
    distill_method: str | None = None
    draft: str | None = None  # speculative: the drafting student's label


@dataclass
class Job:
    name: str
    kind: str  # train | quantize | eval | bits
    model: str  # label of the model it makes or scores
    out: Path
    deps: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)


@dataclass
class StudyPlan:
    config: StudyConfig
    models: dict[str, ModelEntry]
    jobs: dict[str, Job]  # in dependency order
    fingerprints: dict[str, str]

    def job(self, name: str) -> Job:
        if name not in self.jobs:
            raise ConfigError(
                f"--job {name}: no such job in {self.config.path} (see llmdiet study --config "
                f"{self.config.path} --list)"
            )
        return self.jobs[name]


def alpha_label(alpha: float) -> str:
    return f"alpha-{alpha:g}"


def student_outputs(label: str, method: str, out: Path) -> list[tuple[str, str]]:
    """(model label, directory) of every student one training job saves: the method's ``students`` sub-folders
    (labels ``<label>``, ``<label>-b``, ...), or the output directory itself."""
    from llmdiet.distill.methods import get_method

    subs = get_method(method).students
    if not subs:
        return [(label, str(out))]
    return [(label if i == 0 else f"{label}-{chr(ord('a') + i)}", str(out / sub)) for i, sub in enumerate(subs)]


def students(cfg: StudyConfig) -> list[tuple[str, dict]]:
    """(label, distill flags that differ from the shared ones) of every trained student."""
    out = [(alpha_label(a), {"alpha": a}) for a in cfg.alphas]
    return out + list(cfg.methods.items())


# ----------------------------------------------------------------------------- distill arguments


def _cache_usable(options: dict) -> bool:
    """Whether a student with these flags can train from the shared teacher cache (its method's and modifiers'
    declarations: gkd, dml and the hidden-state loss cannot; nor can replay students, whose rows differ)."""
    from llmdiet.distill.methods import get_method

    method = get_method(options.get("method") or "kd")
    replay = bool(options.get("replay_set"))  # other rows than the shared cache's
    return method.teacher_cache and float(options.get("hidden_weight") or 0) == 0 and not replay


def distill_options(cfg: StudyConfig, overrides: dict, output_dir: str) -> tuple[str | None, dict]:
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
        "student_model": cfg.student,
        "output_dir": output_dir,
    }
    if cfg.tokenizer and "tokenizer" not in options:
        options["tokenizer"] = cfg.tokenizer
    return preset, options


def distill_arguments(cfg: StudyConfig, overrides: dict, output_dir: str):
    """(DistillationArguments, DataArguments, Seq2SeqTrainingArguments) of one student, built directly from the
    study's values and checked by the same dataclasses as ``llmdiet distill``."""
    from llmdiet.distill.job import settings_from_options
    from llmdiet.distill.settings import check_training_arguments

    preset, options = distill_options(cfg, overrides, output_dir)
    where = f"{cfg.path}: distill/methods settings of student '{Path(output_dir).name}'"
    settings = settings_from_options(preset, None, where=where, resumable=False, **options)  # the study resumes
    try:
        check_training_arguments(settings.training)  # its notes are logged once, by the training job
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return settings


def student_fingerprint(args, data, training, teacher: dict, student: dict) -> dict:
    """Everything that decides a trained student: its distillation, data and Trainer settings (all of them but the
    ones that cannot change the weights) and the content of its teacher and initial student. The study's train
    jobs and the alpha sweep key their students by this one rule."""
    from dataclasses import asdict

    dist = {
        k: v
        for k, v in asdict(args).items()
        if k not in ("teacher_cache", "sequence_kd_file", "rebuild_caches", "teacher_model", "student_model")
    }
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


# ----------------------------------------------------------------------------- the plan


def _model_identity(name: str) -> dict:
    from llmdiet.fingerprint import model_identity
    from llmdiet.modeling import resolve_model

    path = resolve_model(name)
    return model_identity(path) if Path(path).exists() else {"hub_id": name}


def _eval_set_identity(name: str) -> dict:
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
    return {
        "file": q.calibration_file or flags.get("data_files") or _preset_value(cfg, "data_files"),
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


_LEFT_OUT_TOLD: set[tuple[str, ...]] = set()


def usable_quantize_methods(cfg) -> list[str]:
    """The study's quantization methods whose libraries are installed; the others (the onnx-* methods without the
    ONNX extra) are left out with one logged line and listed in results.json (``quantize_left_out``)."""
    from llmdiet.quantize import METHODS, missing_libraries

    left = [m for m in cfg.quantize.methods if missing_libraries(METHODS[m])]
    if left and tuple(left) not in _LEFT_OUT_TOLD:  # once per process, not once per plan built
        _LEFT_OUT_TOLD.add(tuple(left))
        logger.warning(
            "study: quantization method(s) %s left out: their libraries are not installed (the onnx-* methods need "
            "the ONNX extra: pip install -c constraints-onnx.txt -e '.[onnx]', docs/install.md 'Supported versions')",
            ", ".join(left),
        )
    return [m for m in cfg.quantize.methods if m not in left]


def build_plan(cfg: StudyConfig) -> StudyPlan:
    """Every model and job of the study, in dependency order, with fingerprints."""
    from llmdiet.fingerprint import digest, file_sha256
    from llmdiet.modeling import resolve_model
    from llmdiet.quantize import METHODS

    root = cfg.root
    identities = {name: _model_identity(name) for name in {cfg.teacher, cfg.student}}
    models: dict[str, ModelEntry] = {
        TEACHER: ModelEntry(TEACHER, "teacher", resolve_model(cfg.teacher), TEACHER),
        VANILLA: ModelEntry(VANILLA, "vanilla", resolve_model(cfg.student), VANILLA),
    }
    jobs: dict[str, Job] = {}
    params_of_input = {TEACHER: identities[cfg.teacher], VANILLA: identities[cfg.student]}
    for label, overrides in students(cfg):
        job = Job(
            f"train/{label}",
            "train",
            label,
            root / "students" / label,
            params={"overrides": overrides, **train_params(cfg, label, overrides, identities)},
        )
        jobs[job.name] = job
        method = str(overrides.get("method", cfg.distill.get("method", "kd")))
        alpha = float(overrides.get("alpha", _alpha_default(cfg)))
        # a method that saves several students (its registry entry's ``students``, e.g. dml's student_a and
        # student_b) gives models <label>, <label>-b, <label>-c, ... from one training job
        for name, out in student_outputs(label, method, job.out):
            models[name] = ModelEntry(name, "student", out, name, producer=job.name, alpha=alpha, distill_method=method)
    calib = calibration(cfg)
    calib_identity = {
        **calib,
        "sha256": file_sha256(calib["file"]) if calib["file"] and Path(calib["file"]).is_file() else None,
    }
    wanted = cfg.quantize.students
    unknown = [s for s in wanted if s != "all" and (s not in models or models[s].role != "student")]
    if unknown:
        raise ConfigError(
            f"{cfg.path}: quantize.students: unknown {unknown} (trained students: all, "
            f"{', '.join(m for m in models if models[m].role == 'student')})"
        )
    for base in list(models.values()):  # the teacher, and the trained students (distill-then-quantize)
        if base.role == "vanilla" or (base.role == "student" and "all" not in wanted and base.label not in wanted):
            continue
        for method in usable_quantize_methods(cfg):
            label = f"{base.label}+{method}"
            params = {"method": method, "seed": cfg.seed}
            if METHODS[method].calibrated:
                params["calibration"] = calib_identity
            job = Job(
                f"quantize/{label}",
                "quantize",
                label,
                root / "quantized" / label.replace("+", "-"),
                deps=[base.producer] if base.producer else [],
                params={**params, "input": params_of_input.get(base.label)},
            )
            jobs[job.name] = job
            models[label] = ModelEntry(
                label,
                "quantized",
                str(job.out),
                base.label,
                producer=job.name,
                method=method,
                alpha=base.alpha,
                distill_method=base.distill_method,
            )
    ev = cfg.eval
    if ev.draft is not None:
        draft = models.get(ev.draft)
        if draft is None or draft.role != "student":
            trained = ", ".join(m for m in models if models[m].role == "student")
            raise ConfigError(f"{cfg.path}: eval.draft: {ev.draft!r} is not a trained student (trained: {trained})")
        label = f"{TEACHER}+draft:{ev.draft}"
        models[label] = ModelEntry(
            label, "speculative", models[TEACHER].path, TEACHER, producer=draft.producer, draft=ev.draft
        )
        params_of_input[label] = params_of_input[TEACHER]
    check_no_leaks(cfg, [train_params_data(cfg, overrides) for _, overrides in students(cfg)])
    eval_params = {
        "sets": [_eval_set_identity(s) for s in ev.scored_sets],
        "batch_size": ev.batch_size,
        "max_new_tokens": ev.max_new_tokens,
        "num_beams": ev.num_beams,
        "limit": ev.limit,
        "device": ev.device,
        "statistics": {"n_bootstrap": cfg.statistics.n_bootstrap, "seed": cfg.statistics.seed},
    }
    for label, model in list(models.items()):
        job = Job(
            f"eval/{label}",
            "eval",
            label,
            root / "eval" / label,
            deps=[model.producer] if model.producer else [],
            params={**eval_params, "input": params_of_input.get(label)},
        )
        jobs[job.name] = job
    bs = cfg.bit_sweep
    unknown = [m for m in bs.models if m != "all" and m not in models]
    if unknown:
        raise ConfigError(f"{cfg.path}: bit_sweep.models: unknown {unknown} (models: all, {', '.join(models)})")
    if bs.models and bs.methods and bs.bits:
        bit_params = {
            "bits": bs.bits,
            "methods": bs.methods,
            "eval_set": _eval_set_identity(bs.eval_set or ev.in_domain[0]),
            "limit": bs.limit,
            "calibration": {**calib_identity, "count": bs.calibration_rows},
            "scale": bs.scale,
            "batch_size": ev.batch_size,
            "max_new_tokens": ev.max_new_tokens,
        }
        for label, model in list(models.items()):
            if model.role == "quantized" or ("all" not in bs.models and label not in bs.models):
                continue
            job = Job(
                f"bits/{label}",
                "bits",
                label,
                root / "bits" / label,
                deps=[model.producer] if model.producer else [],
                params={**bit_params, "input": params_of_input.get(label)},
            )
            jobs[job.name] = job
    speed_params = {
        "set": _eval_set_identity(ev.in_domain[0]),
        "batch_size": ev.batch_size,
        "max_new_tokens": ev.max_new_tokens,
        "num_beams": ev.num_beams,
        "device": ev.device,
        "latency_sentences": ev.latency_sentences,
        "speed_sentences": ev.speed_sentences,
        "repeats": ev.speed_repeats,
        "inputs": params_of_input,
        "models": sorted(models),
    }
    jobs["speed"] = Job(
        "speed",
        "speed",
        "*",
        root / "speed",
        params=speed_params,
        deps=sorted({m.producer for m in models.values() if m.producer}),
    )
    order = sorted(jobs.values(), key=lambda j: ["train", "quantize", "eval", "bits", "speed"].index(j.kind))
    jobs = {j.name: j for j in order}
    fingerprints: dict[str, str] = {}
    for job in jobs.values():
        fingerprints[job.name] = digest(
            {"kind": job.kind, "params": job.params, "deps": {d: fingerprints[d] for d in job.deps}}
        )
    return StudyPlan(cfg, models, jobs, fingerprints)


def train_params_data(cfg: StudyConfig, overrides: dict):
    """The DataArguments of one student (its training and dev rows)."""
    return distill_arguments(cfg, overrides, str(cfg.root / "students" / "_check"))[1]


def check_no_leaks(cfg: StudyConfig, datas: list) -> None:
    """Refuse, in one line, a study whose training or dev rows are test rows, or whose dev set is a test set."""
    from llmdiet.evaluation.eval_sets import named_test_sets, overlapping_sets, resolve_eval_set

    tests = [resolve_eval_set(s) for s in cfg.eval.sets]
    known = {(t.name, t.source_key(), t.start, t.stop) for t in tests}
    tests += [t for t in named_test_sets() if (t.name, t.source_key(), t.start, t.stop) not in known]
    problems = sorted({p for data in datas for p in data.leaks(tests)})
    if cfg.eval.dev:
        dev = resolve_eval_set(cfg.eval.dev)
        if cfg.eval.dev in cfg.eval.sets:
            problems.append(f"eval.dev {cfg.eval.dev} is also a test set")
        hits = overlapping_sets(dev.source_key(), dev.start, dev.stop, [t for t in tests if t.name != dev.name])
        if hits:
            problems.append(f"eval.dev {cfg.eval.dev} shares rows with {', '.join(hits)}")
    if problems:
        raise ConfigError(
            f"{cfg.path}: selection would use test rows: {'; '.join(problems)}. Give the students dev "
            "rows of their own (distill.eval_start / eval_rows) and a dev set disjoint from every test "
            "set (eval.dev)"
        )
    check_no_shared_sentences(cfg, datas, tests)


def check_no_shared_sentences(cfg: StudyConfig, datas: list, tests: list) -> None:
    """The content check (:mod:`llmdiet.evaluation.overlap`) at plan time, for what is read from local files: every
    student's training, replay and dev rows against the study's test sets and eval.dev, and eval.dev against the
    test sets. Hub data is checked by each training job when it starts (it needs the hub)."""
    from llmdiet.distill.replay import load_replay
    from llmdiet.distill.run import check_test_overlap, load_splits
    from llmdiet.evaluation.eval_sets import resolve_eval_set
    from llmdiet.evaluation.overlap import find_overlaps, held_out_texts

    local_tests = [t for t in tests if t.file is not None]
    dev = resolve_eval_set(cfg.eval.dev) if cfg.eval.dev else None
    if dev is not None and dev.file is not None:
        hits = find_overlaps(dev.load(), f"eval.dev {dev.name}", held_out_texts(local_tests, skip={dev.name}))
        if hits:
            raise ConfigError(f"{cfg.path}: {'; '.join(h.describe(len(dev.load())) for h in hits)}")
    held = local_tests + ([replace(dev, role="dev")] if dev is not None and dev.file is not None else [])
    seen = set()
    for data in datas:
        key = (
            data.source_key(),
            data.train_start,
            data.train_rows,
            data.dev_start,
            data.eval_rows,
            str(data.replay_set),
        )
        if not data.data_files or key in seen:
            continue
        seen.add(key)
        train, dev_rows, _ = load_splits(data)
        replay = load_replay(data.replay_set, data.replay_fraction, len(train), cfg.seed) if data.replay_set else []
        try:
            check_test_overlap(data, train, dev_rows, replay, sets=held)
        except ConfigError as err:
            raise ConfigError(f"{cfg.path}: distill data: {err}") from None


def _alpha_default(cfg: StudyConfig) -> float:
    return float(cfg.distill.get("alpha", 0.5))


# ----------------------------------------------------------------------------- job state


def marker_path(plan: StudyPlan, name: str) -> Path:
    return plan.config.root / "jobs" / (name.replace("/", "__") + ".json")


def read_marker(plan: StudyPlan, name: str) -> dict | None:
    try:
        return json.loads(marker_path(plan, name).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def status(plan: StudyPlan, name: str) -> str:
    """done | running (another process holds its lock) | interrupted (will resume) | stale (settings changed:
    redone) | damaged (an output recorded when it finished is missing or changed: redone) | pending."""
    from llmdiet.locking import is_locked

    marker = read_marker(plan, name)
    if marker is None:
        return "stale" if plan.jobs[name].out.exists() and any(plan.jobs[name].out.iterdir()) else "pending"
    if marker.get("fingerprint") != plan.fingerprints[name]:
        return "stale"
    if marker.get("status") == "done":
        return "damaged" if damaged_outputs(plan.jobs[name], marker) else "done"
    return "running" if is_locked(lock_dir(plan, name)) else "interrupted"


def stale_reason(plan: StudyPlan, name: str) -> str:
    """What changed in a stale job's own settings (or "a dependency changed")."""
    from llmdiet.fingerprint import differences

    marker = read_marker(plan, name) or {}
    stored = marker.get("params")
    if stored is None:
        return "no settings recorded"
    changed = differences(stored, json.loads(json.dumps(plan.jobs[name].params, default=str)))
    return (
        ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        if changed
        else "a job it depends on changed"
    )


def lock_dir(plan: StudyPlan, name: str) -> Path:
    return plan.config.root / "locks" / name.replace("/", "__")


SMALL_FILE = 16 * 1024 * 1024  # outputs up to this size are verified by content, larger ones by size and mtime


def job_outputs(job: Job) -> list[Path]:
    """The files a finished job leaves that later jobs and the report read."""
    from llmdiet.modeling import counted_files

    out = job.out
    if job.kind == "train":
        dirs = [out / "student_a", out / "student_b"] if (out / "student_a").is_dir() else [out]
        return [out / "training_log.json"] + [d / f for d in dirs for f in counted_files(d)]
    if job.kind == "quantize":
        return [out / f for f in counted_files(out)]
    if job.kind == "eval":
        return [out / "results.json", out / "statistics.json"] + sorted(out.glob("*/samples.jsonl"))
    if job.kind == "bits":
        return [out / "bit_sweep.json"]
    return [out / "timings.jsonl"]


def _file_identity(path: Path) -> dict:
    from llmdiet.fingerprint import file_sha256

    stat = path.stat()
    if stat.st_size <= SMALL_FILE:
        return {"bytes": stat.st_size, "sha256": file_sha256(path)}
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_outputs(job: Job) -> dict:
    return {str(p.relative_to(job.out)): _file_identity(p) for p in job_outputs(job) if p.is_file()}


def damaged_outputs(job: Job, marker: dict) -> list[str]:
    """The recorded outputs that are missing or no longer what the job wrote (a hand edit, a truncation)."""
    bad = []
    for rel, identity in (marker.get("outputs") or {}).items():
        path = job.out / rel
        if not path.is_file():
            bad.append(f"{rel} is missing")
        elif _file_identity(path) != identity:
            bad.append(f"{rel} changed")
    return bad


def _write_marker(plan: StudyPlan, name: str, state: str, started: float, extra: dict | None = None) -> None:
    path = marker_path(plan, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "job": name,
        "fingerprint": plan.fingerprints[name],
        "params": json.loads(json.dumps(plan.jobs[name].params, default=str)),  # what the fingerprint hashes
        "status": state,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        **(extra or {}),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _move_stale(plan: StudyPlan, job: Job) -> None:
    if not job.out.exists() or not _is_main_process():
        return
    old = (read_marker(plan, job.name) or {}).get("fingerprint", "unknown")
    target = plan.config.root / "stale" / f"{job.name.replace('/', '__')}-{old}-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(job.out), target)
    marker_path(plan, job.name).unlink(missing_ok=True)
    logger.warning("%s: made with other settings; its output was moved to %s and the job is redone", job.name, target)


def run_job(plan: StudyPlan, name: str) -> str:
    """Run one job unless it is done; returns what happened (skipped | ran)."""
    from llmdiet.locking import directory_lock

    job = plan.job(name)
    state = status(plan, name)
    if state == "done":
        logger.info("%s: done (same fingerprint), skipped", name)
        return "skipped"
    if state == "damaged":
        logger.warning(
            "%s: %s since it finished; the job is redone (its old output goes to stale/)",
            name,
            "; ".join(damaged_outputs(job, read_marker(plan, name) or {})),
        )
    missing = [d for d in job.deps if status(plan, d) != "done"]
    if missing:
        raise ConfigError(
            f"job {name} needs {', '.join(missing)} first (llmdiet study --config {plan.config.path} "
            f"--job {missing[0]}, or run the whole study)"
        )
    with directory_lock(lock_dir(plan, name), f"study job {name}"):
        if state == "stale":
            logger.warning(
                "%s: settings changed since it ran (%s); its old output goes to stale/", name, stale_reason(plan, name)
            )
        if state in ("stale", "damaged"):
            _move_stale(plan, job)
        started = time.time()
        if _is_main_process():
            _write_marker(plan, name, "running", started)
        logger.info("%s: %s", name, "resuming" if state == "interrupted" else "running")
        extra = RUNNERS[job.kind](plan, job)
        if _is_main_process():
            _write_marker(plan, name, "done", started, {**extra, "outputs": record_outputs(job)})
    return "ran"


def run_all(plan: StudyPlan, only: list[str] | None = None) -> dict[str, str]:
    return {name: run_job(plan, name) for name in (only or plan.jobs)}


# ----------------------------------------------------------------------------- runners


def _run_train(plan: StudyPlan, job: Job) -> dict:
    from transformers.trainer_utils import get_last_checkpoint

    from llmdiet.distill.run import run

    cfg = plan.config
    args, data, training = distill_arguments(cfg, job.params["overrides"], str(job.out))
    shared = cfg.root / "shared"
    if args.teacher_cache and not Path(args.teacher_cache).is_absolute():
        # one cache per (k, temperature), shared by every student that trains with those
        args.teacher_cache = str(shared / f"{args.teacher_cache}-k{args.teacher_cache_topk}-T{args.temperature:g}")
    if args.sequence_kd != "off" and not args.sequence_kd_file:
        args.sequence_kd_file = str(shared / "teacher_translations.jsonl")
    if job.out.is_dir() and get_last_checkpoint(str(job.out)):
        training.resume_from_checkpoint = "latest"
    summary = run(
        args, data, training, command=["llmdiet", "study", "--config", cfg.path, "--job", job.name], quiet=True
    )
    return {"global_step": summary["global_step"]}


def _run_quantize(plan: StudyPlan, job: Job) -> dict:
    from llmdiet.quantize import quantize_model

    base = plan.models[plan.models[job.model].base]
    calib = calibration(plan.config)
    meta = quantize_model(
        base.path,
        job.params["method"],
        job.out,
        calibration_file=calib["file"],
        calibration_source_column=calib["source_column"],
        calibration_prefix=calib["prefix"],
        calibration_count=calib["count"],
        overwrite=True,
        tokenizer=plan.config.tokenizer,
        seed=plan.config.seed,
    )
    return {"disk_bytes": meta.get("disk_bytes")}


def eval_device(plan: StudyPlan, label: str) -> str:
    from llmdiet.quantize import METHODS

    device, model = plan.config.eval.device, plan.models[label]
    if model.method and device.split(":")[0] not in METHODS[model.method].devices:
        return "cpu"
    return device


def _run_eval(plan: StudyPlan, job: Job) -> dict:
    from llmdiet.evaluation.harness import EvalArguments, run_eval
    from llmdiet.evaluation.statistics import confidence_interval

    cfg, ev = plan.config, plan.config.eval
    model = plan.models[job.model]
    command = ["llmdiet", "study", "--config", cfg.path, "--job", job.name]
    common: dict[str, Any] = dict(
        model=model.path,
        tokenizer=cfg.tokenizer if model.role != "quantized" else None,  # speculative: the teacher's
        device=eval_device(plan, job.model),
        num_beams=ev.num_beams,
        max_new_tokens=ev.max_new_tokens,
        seed=cfg.seed,
        progress=False,
    )
    if model.draft is not None:
        common["draft_model"] = plan.models[model.draft].path
    results = run_eval(
        EvalArguments(
            eval_set=list(ev.scored_sets), out=str(job.out), batch_size=ev.batch_size, limit=ev.limit, **common
        ),
        command=command,
    )
    stats = {}
    for set_name, entry in results["sets"].items():
        lines = (job.out / entry["samples_file"]).read_text(encoding="utf-8").splitlines()
        samples = sorted((json.loads(line) for line in lines), key=lambda s: s["index"])  # row order, not batch order
        hyps, refs = [s["hypothesis"] for s in samples], [s["reference"] for s in samples]
        stats[set_name] = {
            m: confidence_interval(hyps, refs, m, cfg.statistics.n_bootstrap, cfg.statistics.seed)
            for m in ("bleu", "chrf")
        }
    (job.out / "statistics.json").write_text(json.dumps(stats, indent=2))
    return {"bleu": {s: e["metrics"]["bleu"] for s, e in results["sets"].items()}}


def _run_bits(plan: StudyPlan, job: Job) -> dict:
    from llmdiet.study.bit_sweep import BitSweepArguments, run_sweep

    cfg, bs = plan.config, plan.config.bit_sweep
    calib = calibration(cfg)
    args = BitSweepArguments(
        models=[plan.models[job.model].path],
        bits=bs.bits,
        methods=bs.methods,
        eval_set=bs.eval_set or cfg.eval.in_domain[0],
        limit=bs.limit,
        calibration_file=calib["file"],
        calibration_source_column=calib["source_column"],
        calibration_target_column=calib["target_column"],
        calibration_rows=bs.calibration_rows,
        calibration_prefix=calib["prefix"],
        batch_size=cfg.eval.batch_size,
        max_new_tokens=cfg.eval.max_new_tokens,
        scale=bs.scale,
        out=str(job.out),
        seed=cfg.seed,
    )
    summary = run_sweep(args, command=["llmdiet", "study", "--config", cfg.path, "--job", job.name])
    return {"points": len(summary["points"])}


def _run_speed(plan: StudyPlan, job: Job) -> dict:
    from llmdiet.study.speed import run_speed

    return run_speed(plan, job)


RUNNERS = {"train": _run_train, "quantize": _run_quantize, "eval": _run_eval, "bits": _run_bits, "speed": _run_speed}
