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
from typing import Optional, TypeVar

from llmdiet.config import ConfigError, check_range, load_yaml, unwrap_optional
from llmdiet.study.cluster import ClusterSettings
from llmdiet.study.pruning import PruneSettings

STUDY_KEYS = (
    "study_dir",
    "teacher",
    "student",
    "tokenizer",
    "seed",
    "alphas",
    "distill",
    "methods",
    "quantize",
    "prune",
    "bit_sweep",
    "eval",
    "statistics",
    "verdict",
    "cluster",
)


@dataclass
class EvalSettings:
    in_domain: list[str] = field(
        default_factory=lambda: ["pgv-en-fr"],
        metadata={
            "help": "In-domain eval sets (names under eval_sets/ or files): every one is a decision set of the "
            "verdict; the first one also gives the speed figures, the bit sweep's default set and the plots."
        },
    )
    out_of_domain: list[str] = field(
        default_factory=lambda: ["pgv-fr-en", "opus100-ko-en"],
        metadata={
            "help": "Out-of-domain eval sets: decision sets of the verdict too (see verdict.require_out_of_domain)."
        },
    )
    batch_size: int = field(
        default=32, metadata={"help": "Batch size of every evaluation (>= 1): the throughput figure."}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens generated per sentence (>= 1)."})
    num_beams: int = field(default=1, metadata={"help": "Beam size of every evaluation (1 = greedy)."})
    limit: Optional[int] = field(default=None, metadata={"help": "Score only the first N rows of each set."})
    latency_sentences: int = field(
        default=64,
        metadata={
            "help": "In-domain rows translated one at a time per speed round for the batch-1 latency figure (>= 1)."
        },
    )
    device: str = field(
        default="cpu", metadata={"help": "cpu or cuda: where the float and torch models are evaluated."}
    )
    dev: Optional[str] = field(
        default="pgv-en-fr-dev",
        metadata={
            "help": "Dev set (role: dev) every model is also scored on: the best student and quality ties are chosen on "
            "it, never on a test set (null: no dev set; the report then says it cannot pick a best student)."
        },
    )
    speed_repeats: int = field(
        default=3,
        metadata={
            "help": "Timing rounds (>= 3) of the speed job: every model is timed once per round, round after round "
            "(interleaved), and the report gives the median and the min-max spread."
        },
    )
    draft: Optional[str] = field(
        default=None,
        metadata={
            "help": "Label of a trained student (e.g. alpha-0.5) that also drafts for the teacher: adds the row "
            "teacher+draft:<label>, the teacher with speculative decoding (same greedy output for a float teacher, "
            "timed by the speed job; results record the acceptance rate). null: no such row."
        },
    )
    speed_sentences: int = field(
        default=128,
        metadata={"help": "In-domain rows translated at eval.batch_size per round for the throughput figure (>= 1)."},
    )

    def __post_init__(self):
        if not self.in_domain:
            raise ConfigError("in_domain: at least one eval set is needed")
        check_range("speed_repeats", self.speed_repeats, 3)
        check_range("speed_sentences", self.speed_sentences, 1)
        if self.device != "cpu" and self.device != "cuda" and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {self.device!r}")
        check_range("batch_size", self.batch_size, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("num_beams", self.num_beams, 1)
        check_range("limit", self.limit, 1)
        check_range("latency_sentences", self.latency_sentences, 1)

    @property
    def sets(self) -> list[str]:
        """The test sets (verdict and tables)."""
        return [*self.in_domain, *self.out_of_domain]

    @property
    def scored_sets(self) -> list[str]:
        """Every set each model is scored on: the test sets and the dev set."""
        return [*self.sets, *([self.dev] if self.dev else [])]


@dataclass
class QuantizeSettings:
    methods: list[str] = field(
        default_factory=lambda: ["dynamic-int8", "onnx-static-int8", "ct2-int8"],
        metadata={
            "help": "llmdiet quantize methods applied to the teacher (see llmdiet "
            "quantize --list_methods); torch-bf16 gives the bf16 teacher."
        },
    )
    students: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={
            "help": "Distill-then-quantize: the trained students quantized with the same methods: [all], [] or labels."
        },
    )
    calibration_file: Optional[str] = field(
        default=None,
        metadata={
            "help": "Parallel file whose sources calibrate the static methods (training rows); default: the distill data."
        },
    )
    calibration_source_column: Optional[str] = field(
        default=None, metadata={"help": "Its source column (default: the distill source column)."}
    )
    calibration_count: int = field(default=128, metadata={"help": "Calibration sources (>= 1)."})

    def __post_init__(self):
        from llmdiet.quantize import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown} (known: {', '.join(METHODS)})")
        check_range("calibration_count", self.calibration_count, 1)
        if self.calibration_file and not Path(self.calibration_file).expanduser().is_file():
            raise ConfigError(
                f"calibration_file: {self.calibration_file} does not exist (a parallel file of training rows)"
            )


