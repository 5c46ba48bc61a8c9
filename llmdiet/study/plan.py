"""The study as a plan: named models and jobs with dependencies and fingerprints (:func:`build_plan`).

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

What decides each job is in :mod:`llmdiet.study.fingerprints`, a job's state on disk in :mod:`llmdiet.study.state`,
running jobs in :mod:`llmdiet.study.runners`. A job's fingerprint is a hash of everything that decides its output (its settings, the content of its
input models and data) and of its dependencies' fingerprints. ``jobs/<job>.json`` records the fingerprint a
job ran with and whether it finished: a re-run skips finished jobs with the same fingerprint, resumes an
interrupted one (training from its last checkpoint, evaluation from its last batch), and moves the output of
a job whose fingerprint changed to ``stale/`` before redoing it (nothing is deleted, nothing stale is reused).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llmdiet.config import ConfigError
from llmdiet.study.config import StudyConfig
from llmdiet.study.fingerprints import (
    alpha_default,
    calibration,
    eval_set_identity,
    model_identity_of,
    train_params,
    train_params_data,
)
from llmdiet.study.leaks import check_no_leaks

logger = logging.getLogger("llmdiet.study.jobs")

VANILLA = "student-vanilla"

TEACHER = "teacher"


@dataclass
class ModelEntry:
    label: str
    role: str  # teacher | vanilla | student | quantized | speculative (the teacher with a student drafting) | pruned
    path: str  # hub id, local directory or artifact directory
    base: str  # the float model a quantized model comes from (itself otherwise)
    producer: str | None = None  # the job that makes it (None: given)
    method: str | None = None  # quantization method (a pruned model's pruning method is in ``prune``)
    alpha: float | None = None  # distillation alpha of a student
    distill_method: str | None = None
    draft: str | None = None  # speculative: the drafting student's label
    prune: dict | None = None  # pruned: {"variant", "flags", "recover"} (recover: none | finetune | distill)


@dataclass
class Job:
    name: str
    kind: str  # train | quantize | eval | bits
    model: str  # label of the model it makes or scores
    out: Path
    deps: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    saves: list[Path] = field(default_factory=list)  # train: the student directories it writes ([] = out itself)
    init: str | None = None  # prune: the model it prunes; recover: the pruned model it trains from


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


def eval_device(plan: StudyPlan, label: str) -> str:
    from llmdiet.quantize import METHODS

    device, model = plan.config.eval.device, plan.models[label]
    if model.method and device.split(":")[0] not in METHODS[model.method].devices:
        return "cpu"
    return device


KIND_ORDER = ["train", "prune", "recover", "quantize", "eval", "bits", "speed"]


def build_plan(cfg: StudyConfig) -> StudyPlan:
    """Every model and job of the study, in dependency order, with fingerprints."""
    from llmdiet.fingerprint import digest
    from llmdiet.modeling import resolve_model

    identities = {name: model_identity_of(name) for name in {cfg.teacher, cfg.student}}
    plan = _Plan(
        cfg,
        models={
            TEACHER: ModelEntry(TEACHER, "teacher", resolve_model(cfg.teacher), TEACHER),
            VANILLA: ModelEntry(VANILLA, "vanilla", resolve_model(cfg.student), VANILLA),
        },
        inputs={TEACHER: identities[cfg.teacher], VANILLA: identities[cfg.student]},
    )
    _add_students(plan, identities)
    calib = _calibration_identity(cfg)
    _add_pruned(plan, calib, identities)
    _add_quantized(plan, calib)
    _add_speculative(plan)
    check_no_leaks(cfg, [train_params_data(cfg, overrides) for _, overrides in students(cfg)])
    _add_evals(plan)
    _add_bit_sweeps(plan, calib)
    _add_speed(plan)
    order = sorted(plan.jobs.values(), key=lambda j: KIND_ORDER.index(j.kind))
    jobs = {j.name: j for j in order}
    fingerprints: dict[str, str] = {}
    for job in jobs.values():
        fingerprints[job.name] = digest(
            {"kind": job.kind, "params": job.params, "deps": {d: fingerprints[d] for d in job.deps}}
        )
    return StudyPlan(cfg, plan.models, jobs, fingerprints)


@dataclass
class _Plan:
    """The plan while it is built: its models, its jobs, and the identity of each given (not trained) model."""

    cfg: StudyConfig
    models: dict[str, ModelEntry]
    inputs: dict[str, dict]
    jobs: dict[str, Job] = field(default_factory=dict)

    def add(self, job: Job) -> Job:
        self.jobs[job.name] = job
        return job

    def deps(self, model: ModelEntry) -> list[str]:
        return [model.producer] if model.producer else []

    def labels(self, role: str) -> list[str]:
        return [m for m in self.models if self.models[m].role == role]


def _add_students(plan: _Plan, identities: dict) -> None:
    """One train job per student; a method that saves several students (its registry entry's ``students``, e.g.
    dml's student_a and student_b) gives models <label>, <label>-b, ... from one job."""
    cfg = plan.cfg
    for label, overrides in students(cfg):
        params = {"overrides": overrides, **train_params(cfg, label, overrides, identities)}
        job = plan.add(Job(f"train/{label}", "train", label, cfg.root / "students" / label, params=params))
        method = str(overrides.get("method", cfg.distill.get("method", "kd")))
        alpha = float(overrides.get("alpha", alpha_default(cfg)))
        saved = student_outputs(label, method, job.out)
        job.saves = [Path(out) for _, out in saved]
        for name, out in saved:
            plan.models[name] = ModelEntry(
                name, "student", out, name, producer=job.name, alpha=alpha, distill_method=method
            )


def _add_pruned(plan: _Plan, calib: dict, identities: dict) -> None:
    """The ``prune:`` section: a prune job per (model, variant), and a recovery training job per recovery."""
    cfg = plan.cfg
    for label, base_label, flags, recoveries in cfg.prune.plan():
        base = plan.models.get(base_label)
        if base is None or base.role not in ("teacher", "student"):
            trained = ", ".join(["teacher", *plan.labels("student")])
            raise ConfigError(
                f"{cfg.path}: prune.models: {base_label!r} is not the teacher or a trained student ({trained})"
            )
        if flags["method"] == "vocab" and not calib["file"]:
            raise ConfigError(
                f"{cfg.path}: prune.variants: {label} (vocab) keeps the tokens of local training rows; set "
                "distill.data_files (or quantize.calibration_file) to a file"
            )
        params = {"flags": flags, "calibration": calib, "input": plan.inputs.get(base_label), "seed": cfg.seed}
        out = cfg.root / "pruned" / label
        job = plan.add(Job(f"prune/{label}", "prune", label, out, plan.deps(base), params, init=base.path))
        entry = {"variant": label, "flags": flags, "recover": "none"}
        if "none" in recoveries:
            plan.models[label] = ModelEntry(label, "pruned", str(out), base_label, job.name, prune=entry)
        for recover in (r for r in recoveries if r != "none"):
            _add_recovery(plan, label, base_label, job, recover, {**entry, "recover": recover}, identities)


def _add_recovery(plan: _Plan, label: str, base_label: str, prune_job: Job, recover: str, entry: dict, identities):
    """``<label>+<recover>``: llmdiet distill from the teacher with the pruned model as the student (alpha 0 for
    finetune: learning-rate rewinding, the original schedule from its start)."""
    cfg = plan.cfg
    overrides = {"alpha": 0.0} if recover == "finetune" else {}
    name = f"{label}+{recover}"
    out = cfg.root / "students" / name
    params = {"overrides": overrides, **train_params(cfg, name, overrides, identities)}
    params["student"] = {"pruned": prune_job.name}  # its content is the prune job's output (in the fingerprint)
    job = plan.add(Job(f"recover/{name}", "recover", name, out, [prune_job.name], params, init=str(prune_job.out)))
    alpha = float(overrides.get("alpha", alpha_default(cfg)))
    method = str(cfg.distill.get("method", "kd"))
    plan.models[name] = ModelEntry(name, "pruned", str(out), base_label, job.name, None, alpha, method, prune=entry)


def _calibration_identity(cfg: StudyConfig) -> dict:
    from llmdiet.fingerprint import file_sha256

    calib = calibration(cfg)
    sha = file_sha256(calib["file"]) if calib["file"] and Path(calib["file"]).is_file() else None
    return {**calib, "sha256": sha}


def _add_quantized(plan: _Plan, calib: dict) -> None:
    """The teacher and the chosen trained students (distill-then-quantize), each with every usable method."""
    from llmdiet.quantize import METHODS

    cfg = plan.cfg
    wanted = cfg.quantize.students
    unknown = [
        s for s in wanted if s != "all" and (s not in plan.models or plan.models[s].role not in ("student", "pruned"))
    ]
    if unknown:
        raise ConfigError(
            f"{cfg.path}: quantize.students: unknown {unknown} (trained students: all, "
            f"{', '.join(plan.labels('student'))}; pruned models: {', '.join(plan.labels('pruned')) or 'none'})"
        )
    for base in list(plan.models.values()):
        if base.role == "vanilla" or (base.role == "student" and "all" not in wanted and base.label not in wanted):
            continue
        if base.role == "pruned" and base.label not in wanted:  # prune, then quantize: only when named
            continue
        for method in usable_quantize_methods(cfg):
            label = f"{base.label}+{method}"
            params = {"method": method, "seed": cfg.seed}
            if METHODS[method].calibrated:
                params["calibration"] = calib
            out = cfg.root / "quantized" / label.replace("+", "-")
            params = {**params, "input": plan.inputs.get(base.label)}
            job = plan.add(Job(f"quantize/{label}", "quantize", label, out, deps=plan.deps(base), params=params))
            plan.models[label] = ModelEntry(
                label,
                "quantized",
                str(job.out),
                base.label,
                producer=job.name,
                method=method,
                alpha=base.alpha,
                distill_method=base.distill_method,
                prune=base.prune,
            )


def _add_speculative(plan: _Plan) -> None:
    """The teacher decoding with a trained student as its draft (``eval.draft``)."""
    ev = plan.cfg.eval
    if ev.draft is None:
        return
    draft = plan.models.get(ev.draft)
    if draft is None or draft.role != "student":
        trained = ", ".join(plan.labels("student"))
        raise ConfigError(f"{plan.cfg.path}: eval.draft: {ev.draft!r} is not a trained student (trained: {trained})")
    label = f"{TEACHER}+draft:{ev.draft}"
    plan.models[label] = ModelEntry(
        label, "speculative", plan.models[TEACHER].path, TEACHER, producer=draft.producer, draft=ev.draft
    )
    plan.inputs[label] = plan.inputs[TEACHER]


def _add_evals(plan: _Plan) -> None:
    cfg, ev = plan.cfg, plan.cfg.eval
    params = {
        "sets": [eval_set_identity(s) for s in ev.scored_sets],
        "batch_size": ev.batch_size,
        "max_new_tokens": ev.max_new_tokens,
        "num_beams": ev.num_beams,
        "limit": ev.limit,
        "device": ev.device,
        "statistics": {"n_bootstrap": cfg.statistics.n_bootstrap, "seed": cfg.statistics.seed},
    }
    for label, model in list(plan.models.items()):
        job_params = {**params, "input": plan.inputs.get(label)}
        if model.method == "dynamic-int8":  # the harness's default scheme: results of the other one are not reused
            job_params["int8_activation_scales"] = "per_row"
        plan.add(Job(f"eval/{label}", "eval", label, cfg.root / "eval" / label, plan.deps(model), job_params))


def _add_bit_sweeps(plan: _Plan, calib: dict) -> None:
    cfg, ev, bs = plan.cfg, plan.cfg.eval, plan.cfg.bit_sweep
    unknown = [m for m in bs.models if m != "all" and m not in plan.models]
    if unknown:
        raise ConfigError(f"{cfg.path}: bit_sweep.models: unknown {unknown} (models: all, {', '.join(plan.models)})")
    if not (bs.models and bs.methods and bs.bits):
        return
    params = {
        "bits": bs.bits,
        "methods": bs.methods,
        "eval_set": eval_set_identity(bs.eval_set or ev.in_domain[0]),
        "limit": bs.limit,
        "calibration": {**calib, "count": bs.calibration_rows},
        "scale": bs.scale,
        "batch_size": ev.batch_size,
        "max_new_tokens": ev.max_new_tokens,
    }
    for label, model in list(plan.models.items()):
        if model.role == "quantized" or ("all" not in bs.models and label not in bs.models):
            continue
        job_params = {**params, "input": plan.inputs.get(label)}
        plan.add(Job(f"bits/{label}", "bits", label, cfg.root / "bits" / label, plan.deps(model), job_params))


def _add_speed(plan: _Plan) -> None:
    ev = plan.cfg.eval
    params = {
        "set": eval_set_identity(ev.in_domain[0]),
        "batch_size": ev.batch_size,
        "max_new_tokens": ev.max_new_tokens,
        "num_beams": ev.num_beams,
        "device": ev.device,
        "latency_sentences": ev.latency_sentences,
        "speed_sentences": ev.speed_sentences,
        "repeats": ev.speed_repeats,
        "inputs": plan.inputs,
        "models": sorted(plan.models),
    }
    deps = sorted({m.producer for m in plan.models.values() if m.producer})
    plan.add(Job("speed", "speed", "*", plan.cfg.root / "speed", params=params, deps=deps))
