"""The settings of one distillation run, as dataclasses with help text and range checks.

- :class:`DistillationArguments`: the models, alpha and T, the method and the teacher's caches, plus every
  registered method's and student modifier's own flags (:mod:`llmdiet.distill.methods`): the class inherits
  their config dataclasses, so each flag is declared once, in its method's module.
- :class:`DataArguments`: the parallel data and its train/dev rows.
- :class:`TrainerFlagChecks`: the Seq2SeqTrainingArguments flags whose mistakes are caught before torch loads;
  :func:`check_training_values` is the one rule set, run on those flags early and on the real
  ``Seq2SeqTrainingArguments`` later.

:func:`build_settings` makes all three from Python values (the Python API and the study); the CLI parses the
same dataclasses with ``HfArgumentParser`` (:func:`parse_settings`). Either way the dataclasses' own checks run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from llmdiet.compat import transformers_major  # noqa: E402
from llmdiet.config import ConfigError, check_range, coerce_fields, load_yaml
from llmdiet.constants import (
    REFERENCE_DATASET,
    REFERENCE_DEV_START,
    REFERENCE_PREFIX,
    REFERENCE_STUDENT,
    REFERENCE_TEACHER,
    REFERENCE_TRAIN_ROWS,
    SCORED_METRICS,
)
from llmdiet.distill.methods import (
    check_given_flags,
    config_types,
    foreign_options,
    get_method,
    method_config,
    method_help,
    methods,
    modifiers,
)

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class _RunArguments:
    """The flags every method shares (the methods' own come from their config dataclasses)."""

    teacher_model: str = field(default=REFERENCE_TEACHER, metadata={"help": "Teacher: hub id or local directory."})
    student_model: str = field(
        default=REFERENCE_STUDENT, metadata={"help": "Student initialisation: hub id or local directory."}
    )
    tokenizer: Optional[str] = field(default=None, metadata={"help": "Tokenizer (default: the student's)."})
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the teacher term in [0, 1]: loss = alpha*T^2*KL(teacher||student) + "
            "(1-alpha)*CE(labels). 0 is plain fine-tuning (no teacher forward)."
        },
    )
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature T of the KD term (> 0)."})
    teacher_dtype: str = field(
        default="float32",
        metadata={
            "help": "Teacher precision: float32 or bfloat16 (never float16 for T5).",
            "choices": ["float32", "bfloat16"],
        },
    )
    method: str = field(default="kd", metadata={"help": method_help(), "choices": list(methods())})
    teacher_cache: Optional[str] = field(
        default=None,
        metadata={
            "help": "Directory of cached teacher top-k log-probs (built there on first use, resumable). "
            "Training then needs no teacher forward; KD uses a top-k + tail distribution."
        },
    )
    teacher_cache_topk: int = field(default=32, metadata={"help": "k of the teacher cache (>= 1)."})
    teacher_device_map: Optional[str] = field(
        default=None,
        metadata={
            "help": "A teacher too big for one device: accelerate places it across GPUs, CPU and disk "
            "(device_map) to build --teacher_cache; training then reads the cache.",
            "choices": ["auto", "balanced", "balanced_low_0", "sequential"],
        },
    )
    teacher_max_memory: Optional[str] = field(
        default=None,
        metadata={"help": "Per-device limits of --teacher_device_map as DEVICE=SIZE pairs: 0=20GiB,cpu=60GiB."},
    )
    teacher_offload_folder: Optional[str] = field(
        default=None,
        metadata={
            "help": "Where --teacher_device_map puts the layers that fit nowhere (default: OUTPUT_DIR/teacher-offload, removed after training)."
        },
    )
    sequence_kd: str = field(
        default="off",
        metadata={
            "help": "Sequence-level KD: train on the teacher's beam-search translations of the training "
            "sources instead of ('replace') or besides ('mix') the references.",
            "choices": ["off", "replace", "mix"],
        },
    )
    sequence_kd_file: Optional[str] = field(
        default=None,
        metadata={
            "help": "JSONL cache of teacher translations (default: OUTPUT_DIR/teacher_translations.jsonl); "
            "an interrupted generation resumes from it."
        },
    )
    sequence_kd_beams: int = field(default=4, metadata={"help": "Beam size for the teacher's translations (>= 1)."})
    rebuild_caches: bool = field(
        default=False,
        metadata={
            "help": "Delete and rebuild the teacher cache / teacher translations when they were "
            "built with other inputs (otherwise such a mismatch stops the run)."
        },
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "auto: the Trainer's choice (a GPU when there is one); cpu: train on the CPU (the Trainer's "
            "--use_cpu); cuda: refuse to start without a GPU.",
            "choices": ["auto", "cpu", "cuda"],
        },
    )
    plan: bool = field(
        default=False,
        metadata={
            "help": "Print the planned peak memory of a training step per device (teacher, student, gradients, "
            "optimizer, activations; from the shapes, nothing loaded) for these flags, on 1 and 8 GPUs of "
            "--plan_gpu_gib, then exit."
        },
    )
    plan_gpu_gib: float = field(default=80.0, metadata={"help": "Memory of one GPU for --plan's fit lines (GiB)."})
    eval_max_new_tokens: int = field(
        default=128,
        metadata={
            "help": "Tokens generated per eval sentence for the in-training BLEU/chrF/ROUGE-L "
            "(--predict_with_generate); 128 as in llmdiet eval, so both give one BLEU."
        },
    )


