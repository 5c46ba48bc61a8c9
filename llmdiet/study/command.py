"""``llmdiet study``: the whole study from one YAML file, or any part of it.

    llmdiet study --config recipes/configs/demo.yaml             # every job not yet done, then STUDY.md
    llmdiet study --config recipes/configs/demo.yaml --list      # jobs, dependencies, state
    llmdiet study --config recipes/configs/demo.yaml --list --json   # the same for other tools
    llmdiet study --config recipes/configs/demo.yaml --job train/alpha-0.5   # one job (Slurm arrays, several machines)
    llmdiet study --config recipes/configs/demo.yaml --report    # STUDY.md from whatever has finished
    llmdiet study --config recipes/configs/reference.yaml --executor slurm   # every job a Slurm job (submitit)

A training job can itself run on several GPUs: ``accelerate launch recipes/study.py --config X --job train/alpha-0.5``.
"""

from __future__ import annotations

import builtins
import sys
from dataclasses import dataclass, field
from typing import Optional  # (not list[...]: the field "list" shadows the builtin inside the class)

from llmdiet.config import ConfigError, _pop_option, parse_config, precheck


@dataclass
class StudyArguments:
    output_dir: Optional[str] = field(
        default=None, metadata={"help": "Where the jobs write (overrides the config's study_dir)."}
    )
    list: bool = field(default=False, metadata={"help": "Print the jobs with their dependencies and state, then exit."})
    job: builtins.list[str] = field(
        default_factory=lambda: [],
        metadata={"help": "Run only these jobs (their dependencies must be done); no report is written."},
    )
    report: bool = field(default=False, metadata={"help": "Only write STUDY.md and the figures from finished jobs."})
    executor: Optional[str] = field(
        default=None,
        metadata={
            "help": "Run the jobs through submitit instead of in this process: local (each job its own process, "
            "started as its dependencies finish) or slurm (every job submitted with Slurm dependencies, then the "
            "report); resources from the config's cluster: section, logs in STUDY_DIR/logs/.",
            "choices": ["local", "slurm"],
        },
    )
    json: bool = field(
        default=False,
        metadata={"help": "With --list: the plan as JSON (jobs, kind, state, dependencies, fingerprint, output)."},
    )

    def __post_init__(self):
        if sum([self.list, bool(self.job), self.report]) > 1:
            raise ConfigError("--list, --job and --report are alternatives: give one of them (or none to run all)")
        if self.executor and (self.list or self.job or self.report):
            raise ConfigError("--executor runs the whole study: leave out --list, --job and --report")
        if self.json and not self.list:
            raise ConfigError("--json goes with --list (llmdiet study --config FILE --list --json)")


def list_jobs(plan) -> str:
    from llmdiet.study.state import status

    rows = [f"{'job':<44} {'state':<12} {'needs':<34} output"]
    for name, job in plan.jobs.items():
        rows.append(f"{name:<44} {status(plan, name):<12} {', '.join(job.deps) or '-':<34} {job.out}")
    return "\n".join(rows)


def plan_json(plan) -> str:
    """The plan for other tools (a cluster executor, CI): one object per job, in dependency order."""
    import json

    from llmdiet.study.state import status

    jobs = [
        {
            "name": name,
            "kind": job.kind,
            "state": status(plan, name),
            "deps": list(job.deps),
            "fingerprint": plan.fingerprints[name],
            "output": str(job.out),
        }
        for name, job in plan.jobs.items()
    ]
    return json.dumps({"config": plan.config.path, "study_dir": str(plan.config.root), "jobs": jobs}, indent=2)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --config is the study's YAML (its own format, read by load_study_config), not a file of flag defaults
    config_path = _pop_option(argv, "--config")
    if "-h" not in argv and "--help" not in argv and not config_path:
        raise ConfigError("--config is required: the study's YAML file (e.g. recipes/configs/demo.yaml)")
    early = precheck([StudyArguments], argv, prog="llmdiet study")
    from llmdiet.study.config import load_study_config

    if config_path:  # the YAML's own checks answer before transformers (and torch) load: ~0.3 s, not ~4 s
        load_study_config(config_path, early.get("output_dir"))
    (args,) = parse_config(
        [StudyArguments],
        argv,
        prog="llmdiet study",
        description="The study from one YAML (--config FILE): distill, quantize, evaluate, "
        "compare; resumable, job by job.",
        config_help="The study's YAML file (required; e.g. recipes/configs/demo.yaml).",
    )
    from llmdiet.study.plan import build_plan
    from llmdiet.study.report import write_report
    from llmdiet.study.runners import run_all

    cfg = load_study_config(str(config_path), args.output_dir)
    plan = build_plan(cfg)
    if args.list:
        print(plan_json(plan) if args.json else list_jobs(plan))
        return 0
    if args.report:
        path = write_report(plan)
        print(f"wrote {path}")
        return 0
    if args.job:
        for name in args.job:
            plan.job(name)  # unknown names fail before anything runs
        run_all(plan, args.job)
        return 0
    if args.executor:
        from llmdiet.study.executor import run_with_executor

        return run_with_executor(plan, args.executor)
    run_all(plan)
    path = write_report(plan)
    from llmdiet.study.markdown import answer
    from llmdiet.study.report import collect

    print("\n\n".join(answer(collect(plan))))
    print(f"\nwrote {path} (figures in {cfg.root / 'figures'})")
    return 0
