"""The study's jobs through a scheduler: ``llmdiet study --executor local|slurm`` (submitit).

Each job that is not done is submitted as ``python -m llmdiet study --config FILE --job NAME`` (a training job with
``processes > 1`` under ``accelerate launch``), with the resources of its kind from the config's ``cluster:``
section, its log under ``STUDY_DIR/logs/<job>/`` and the same fingerprints, done markers, locks and resume as an
in-process run: a job that was killed is submitted again on the next ``llmdiet study --executor ...``, a done one
is not.

- ``slurm``: every job at once, each with ``--dependency=afterok:`` on the jobs it needs that this submission
  queued (jobs already done need no dependency; jobs still queued from an earlier submission, recorded in
  ``logs/submitted.json``, are not queued twice), then a report job after all of them. Returns at once.
- ``local``: submitit's LocalExecutor has no dependencies, so the jobs are started here as their dependencies
  finish (``cluster.parallel`` at once; the speed job alone), then STUDY.md is written as in-process.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmdiet.config import ConfigError
from llmdiet.study.plan import StudyPlan
from llmdiet.study.state import status

logger = logging.getLogger("llmdiet.study.executor")

EXECUTORS = ("local", "slurm")
ALONE = ("speed",)  # kinds that time things: nothing else runs beside them (local executor)
QUEUED = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


def job_argv(plan: StudyPlan, name: str | None) -> list[str]:
    """``study --config FILE --output_dir DIR`` and ``--job NAME`` (``--report`` when ``name`` is None)."""
    argv = ["study", "--config", str(Path(plan.config.path).resolve()), "--output_dir", str(plan.config.root.resolve())]
    return [*argv, *(["--job", name] if name else ["--report"])]


def log_dir(plan: StudyPlan, name: str) -> Path:
    return plan.config.root / "logs" / name.replace("/", "__")


class Submitter:
    """Builds one submitit executor per job (its kind's resources, its own log folder) and submits it."""

    def __init__(self, plan: StudyPlan, cluster: str, factory: Callable[..., Any] | None = None):
        import submitit

        self.plan, self.cluster = plan, cluster
        self.factory = factory or submitit.AutoExecutor
        self.local_gpus = _local_gpus() if cluster == "local" else 0

    def submit(self, name: str | None, kind: str, after: list[str]):
        """Submit the job ``name`` (None: the report) to start after the scheduler jobs ``after`` succeed."""
        import submitit

        resources = dict(self.plan.config.cluster.for_kind(kind))
        processes = resources.pop("processes")
        executor = self.factory(folder=str(log_dir(self.plan, name or "report")), cluster=self.cluster)
        if self.cluster == "local":  # LocalExecutor hides every GPU it is not given: give it the machine's
            resources["gpus_per_node"] = self.local_gpus
        slurm = {f"slurm_{k}": v for k, v in self.plan.config.cluster.slurm.items()}
        if after:
            extra = {**slurm.get("slurm_additional_parameters", {}), "dependency": "afterok:" + ":".join(after)}
            slurm["slurm_additional_parameters"] = {**extra, "kill-on-invalid-dep": "yes"}
        executor.update_parameters(name=f"llmdiet-{name or 'report'}", **resources, **slurm)
        argv = job_argv(self.plan, name)
        launcher = [sys.executable] if processes == 1 else ["accelerate", "launch", "--num_processes", str(processes)]
        # a command line, as a user would type it: a non-zero exit fails the job, its output goes to the job's log
        return executor.submit(submitit.helpers.CommandFunction([*launcher, "-m", "llmdiet", *argv]))


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - no torch CUDA: no GPU
        return 0


def run_with_executor(plan: StudyPlan, cluster: str, factory: Callable[..., Any] | None = None) -> int:
    if cluster not in EXECUTORS:
        raise ConfigError(f"--executor {cluster}: expected one of {', '.join(EXECUTORS)} (or leave it out: in process)")
    submitter = Submitter(plan, cluster, factory)
    if cluster == "slurm":
        return submit_to_slurm(plan, submitter)
    return run_locally(plan, submitter)


# ----------------------------------------------------------------------------- slurm


def submitted_path(plan: StudyPlan) -> Path:
    return plan.config.root / "logs" / "submitted.json"


def _still_queued(plan: StudyPlan) -> dict[str, str]:
    """Jobs of an earlier submission that Slurm still holds (queued or running): name -> Slurm job id."""
    try:
        earlier = json.loads(submitted_path(plan).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    held = {}
    for name, job_id in earlier.get("jobs", {}).items():
        if name in plan.jobs and status(plan, name) != "done":
            if slurm_state(log_dir(plan, name), job_id).split()[0] in QUEUED:
                held[name] = job_id
    return held


def slurm_state(folder: Path, job_id: str) -> str:
    """Slurm's state of a job (sacct, through submitit), e.g. PENDING, RUNNING, COMPLETED, FAILED, UNKNOWN."""
    import submitit

    return str(submitit.SlurmJob(folder=folder, job_id=job_id).state or "UNKNOWN")


def submit_to_slurm(plan: StudyPlan, submitter: Submitter) -> int:
    """Every job not done, with its dependencies as Slurm dependencies, then the report after them."""
    ids = _still_queued(plan)
    for name in ids:
        logger.info("%s: still queued or running as Slurm job %s, not submitted again", name, ids[name])
    for name, job in plan.jobs.items():
        if name in ids or status(plan, name) in ("done", "running"):
            continue
        ids[name] = submitter.submit(name, job.kind, [ids[d] for d in job.deps if d in ids]).job_id
        logger.info("%s: Slurm job %s", name, ids[name])
    report = submitter.submit(None, "report", list(ids.values())).job_id
    submitted_path(plan).parent.mkdir(parents=True, exist_ok=True)
    submitted_path(plan).write_text(json.dumps({"jobs": ids, "report": report, "time": time.time()}, indent=2))
    print(
        f"submitted {len(ids)} job(s) and the report ({report}) to Slurm; logs in {plan.config.root / 'logs'}; "
        f"STUDY.md when all finish (llmdiet study --config {plan.config.path} --list shows their state)"
    )
    return 0


# ----------------------------------------------------------------------------- local


class LocalRun:
    """The local scheduler's state: jobs to do, running (submitit job objects), finished and failed."""

    def __init__(self, plan: StudyPlan):
        self.plan = plan
        self.finished = {n for n in plan.jobs if status(plan, n) == "done"}
        self.todo = [n for n in plan.jobs if n not in self.finished]
        self.running: dict[str, Any] = {}
        self.failed: dict[str, str] = {}  # name -> why (and where its log is)

    def blocked(self, name: str) -> bool:
        return any(d in self.failed or self.blocked(d) for d in self.plan.jobs[name].deps)

    def ready(self) -> list[str]:
        deps_done = [n for n in self.todo if all(d in self.finished for d in self.plan.jobs[n].deps)]
        return [n for n in deps_done if status(self.plan, n) != "running"]  # another process runs it: wait

    def collect(self) -> None:
        for name, job in list(self.running.items()):
            if not job.done():
                continue
            del self.running[name]
            if status(self.plan, name) == "done":
                self.finished.add(name)
                logger.info("%s: done", name)
            else:
                self.failed[name] = f"did not finish (log: {_log_file(job)})"

    def start(self, submitter: Submitter, parallel: int) -> None:
        for name in self.ready():
            alone = self.plan.jobs[name].kind in ALONE
            busy = any(self.plan.jobs[n].kind in ALONE for n in self.running)
            if busy or len(self.running) >= parallel or (alone and self.running):
                return
            self.todo.remove(name)
            self.running[name] = submitter.submit(name, self.plan.jobs[name].kind, [])
            logger.info("%s: started (local job %s, log %s)", name, self.running[name].job_id, log_dir(self.plan, name))

    def stuck(self) -> list[str]:
        return [n for n in self.todo if self.blocked(n)]


def _log_file(job) -> Path:
    return job.paths.stderr


def run_locally(plan: StudyPlan, submitter: Submitter, poll_s: float = 0.5) -> int:
    """Start each job when its dependencies are done; STUDY.md at the end (as in process)."""
    run = LocalRun(plan)
    while True:
        run.collect()
        for name in run.stuck():
            run.todo.remove(name)
            run.failed[name] = "not run: a job it needs failed"
        run.start(submitter, plan.config.cluster.parallel)
        if not run.running and not run.ready():
            break
        time.sleep(poll_s)
    leftover = [n for n in run.todo if n not in run.failed]
    for name in leftover:  # done by another process meanwhile, or still running there
        run.failed[name] = f"{status(plan, name)} (held by another process)"
    if run.failed:
        for name, why in run.failed.items():
            print(f"{name}: {why}", file=sys.stderr)
        print(f"{len(run.failed)} job(s) not done; run the same command again to resume them", file=sys.stderr)
        return 1
    from llmdiet.study.markdown import answer
    from llmdiet.study.report import collect, write_report

    path = write_report(plan)
    print("\n\n".join(answer(collect(plan))))
    print(f"\nwrote {path} (figures in {plan.config.root / 'figures'}; job logs in {plan.config.root / 'logs'})")
    return 0
