"""The study's configuration: one YAML file, one dataclass per section, checked before anything runs.

    study_dir: runs/study-demo            # every job writes under it
    teacher: llmdiet-demo:teacher         # hub id, local directory or llmdiet-demo:*
    student: llmdiet-demo:student         # the student before distillation ("vanilla")
    alphas: [0, 0.25, 0.5, 0.75, 1]       # one distilled student per alpha (alpha 0 = fine-tuning only)
    distill: {preset: demo, ...}          # llmdiet distill flags shared by every student
    methods: {dkd: {method: dkd}, ...}    # more students: a name and the distill flags that differ
    quantize: {...}                       # QuantizeSettings
    bit_sweep: {...}                      # BitSweepSettings
    eval: {...}                           # EvalSettings
    statistics: {...}                     # StatisticsSettings

Every key is checked: an unknown key or a value out of range stops with one line naming the file, the
section and the key. The ``distill`` and ``methods`` sections are parsed by ``llmdiet distill``'s own
parser (``HfArgumentParser`` over DistillationArguments, DataArguments, Seq2SeqTrainingArguments).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from llmdiet.config import ConfigError, check_range, load_yaml

STUDY_KEYS = ("study_dir", "teacher", "student", "tokenizer", "seed", "alphas", "distill", "methods", "quantize",
              "bit_sweep", "eval", "statistics")


@dataclass
class EvalSettings:
    in_domain: list[str] = field(default_factory=lambda: ["pgv-en-fr"],
                                 metadata={"help": "In-domain eval sets (names under eval_sets/ or files); the first "
                                                   "one decides the verdict and the speed figures."})
    out_of_domain: list[str] = field(default_factory=lambda: ["pgv-fr-en", "opus100-ko-en"],
                                     metadata={"help": "Out-of-domain eval sets."})
    batch_size: int = field(default=32, metadata={"help": "Batch size of every evaluation (>= 1): the throughput figure."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens generated per sentence (>= 1)."})
    num_beams: int = field(default=1, metadata={"help": "Beam size of every evaluation (1 = greedy)."})
    limit: Optional[int] = field(default=None, metadata={"help": "Score only the first N rows of each set."})
    latency_sentences: int = field(default=64, metadata={"help": "In-domain rows translated one at a time for the "
                                                                 "batch-1 latency figure (0: skip)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda: where the float and torch models are evaluated."})

    def __post_init__(self):
        if not self.in_domain:
            raise ConfigError("in_domain: at least one eval set is needed")
        check_range("batch_size", self.batch_size, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("num_beams", self.num_beams, 1)
        check_range("limit", self.limit, 1)
        check_range("latency_sentences", self.latency_sentences, 0)

    @property
    def sets(self) -> list[str]:
        return [*self.in_domain, *self.out_of_domain]


@dataclass
class QuantizeSettings:
    methods: list[str] = field(default_factory=lambda: ["dynamic-int8", "onnx-static-int8", "ct2-int8"],
                               metadata={"help": "llmdiet quantize methods applied to the teacher (see llmdiet "
                                                 "quantize --list_methods); torch-bf16 gives the bf16 teacher."})
    students: list[str] = field(default_factory=lambda: ["all"], metadata={
        "help": "Distill-then-quantize: the trained students quantized with the same methods: [all], [] or labels."})
    calibration_file: Optional[str] = field(default=None, metadata={
        "help": "Parallel file whose sources calibrate the static methods (training rows); default: the distill data."})
    calibration_source_column: Optional[str] = field(default=None, metadata={"help": "Its source column (default: "
                                                                                    "the distill source column)."})
    calibration_count: int = field(default=128, metadata={"help": "Calibration sources (>= 1)."})

    def __post_init__(self):
        from llmdiet.quantize import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown} (known: {', '.join(METHODS)})")
        check_range("calibration_count", self.calibration_count, 1)


@dataclass
class BitSweepSettings:
    bits: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6, 8], metadata={"help": "Bit widths, each in [2, 8]."})
    methods: list[str] = field(default_factory=lambda: ["rtn", "gpfq"], metadata={"help": "rtn and/or gpfq."})
    models: list[str] = field(default_factory=lambda: ["all"], metadata={
        "help": "Models swept: [all] (teacher, vanilla and trained students), [] (none), or a list of labels "
                "(teacher, student-vanilla, alpha-0.5, a method name)."})
    eval_set: Optional[str] = field(default=None, metadata={"help": "Set scored at every bit width (default: the "
                                                                    "first in-domain set)."})
    limit: Optional[int] = field(default=500, metadata={"help": "Rows of that set scored per point."})
    calibration_rows: int = field(default=128, metadata={"help": "GPFQ calibration rows from the training data."})
    scale: float = field(default=1.16, metadata={"help": "Alphabet radius factor C (> 0)."})

    def __post_init__(self):
        for b in self.bits:
            check_range("bits", b, 2, 8)
        bad = [m for m in self.methods if m not in ("rtn", "gpfq")]
        if bad:
            raise ConfigError(f"methods: unknown {bad} (use rtn and/or gpfq)")
        check_range("limit", self.limit, 1)
        check_range("calibration_rows", self.calibration_rows, 1)
        check_range("scale", self.scale, 0.0, low_open=True)


@dataclass
class StatisticsSettings:
    n_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of each 95% confidence interval."})
    paired_test: str = field(default="bs", metadata={"help": "bs (paired bootstrap) or ar (approximate randomization)."})
    n_samples: int = field(default=1000, metadata={"help": "Resamples/permutations of each paired test (>= 100)."})
    seed: int = field(default=12345, metadata={"help": "SACREBLEU_SEED of every resampling."})

    def __post_init__(self):
        check_range("n_bootstrap", self.n_bootstrap, 100)
        check_range("n_samples", self.n_samples, 100)
        if self.paired_test not in ("bs", "ar"):
            raise ConfigError(f"paired_test: expected bs or ar, got {self.paired_test!r}")


@dataclass
class StudyConfig:
    path: str  # the YAML file
    study_dir: str
    teacher: str
    student: str
    tokenizer: Optional[str]
    seed: int
    alphas: list[float]
    distill: dict  # llmdiet distill flags (parsed per student by the distill parser)
    methods: dict[str, dict]
    quantize: QuantizeSettings
    bit_sweep: BitSweepSettings
    eval: EvalSettings
    statistics: StatisticsSettings

    @property
    def root(self) -> Path:
        return Path(self.study_dir)

    @property
    def demo(self) -> bool:
        return any(m.startswith("llmdiet-demo:") for m in (self.teacher, self.student))


def _section(path: str, name: str, cls, values) -> object:
    """``cls(**values)`` with every problem reported as ``FILE: NAME.KEY: what is wrong``."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {name}: expected a mapping of key: value, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: {name}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        wants_list = typing.get_origin(hints[key]) is list
        if wants_list and not isinstance(value, list):
            raise ConfigError(f"{path}: {name}.{key}: expected a list, e.g. [{value}]")
        if not wants_list and isinstance(value, (list, dict)):
            raise ConfigError(f"{path}: {name}.{key}: expected one value, got a {type(value).__name__}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {name}: {str(err).lstrip('-')}") from None
    except TypeError as err:
        raise ConfigError(f"{path}: {name}: {err}") from None


