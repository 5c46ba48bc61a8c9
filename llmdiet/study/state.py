"""A study job's state on disk: ``jobs/<job>.json`` markers (fingerprint, status, recorded outputs), its lock, and
the checks that tell done, running, interrupted, stale and damaged jobs apart."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from llmdiet.study.plan import Job, StudyPlan

logger = logging.getLogger("llmdiet.study.jobs")


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
    if job.kind in ("train", "recover"):
        dirs = job.saves or [out]  # the registry's ``students`` sub-folders (dml), else the output itself
        return [out / "training_log.json"] + [d / f for d in dirs for f in counted_files(d)]
    if job.kind in ("quantize", "prune"):
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


def write_marker(plan: StudyPlan, name: str, state: str, started: float, extra: dict | None = None) -> None:
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


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def move_stale(plan: StudyPlan, job: Job) -> None:
    if not job.out.exists() or not is_main_process():
        return
    old = (read_marker(plan, job.name) or {}).get("fingerprint", "unknown")
    target = plan.config.root / "stale" / f"{job.name.replace('/', '__')}-{old}-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(job.out), target)
    marker_path(plan, job.name).unlink(missing_ok=True)
    logger.warning("%s: made with other settings; its output was moved to %s and the job is redone", job.name, target)