@dataclass
class BitSweepSettings:
    bits: list[int] = field(
        default_factory=lambda: [2, 3, 4, 5, 6, 8], metadata={"help": "Bit widths, each in [2, 8]."}
    )
    methods: list[str] = field(default_factory=lambda: ["rtn", "gpfq"], metadata={"help": "rtn and/or gpfq."})
    models: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={
            "help": "Models swept: [all] (teacher, vanilla and trained students), [] (none), or a list of labels "
            "(teacher, student-vanilla, alpha-0.5, a method name)."
        },
    )
    eval_set: Optional[str] = field(
        default=None, metadata={"help": "Set scored at every bit width (default: the first in-domain set)."}
    )
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
    paired_test: str = field(
        default="bs",
        metadata={
            "help": "Unused (kept so older configs load): the verdict is the "
            "non-inferiority rule of the verdict section."
        },
    )
    n_samples: int = field(
        default=1000, metadata={"help": "Unused (kept so older configs load): see verdict.n_resamples."}
    )
    seed: int = field(
        default=12345,
        metadata={
            "help": "Seed of every resampling (>= 1: sacreBLEU reads 0 as "
            "'no seed', which would make every run differ)."
        },
    )

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 1:
            raise ConfigError(
                f"seed: {self.seed!r} is not a usable seed (sacreBLEU treats 0 as unseeded); use an "
                "integer >= 1, e.g. 12345"
            )
        check_range("n_bootstrap", self.n_bootstrap, 100)
        check_range("n_samples", self.n_samples, 100)
        if self.paired_test not in ("bs", "ar"):
            raise ConfigError(f"paired_test: expected bs or ar, got {self.paired_test!r}")


MINIMISE = ("size", "latency", "throughput", "memory")


