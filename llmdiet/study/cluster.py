"""The study's ``cluster:`` section: what each kind of job asks of a scheduler (submitit's names).

    cluster:
      parallel: 1                      # --executor local: jobs at once (the speed job always runs alone)
      slurm: {partition: gpu, account: myproject}    # any of submitit's Slurm parameters, for every job
      resources:                       # per job kind (train, recover, prune, quantize, eval, bits, speed, report)
        default: {cpus_per_task: 8, mem_gb: 32, timeout_min: 240}
        train: {gpus_per_node: 4, processes: 4, timeout_min: 720}    # processes > 1: accelerate launch

Nothing here changes what a job computes: the section is in no fingerprint, so changing it redoes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmdiet.config import ConfigError

JOB_KINDS = ("train", "recover", "prune", "quantize", "eval", "bits", "speed", "report")
TRAINING_KINDS = ("train", "recover")  # the kinds that train, on GPUs, and may run under accelerate launch
RESOURCE_KEYS = {  # submitit's generic parameter -> (type, minimum)
    "timeout_min": (int, 1),
    "cpus_per_task": (int, 1),
    "gpus_per_node": (int, 0),
    "mem_gb": (float, 0.1),
    "processes": (int, 1),  # llmdiet's: > 1 runs the job under accelerate launch --num_processes N
}
DEFAULTS = {
    "training": {"timeout_min": 720, "cpus_per_task": 8, "gpus_per_node": 1, "mem_gb": 64, "processes": 1},
    "other": {"timeout_min": 240, "cpus_per_task": 8, "gpus_per_node": 0, "mem_gb": 32, "processes": 1},
    "report": {"timeout_min": 30, "cpus_per_task": 2, "gpus_per_node": 0, "mem_gb": 8, "processes": 1},
}


def slurm_parameters() -> set[str]:
    from submitit.slurm.slurm import SlurmExecutor

    return set(SlurmExecutor._valid_parameters())


@dataclass
class ClusterSettings:
    parallel: int = field(
        default=1,
        metadata={
            "help": "--executor local: how many jobs run at once (>= 1). Above 1 the eval jobs' latency figures "
            "share the machine; the speed job always runs alone."
        },
    )
    slurm: dict = field(
        default_factory=dict,
        metadata={
            "help": "submitit Slurm parameters for every job, without the slurm_ prefix (partition, account, qos, "
            "constraint, additional_parameters, ...)."
        },
    )
    resources: dict = field(
        default_factory=dict,
        metadata={
            "help": "Per job kind (or default): timeout_min, cpus_per_task, gpus_per_node, mem_gb, and processes "
            "(training kinds: > 1 runs accelerate launch --num_processes N)."
        },
    )

    def __post_init__(self):
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or self.parallel < 1:
            raise ConfigError(f"parallel: expected an integer >= 1, got {self.parallel!r}")
        known = slurm_parameters() if self.slurm else set()
        unknown = sorted(set(self.slurm) - known)
        if unknown:
            raise ConfigError(
                f"slurm: unknown submitit Slurm parameter(s) {unknown} (known: {', '.join(sorted(known))})"
            )
        for kind, values in self.resources.items():
            self._check_kind(kind, values)

    @staticmethod
    def _check_kind(kind, values) -> None:
        if kind not in (*JOB_KINDS, "default"):
            raise ConfigError(f"resources.{kind}: not a job kind (default, {', '.join(JOB_KINDS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"resources.{kind}: expected a mapping like {{cpus_per_task: 8, timeout_min: 240}}")
        for key, value in values.items():
            if key not in RESOURCE_KEYS:
                raise ConfigError(f"resources.{kind}.{key}: unknown (known: {', '.join(RESOURCE_KEYS)})")
            kind_of, low = RESOURCE_KEYS[key]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not numeric or (kind_of is int and not isinstance(value, int)) or value < low:
                what = "an integer" if kind_of is int else "a number"
                raise ConfigError(f"resources.{kind}.{key}: expected {what} >= {low}, got {value!r}")
            if key == "processes" and value > 1 and kind not in (*TRAINING_KINDS, "default"):
                raise ConfigError(
                    f"resources.{kind}.processes: only training jobs ({', '.join(TRAINING_KINDS)}) run on several "
                    "processes; drop it here"
                )

    def for_kind(self, kind: str) -> dict:
        """The resources of one job kind: llmdiet's defaults, then ``default:``, then the kind's own entry."""
        base = "training" if kind in TRAINING_KINDS else "report" if kind == "report" else "other"
        merged = {**DEFAULTS[base], **self.resources.get("default", {}), **self.resources.get(kind, {})}
        if kind not in TRAINING_KINDS:
            merged["processes"] = 1
        return merged
