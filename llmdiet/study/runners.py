"""Running the study's jobs: :func:`run_job` (skip, resume or redo one job by its state) and one runner per kind
(train, quantize, eval, bits, speed), each a thin call into the command that does the work."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from llmdiet.config import ConfigError
from llmdiet.study.fingerprints import calibration, distill_arguments
from llmdiet.study.plan import Job, StudyPlan, eval_device
from llmdiet.study.speed import run_speed
from llmdiet.study.state import (
    damaged_outputs,
    is_main_process,
    lock_dir,
    move_stale,
    read_marker,
    record_outputs,
    stale_reason,
    status,
    write_marker,
)

logger = logging.getLogger("llmdiet.study.jobs")


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
            move_stale(plan, job)
        started = time.time()
        if is_main_process():
            write_marker(plan, name, "running", started)
        logger.info("%s: %s", name, "resuming" if state == "interrupted" else "running")
        extra = RUNNERS[job.kind](plan, job)
        if is_main_process():
            write_marker(plan, name, "done", started, {**extra, "outputs": record_outputs(job)})
    return "ran"


def run_all(plan: StudyPlan, only: list[str] | None = None) -> dict[str, str]:
    return {name: run_job(plan, name) for name in (only or plan.jobs)}


# ----------------------------------------------------------------------------- runners


def _run_train(plan: StudyPlan, job: Job) -> dict:
    from transformers.trainer_utils import get_last_checkpoint

    from llmdiet.distill.run import run

    cfg = plan.config
    args, data, training = distill_arguments(cfg, job.params["overrides"], str(job.out), job.init)
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
        source_column=calib["source_column"],
        source_prefix=calib["prefix"],
        max_calibration_samples=calib["count"],
        overwrite_output_dir=True,
        tokenizer=plan.config.tokenizer,
        seed=plan.config.seed,
    )
    return {"disk_bytes": meta.get("disk_bytes")}


def _run_eval(plan: StudyPlan, job: Job) -> dict:
    from llmdiet.evaluation.harness import EvalArguments, run_eval
    from llmdiet.evaluation.statistics import confidence_interval

    cfg, ev = plan.config, plan.config.eval
    model = plan.models[job.model]
    command = ["llmdiet", "study", "--config", cfg.path, "--job", job.name]
    common: dict[str, Any] = dict(
        model=model.path,
        tokenizer=cfg.tokenizer if model.role not in ("quantized", "pruned") else None,  # they carry their own
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
            eval_set=list(ev.scored_sets),
            output_dir=str(job.out),
            batch_size=ev.batch_size,
            max_eval_samples=ev.limit,
            **common,
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
        max_eval_samples=bs.limit,
        calibration_file=calib["file"],
        source_column=calib["source_column"],
        target_column=calib["target_column"],
        max_calibration_samples=bs.calibration_rows,
        source_prefix=calib["prefix"],
        batch_size=cfg.eval.batch_size,
        max_new_tokens=cfg.eval.max_new_tokens,
        scale=bs.scale,
        output_dir=str(job.out),
        seed=cfg.seed,
    )
    summary = run_sweep(args, command=["llmdiet", "study", "--config", cfg.path, "--job", job.name])
    return {"points": len(summary["points"])}


def _run_speed(plan: StudyPlan, job: Job) -> dict:
    return run_speed(plan, job)


def _run_prune(plan: StudyPlan, job: Job) -> dict:
    from llmdiet.prune.job import PruneArguments, prune

    cfg, calib = plan.config, job.params["calibration"]
    flags = dict(job.params["flags"])
    if flags["method"] == "vocab":  # the training rows' tokens (never the test rows of the same file)
        data = distill_arguments(cfg, {}, str(cfg.root / "students" / "_check"))[1]
        flags.update(vocab_file=[calib["file"]], max_vocab_samples=data.train_start + data.train_rows)
    args = PruneArguments(
        model=job.init,  # the model it prunes
        output_dir=str(job.out),
        overwrite_output_dir=True,
        tokenizer=cfg.tokenizer,
        calibration_file=calib["file"],
        **(
            {"calibration_dataset": calib["dataset"][0], "calibration_split": calib["dataset"][1]}
            if "dataset" in calib
            else {}
        ),
        source_column=calib["source_column"],
        target_column=calib["target_column"],
        source_prefix=calib["prefix"],
        max_calibration_samples=calib["count"],
        seed=cfg.seed,
        **flags,
    )
    report = prune(args, command=["llmdiet", "study", "--config", cfg.path, "--job", job.name])
    return {"parameters": report["parameters"]}


RUNNERS = {
    "train": _run_train,
    "prune": _run_prune,
    "recover": _run_train,
    "quantize": _run_quantize,
    "eval": _run_eval,
    "bits": _run_bits,
    "speed": _run_speed,
}