@dataclass
class _OverwriteFlag:
    """``--overwrite_output_dir``: a Seq2SeqTrainingArguments flag in transformers 4.x, removed in 5.x; llmdiet's
    output-directory guard reads it, so on 5.x llmdiet declares it itself (same name, same meaning)."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in an output_dir that holds checkpoints of another run."}
    )


_OWN_TRAINER_FLAGS = (_OverwriteFlag,) if transformers_major() >= 5 else ()
# the flag for the early check: on 4.x it belongs to Seq2SeqTrainingArguments, which the early check does not parse
EARLY_TRAINER_FLAGS = () if _OWN_TRAINER_FLAGS else (_OverwriteFlag,)


@dataclass
class DistillationArguments(*config_types(), _RunArguments, *_OWN_TRAINER_FLAGS):  # type: ignore[misc]  # bases: the registry's configs
    def __post_init__(self) -> None:
        check_range("teacher_cache_topk", self.teacher_cache_topk, 1)
        check_range("plan_gpu_gib", self.plan_gpu_gib, 0.0, low_open=True)
        check_range("sequence_kd_beams", self.sequence_kd_beams, 1)
        check_range("eval_max_new_tokens", self.eval_max_new_tokens, 1)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, low_open=True)
        for config in config_types():  # each method's and modifier's own checks, on its own fields
            config(**{f.name: getattr(self, f.name) for f in fields(config)})
        method = get_method(self.method)
        foreign = foreign_options(self.method, self)
        if foreign:
            raise ConfigError(f"{'; '.join(foreign)}, not to --method {self.method}: drop them or choose that method")
        for name, modifier in modifiers().items():
            if modifier.active(self) and name not in method.modifiers:
                raise ConfigError(
                    f"--method {self.method} does not combine with {name} "
                    f"({'--student_init copy_layers' if name == 'shrink' else '--student_fake_quant'}); "
                    "drop one of them"
                )
        self._check_placement()
        if self.teacher_cache and not self.cache_usable():
            if not method.teacher_cache:
                reason = f": {method.no_cache_reason}" if method.no_cache_reason else ""
                raise ConfigError(f"--teacher_cache cannot serve --method {self.method}{reason}; drop --teacher_cache")
            raise ConfigError(
                "--hidden_weight needs the teacher's hidden states, which --teacher_cache does not "
                "keep; drop one of them"
            )

    def _check_placement(self) -> None:
        from llmdiet.distill.teacher_placement import parse_max_memory

        if (self.teacher_max_memory or self.teacher_offload_folder) and not self.teacher_device_map:
            raise ConfigError("--teacher_max_memory and --teacher_offload_folder need --teacher_device_map auto")
        if self.teacher_device_map and not self.teacher_cache:
            raise ConfigError(
                "--teacher_device_map places the teacher to build --teacher_cache: give --teacher_cache DIR "
                "(methods that need the live teacher, such as gkd and dml, shard it with an accelerate config instead)"
            )
        parse_max_memory(self.teacher_max_memory)

    def method_config(self) -> Any:
        """This run's method config (e.g. a GKDConfig) built from its flags."""
        return method_config(self.method, self)

    def needs_teacher(self) -> bool:
        """Whether training uses the teacher (its logits, its hidden states, or its samples)."""
        return get_method(self.method).needs_teacher(self.alpha, self.method_config()) or self.hidden_weight > 0

    def cache_usable(self) -> bool:
        """Whether this run can train from the teacher's top-k cache (its method and modifiers allow it)."""
        return get_method(self.method).teacher_cache and all(
            m.teacher_cache(self) for m in modifiers().values() if m.active(self)
        )

    def card_text(self) -> str:
        """The objective in one sentence, for the model card: the method's text and any modifier's."""
        text = get_method(self.method).card(self)
        extra = [m.card(self) for m in modifiers().values() if m.active(self)]
        if self.sequence_kd != "off":
            extra.append(f"sequence-level KD ({self.sequence_kd}, teacher beams {self.sequence_kd_beams})")
        return "; ".join([text, *extra])