@dataclass
class VerdictSettings:
    margin: dict = field(
        default_factory=lambda: {"bleu": 1.0, "chrf": 0.5},
        metadata={
            "help": "Non-inferiority margin per metric (bleu, chrf; points, >= 0): a model is as good as the teacher "
            "only if (model - teacher) is shown to be above -margin for every metric, fixed before the scores."
        },
    )
    confidence: float = field(
        default=0.95,
        metadata={"help": "1 - alpha of the family-wise error over all candidate models (Holm), in (0.5, 1)."},
    )
    n_resamples: int = field(
        default=10_000,
        metadata={
            "help": "Paired bootstrap resamples (>= 1000; with m candidates the smallest reachable p is 1/(B+1), and "
            "Holm's first threshold is alpha/m)."
        },
    )
    minimise: str = field(
        default="size",
        metadata={
            "help": "What the answer minimises among the non-inferior models: size (MB), latency (batch-1 ms per "
            "sentence), throughput (batched sentences/s, maximised) or memory (peak RSS of the eval)."
        },
    )
    tie: float = field(
        default=0.02,
        metadata={
            "help": "Relative difference under which two models tie on size or memory (speed ties: overlapping "
            "min-max spreads); ties go to the better dev-set BLEU."
        },
    )
    require_out_of_domain: bool = field(
        default=True,
        metadata={
            "help": "A model is as good as the teacher only if it is non-inferior on every in-domain AND every "
            "out-of-domain set (each with the margins; Holm over the candidates). false: decide on the in-domain "
            "sets only, for out-of-domain sets declared only to watch them. STUDY.md gives the other rule's answer "
            "beside it either way."
        },
    )

    def __post_init__(self):
        if not isinstance(self.margin, dict) or not self.margin:
            raise ConfigError("margin: expected a mapping like {bleu: 1.0, chrf: 0.5}")
        unknown = sorted(set(self.margin) - {"bleu", "chrf"})
        if unknown:
            raise ConfigError(f"margin: unknown metric(s) {unknown} (bleu, chrf)")
        for k, v in self.margin.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"margin.{k}: expected a number >= 0, got {v!r}")
        self.margin = {k: float(v) for k, v in self.margin.items()}
        check_range("confidence", self.confidence, 0.5, 1.0, low_open=True, high_open=True)
        check_range("n_resamples", self.n_resamples, 1000)
        check_range("tie", self.tie, 0.0)
        if self.minimise not in MINIMISE:
            raise ConfigError(f"minimise: expected one of {', '.join(MINIMISE)}, got {self.minimise!r}")

    @property
    def alpha(self) -> float:
        return 1 - self.confidence


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
    verdict: VerdictSettings = field(default_factory=VerdictSettings)
    prune: PruneSettings = field(default_factory=PruneSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)  # resources only: in no fingerprint

    @property
    def root(self) -> Path:
        return Path(self.study_dir)

    @property
    def demo(self) -> bool:
        return any(m.startswith("llmdiet-demo:") for m in (self.teacher, self.student))


_T = TypeVar("_T")


def _check_scalar(path: str, section: str, key: str, hint, value) -> None:
    """YAML scalars against the field's type: no true/false for a number, no text for a number or a flag."""
    kind = unwrap_optional(hint)
    if value is None:
        return
    if kind in (int, float) and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float))
    ):
        raise ConfigError(
            f"{path}: {section}.{key}: expected {'an integer' if kind is int else 'a number'}, got {value!r}"
        )
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{path}: {section}.{key}: expected true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{path}: {section}.{key}: expected text, got {value!r}")


def _section(path: str, name: str, cls: type[_T], values) -> _T:  # cls: a settings dataclass
    """``cls(**values)`` with every problem reported as ``FILE: NAME.KEY: what is wrong``."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {name}: expected a mapping of key: value, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: {name}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        _check_scalar(path, name, key, hints[key], value)
        wants_list = typing.get_origin(hints[key]) is list
        wants_dict = hints[key] is dict or typing.get_origin(hints[key]) is dict
        if wants_list and not isinstance(value, list):
            raise ConfigError(f"{path}: {name}.{key}: expected a list, e.g. [{value}]")
        if wants_dict and not isinstance(value, dict):
            raise ConfigError(f"{path}: {name}.{key}: expected a mapping, e.g. {{bleu: 1.0}}")
        if not wants_list and not wants_dict and isinstance(value, (list, dict)):
            raise ConfigError(f"{path}: {name}.{key}: expected one value, got a {type(value).__name__}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {name}: {str(err).lstrip('-')}") from None
    except TypeError as err:
        raise ConfigError(f"{path}: {name}: {err}") from None


def _check_model(path: str, key: str, name) -> None:
    """``teacher:`` / ``student:``: a hub id, an existing save_pretrained directory, or llmdiet-demo:KEY."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: {key}: required (a hub id, a local directory or llmdiet-demo:{key})")
    meant_local = name.startswith((".", "/", "~")) or name.count("/") > 1  # not a hub id (owner/)name
    if meant_local and not Path(name).expanduser().exists():
        raise ConfigError(
            f"{path}: {key}: {name} does not exist (a local model directory, a hub id "
            f"owner/name, or llmdiet-demo:{key})"
        )
    if Path(name).expanduser().is_dir() and not (Path(name).expanduser() / "config.json").is_file():
        raise ConfigError(f"{path}: {key}: {name} has no config.json (not a save_pretrained model directory)")