def load_study_config(path: str | Path, study_dir: str | None = None) -> StudyConfig:
    """Read and check a study YAML (``study_dir`` overrides the file's)."""
    path = str(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} (known: {', '.join(STUDY_KEYS)})")
    for key in ("teacher", "student"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{path}: {key}: required (a hub id, a local directory or llmdiet-demo:{key})")
    alphas = data.get("alphas", [0.0, 0.25, 0.5, 0.75, 1.0])
    if not isinstance(alphas, list) or not all(isinstance(a, (int, float)) and 0 <= a <= 1 for a in alphas):
        raise ConfigError(f"{path}: alphas: expected a list of numbers in [0, 1], got {alphas!r}")
    if len(set(alphas)) != len(alphas):
        raise ConfigError(f"{path}: alphas: {alphas} has duplicates")
    methods = data.get("methods") or {}
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ConfigError(f"{path}: methods: expected name: {{distill flag: value, ...}} entries")
    for name in methods:
        if not str(name).replace("-", "").replace("_", "").replace(".", "").isalnum() or str(name).startswith("alpha-"):
            raise ConfigError(f"{path}: methods: name {name!r} must be letters, digits, '-', '_', '.' and not "
                              "start with 'alpha-'")
    distill = data.get("distill") or {}
    if not isinstance(distill, dict):
        raise ConfigError(f"{path}: distill: expected a mapping of llmdiet distill flag: value")
    for key in ("output_dir", "teacher_model", "student_model", "alpha"):
        if key in distill:
            raise ConfigError(f"{path}: distill.{key}: set by the study (use the top-level teacher/student/alphas)")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"{path}: seed: expected an integer, got {seed!r}")
    study_dir = study_dir or data.get("study_dir")
    if not study_dir:
        raise ConfigError(f"{path}: study_dir: required (where the jobs write), or pass --study_dir")
    return StudyConfig(
        path=path, study_dir=str(study_dir), teacher=data["teacher"], student=data["student"],
        tokenizer=data.get("tokenizer"), seed=seed, alphas=[float(a) for a in alphas], distill=distill,
        methods={str(k): v for k, v in methods.items()},
        quantize=_section(path, "quantize", QuantizeSettings, data.get("quantize")),
        bit_sweep=_section(path, "bit_sweep", BitSweepSettings, data.get("bit_sweep")),
        eval=_section(path, "eval", EvalSettings, data.get("eval")),
        statistics=_section(path, "statistics", StatisticsSettings, data.get("statistics")),
    )