@dataclass
class DataArguments:
    dataset_name: str = field(
        default=REFERENCE_DATASET, metadata={"help": "Hub dataset id (ignored when --data_files is given)."}
    )
    dataset_revision: Optional[str] = field(default=None, metadata={"help": "Hub dataset revision (commit) to pin."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split to slice from."})
    data_files: Optional[str] = field(
        default=None,
        metadata={"help": "Local JSONL/JSON/TSV/CSV/Parquet file with parallel rows (replaces the hub dataset)."},
    )
    source_column: str = field(default="en", metadata={"help": "Column holding the source text."})
    target_column: str = field(default="fr", metadata={"help": "Column holding the target text."})
    no_header: bool = field(
        default=False, metadata={"help": "The --data_files TSV/CSV has no header row: two columns, source then target."}
    )
    train_start: int = field(default=0, metadata={"help": "First training row (rows are taken in file order)."})
    train_rows: int = field(default=REFERENCE_TRAIN_ROWS, metadata={"help": "Number of training rows."})
    eval_rows: int = field(
        default=1_000, metadata={"help": "Dev rows (checkpoint selection, in-training BLEU; 0: none)."}
    )
    eval_start: Optional[int] = field(
        default=None,
        metadata={
            "help": "First dev row. Default: 12,000 for the reference dataset (PGV: after its 10,000-11,999 test rows); "
            "right after the training rows for --data_files and any other dataset. Dev rows that overlap a declared "
            "test set are refused."
        },
    )
    source_prefix: Optional[str] = field(
        default=None,
        metadata={
            "help": "Prompt prefix of every source ('' = none). Default: the reference T5 prefix "
            f"('{REFERENCE_PREFIX}') for T5-family students, none for other families."
        },
    )
    source_lang: Optional[str] = field(
        default=None,
        metadata={
            "help": "Source language code of a multilingual tokenizer (M2M100 'en', NLLB 'eng_Latn', mBART-50 "
            "'en_XX'); refused for one-direction models."
        },
    )
    target_lang: Optional[str] = field(
        default=None,
        metadata={
            "help": "Target language code: the tokenizer's tgt_lang and the student's forced first token "
            "(forced_bos_token_id, saved in its generation config)."
        },
    )
    max_source_length: int = field(
        default=256, metadata={"help": "Sources longer than this are truncated (and counted)."}
    )
    max_target_length: int = field(
        default=256, metadata={"help": "Targets longer than this are truncated (and counted)."}
    )
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip (and count in the log) empty/malformed rows instead of failing."}
    )
    replay_set: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "Replay against forgetting: sets of other directions or domains (names or YAML files in the eval-set "
            "format, e.g. demo-fr-en-train demo-ko-en-train) whose rows are mixed into the training data, each with "
            "its own prefix; the teacher scores them like any training row. Counted in training_log.json and the card."
        },
    )
    replay_fraction: float = field(
        default=0.2,
        metadata={
            "help": "With --replay_set: the share of replay rows in the training mix, in (0, 1) (0.2 with 1,000 "
            "training rows adds 250 replay rows, drawn evenly from the sets with the training seed)."
        },
    )
    test_overlap: str = field(
        default="refuse",
        metadata={
            "help": "Training, replay or dev rows whose source or target text (NFC, whitespace collapsed) occurs in a "
            "declared test set: 'refuse' (one line naming the set) or 'drop' (remove those rows, counted in "
            "training_log.json)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.replay_set, str):
            self.replay_set = [self.replay_set]
        check_range("replay_fraction", self.replay_fraction, 0, 1, low_open=True, high_open=True)
        if self.test_overlap not in ("refuse", "drop"):
            raise ConfigError(f"--test_overlap must be 'refuse' or 'drop', got {self.test_overlap!r}")
        check_range("train_start", self.train_start, 0)
        check_range("train_rows", self.train_rows, 1)
        check_range("eval_rows", self.eval_rows, 0)
        check_range("eval_start", self.eval_start, 0)
        check_range("max_source_length", self.max_source_length, 1)
        check_range("max_target_length", self.max_target_length, 1)
        train_end = self.train_start + self.train_rows
        if self.eval_rows and self.dev_start < train_end and self.dev_start + self.eval_rows > self.train_start:
            raise ConfigError(
                f"--eval_start {self.dev_start}: the dev rows [{self.dev_start}, "
                f"{self.dev_start + self.eval_rows}) overlap the training rows [{self.train_start}, "
                f"{train_end}); start them at {train_end} or later"
            )

    @property
    def dev_start(self) -> int:
        if self.eval_start is not None:
            return self.eval_start
        if not self.data_files and self.dataset_name == REFERENCE_DATASET:
            return REFERENCE_DEV_START  # PGV's published split: dev rows after its test rows
        return self.train_start + self.train_rows

    def source_key(self) -> tuple:
        from llmdiet.evaluation.eval_sets import data_source_key

        return (
            data_source_key(file=self.data_files)
            if self.data_files
            else data_source_key(hub=self.dataset_name, split=self.dataset_split)
        )

    def leaks(self, test_sets: list | None = None) -> list[str]:
        """Problems where training or dev rows are rows of a test set (declared test sets of the same data)."""
        from llmdiet.evaluation.eval_sets import named_test_sets, overlapping_sets

        sets = named_test_sets() if test_sets is None else test_sets
        found = []
        for what, start, count in (
            ("training", self.train_start, self.train_rows),
            ("dev", self.dev_start, self.eval_rows),
        ):
            hits = overlapping_sets(self.source_key(), start, start + count, sets) if count else []
            if hits:
                found.append(f"the {what} rows [{start}, {start + count}) are test rows of {', '.join(hits)}")
        return found


# ----------------------------------------------------------------------------- the Trainer's flags

GENERATION_METRICS = (*SCORED_METRICS, *(f"eval_{m}" for m in SCORED_METRICS))


def check_training_values(values: dict) -> None:
    """The Trainer-flag mistakes llmdiet refuses, on a mapping of flag -> value (early flags or the real
    ``Seq2SeqTrainingArguments``' fields): one rule set for both."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        check_range(name, values.get(name), 1)
    check_range("num_train_epochs", values.get("num_train_epochs"), 0.0, low_open=True)
    check_range("learning_rate", values.get("learning_rate"), 0.0)
    if values.get("fp16"):
        raise ConfigError(
            "--fp16 is refused: T5 activations overflow to NaN in float16; use --bf16 true (GPU/CPU "
            "with bf16) or the default float32"
        )
    if values.get("generation_max_length") is not None:
        raise ConfigError(
            "--generation_max_length is not used by llmdiet distill: set --eval_max_new_tokens "
            "(the in-training BLEU uses the same generation settings as llmdiet eval)"
        )
    if values.get("output_dir"):
        out = Path(values["output_dir"])
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--output_dir {out}: exists and is not a directory; choose a directory path")
        parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"--output_dir {out}: {parent} is not a writable directory; choose another --output_dir")


@dataclass
class TrainerFlagChecks:
    """The Trainer flags whose mistakes are caught before transformers loads (the full parse checks the rest)."""

    output_dir: Optional[str] = field(default=None, metadata={"help": "Where the student and checkpoints go."})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={"help": "Training batch per device."})
    per_device_eval_batch_size: Optional[int] = field(default=None, metadata={"help": "Eval batch per device."})
    gradient_accumulation_steps: Optional[int] = field(default=None, metadata={"help": "Steps accumulated per update."})
    num_train_epochs: Optional[float] = field(default=None, metadata={"help": "Training epochs."})
    learning_rate: Optional[float] = field(default=None, metadata={"help": "Peak learning rate."})
    fp16: Optional[bool] = field(default=None, metadata={"help": "Refused: T5 overflows in float16."})
    generation_max_length: Optional[int] = field(default=None, metadata={"help": "Refused: see --eval_max_new_tokens."})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "latest, or a checkpoint folder."})

    def __post_init__(self) -> None:
        check_training_values(vars(self))


def check_training_arguments(training: Any) -> list[str]:
    """The real Seq2SeqTrainingArguments checked by :func:`check_training_values`, plus what only they show;
    settings that would give wrong numbers are refused, one is adjusted (returned as a note for the log)."""
    check_training_values(
        {
            name: getattr(training, name, None)
            for name in (
                "per_device_train_batch_size",
                "per_device_eval_batch_size",
                "gradient_accumulation_steps",
                "num_train_epochs",
                "learning_rate",
                "fp16",
                "generation_max_length",
            )
        }
    )
    if training.n_gpu > 1:
        raise ConfigError(
            f"one process sees {training.n_gpu} GPUs (nn.DataParallel), which llmdiet does not support: its token "
            "counts are per process; launch one process per GPU: accelerate launch --multi_gpu --num_processes N ..."
        )
    notes = []
    if not training.predict_with_generate and training.metric_for_best_model in GENERATION_METRICS:
        notes.append(
            "--predict_with_generate false: no BLEU during training, so the best checkpoint is chosen by "
            f"eval loss (the distillation objective) instead of {training.metric_for_best_model}"
        )
        training.metric_for_best_model, training.greater_is_better = "loss", False
    return notes


def check_output_dir(output_dir: str, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into a directory that holds checkpoints unless told to resume or to overwrite.

    (Before, such a re-run silently restarted at step 0 and rotated the old checkpoints away.)
    """
    out = Path(output_dir)
    if resume not in (None, "", "False", "false") or overwrite or not out.is_dir():
        return
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*") if p.is_dir())
    if checkpoints:
        raise ConfigError(
            f"--output_dir {out} already holds {', '.join(checkpoints[-3:])}: pass "
            "--resume_from_checkpoint latest to continue that run, or --overwrite_output_dir true to "
            "start over (its checkpoints will be replaced)"
        )


# ----------------------------------------------------------------------------- building the settings


class DistillSettings(NamedTuple):
    """One run's settings: ``run(*settings)``."""

    distill: DistillationArguments
    data: DataArguments
    training: Seq2SeqTrainingArguments


def merged_values(preset: str | None, config: str | None, options: dict, presets: dict) -> dict:
    """Defaults < ``preset`` < YAML ``config`` < ``options``, as one mapping of flag -> Python value."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"unknown preset '{preset}' (known: {', '.join(sorted(presets))})")
        values.update(presets[preset]())
    if config is not None:
        values.update(load_yaml(config))
    values.update({k: v for k, v in options.items() if v is not None})
    return values


def build_settings(values: dict, where: str = "options") -> DistillSettings:
    """The three dataclasses made directly from ``values`` (flag -> value; strings from YAML are converted to
    each field's type); unknown keys and every dataclass check fail as one ConfigError naming ``where``."""
    from transformers import Seq2SeqTrainingArguments

    own = {f.name for f in fields(DistillationArguments)} | {f.name for f in fields(DataArguments)}
    trainer_fields = {f.name for f in fields(Seq2SeqTrainingArguments) if f.init}
    unknown = sorted(set(values) - own - trainer_fields)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} (see llmdiet distill --help)")
    try:
        check_given_flags(str(values.get("method") or "kd"), values)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if values.get("device") == "cpu":
        values = {**values, "use_cpu": True}
    try:
        distill = DistillationArguments(**coerce_fields(DistillationArguments, values))
        data = DataArguments(**coerce_fields(DataArguments, values))
        TrainerFlagChecks(**coerce_fields(TrainerFlagChecks, values))
        training = Seq2SeqTrainingArguments(**coerce_fields(Seq2SeqTrainingArguments, values))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:  # the Trainer's own checks
        raise ConfigError(f"{where}: {' '.join(str(err).split())}") from None
    check_device(distill.device)
    return DistillSettings(distill, data, training)


def check_device(device: str) -> None:
    """``--device cuda`` without a GPU stops here, before any model loads."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible here; use --device cpu or auto")


__all__ = [
    "DistillationArguments",
    "DataArguments",
    "TrainerFlagChecks",
    "DistillSettings",
    "build_settings",
    "merged_values",
    "check_training_values",
    "check_training_arguments",
    "check_output_dir",
]