def _alphas(path: str, alphas) -> list:
    if not isinstance(alphas, list) or not all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in alphas
    ):
        raise ConfigError(f"{path}: alphas: expected a list of numbers in [0, 1] (not true/false), got {alphas!r}")
    labels = [f"alpha-{a:g}" for a in alphas]
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"{path}: alphas: {alphas} give the same student name twice "
            f"({', '.join(sorted({x for x in labels if labels.count(x) > 1}))}); drop one"
        )
    return alphas


def _methods(path: str, methods) -> dict:
    """``methods:``: name -> distill flags; names that collide with the study's own models are refused."""
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ConfigError(f"{path}: methods: expected name: {{distill flag: value, ...}} entries")
    reserved = {"teacher", "student-vanilla"}
    for name in methods:
        if not str(name).replace("-", "").replace("_", "").replace(".", "").isalnum() or str(name).startswith("alpha-"):
            raise ConfigError(
                f"{path}: methods: name {name!r} must be letters, digits, '-', '_', '.' and not start with 'alpha-'"
            )
        if name in reserved:
            raise ConfigError(f"{path}: methods: name {name!r} is reserved for the study's own model; rename it")
        base, _, suffix = str(name).rpartition("-")
        if len(suffix) == 1 and base in methods and _students_of(methods[base]) > ord(suffix) - ord("a") > 0:
            raise ConfigError(
                f"{path}: methods: name {name!r} collides with a student of the {methods[base].get('method')} "
                f"method {base!r} (it saves {_students_of(methods[base])} students); rename it"
            )
    return methods


def load_study_config(path: str | Path, study_dir: str | None = None) -> StudyConfig:
    """Read and check a study YAML (``study_dir`` overrides the file's)."""
    path = str(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} (known: {', '.join(STUDY_KEYS)})")
    for key in ("teacher", "student"):
        _check_model(path, key, data.get(key))
    alphas = _alphas(path, data.get("alphas", [0.0, 0.25, 0.5, 0.75, 1.0]))
    methods = _methods(path, data.get("methods") or {})
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
        raise ConfigError(f"{path}: study_dir: required (where the jobs write), or pass --output_dir")
    return StudyConfig(
        path=path,
        study_dir=str(study_dir),
        teacher=data["teacher"],
        student=data["student"],
        tokenizer=data.get("tokenizer"),
        seed=seed,
        alphas=[float(a) for a in alphas],
        distill=distill,
        methods={str(k): v for k, v in methods.items()},
        quantize=_section(path, "quantize", QuantizeSettings, data.get("quantize")),
        bit_sweep=_section(path, "bit_sweep", BitSweepSettings, data.get("bit_sweep")),
        eval=_section(path, "eval", EvalSettings, data.get("eval")),
        statistics=_section(path, "statistics", StatisticsSettings, data.get("statistics")),
        verdict=_section(path, "verdict", VerdictSettings, data.get("verdict")),
        prune=_section(path, "prune", PruneSettings, data.get("prune")),
        cluster=_section(path, "cluster", ClusterSettings, data.get("cluster")),
    )


def _students_of(overrides: dict) -> int:
    """How many students a method entry's training job saves (its registry entry's ``students``; 1 by default)."""
    from llmdiet.distill.methods import get_method, methods

    method = str(overrides.get("method") or "kd") if isinstance(overrides, dict) else "kd"
    return len(get_method(method).students) or 1 if method in methods() else 1
