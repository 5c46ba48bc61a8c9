"""The distillation job: configuration, data, models, ``DistillationTrainer``, outputs.

``recipes/distill.py`` and ``llmdiet distill`` both call :func:`main`. Defaults reproduce the
reference study: teacher ``google/flan-t5-large``, student ``google/flan-t5-small``, Parallel
Global Voices En->Fr rows [0, 10000) for training, [12000, 13000) as the dev rows that pick checkpoints (rows
[10000, 12000) are the test set ``pgv-en-fr`` and are never used here), AdamW,
learning rate 1e-5, alpha 0.5. ``--preset demo`` runs everything offline on tiny local models.

Outputs in ``--output_dir``: the student (``save_pretrained``, safetensors) and its tokenizer,
``training_log.json`` (the Trainer's log history plus run metadata), ``loss_curve.png``
(total, CE, KD) and the Trainer's ``checkpoint-*`` folders for ``--resume_from_checkpoint``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING, Optional

from llmdiet.config import ConfigError, check_range, parse_config, precheck
from llmdiet.data import DataError, SkipReport, read_hub_dataset, read_parallel_file, take_rows, tokenize_rows
from llmdiet.demo import DEMO_MODEL_PREFIX
from llmdiet.modeling import load_seq2seq, parse_dtype, resolve_model
from llmdiet.provenance import provenance

if TYPE_CHECKING:  # transformers (and torch) load only once the arguments are known to be valid
    from transformers import Seq2SeqTrainingArguments

logger = logging.getLogger(__name__)




@dataclass
class DistillationArguments:
    teacher_model: str = field(default="google/flan-t5-large", metadata={"help": "Teacher: hub id or local directory."})
    student_model: str = field(
        default="google/flan-t5-small", metadata={"help": "Student initialisation: hub id or local directory."}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer (default: the student's)."})
    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the teacher term in [0, 1]: loss = alpha*T^2*KL(teacher||student) + "
                          "(1-alpha)*CE(labels). 0 is plain fine-tuning (no teacher forward)."},
    )
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature T of the KD term (> 0)."})
    teacher_dtype: str = field(
        default="float32", metadata={"help": "Teacher precision: float32 or bfloat16 (never float16 for T5).",
                                     "choices": ["float32", "bfloat16"]}
    )

    method: str = field(
        default="kd", metadata={"help": "kd: alpha*T^2*divergence + (1-alpha)*CE; dkd: decoupled KD, CE + T^2*(dkd_alpha*TCKD "
                                        "+ dkd_beta*NCKD) (alpha unused); gkd: on-policy GKD (student samples with "
                                        "probability --lmbda, scored by the teacher with --divergence; else kd); dml: "
                                        "deep mutual learning of two students (student_a/, student_b/), each "
                                        "(1-alpha)*CE + alpha*T^2*KL(peer || self) [+ --dml_teacher_weight teacher term].",
                                "choices": ["kd", "dkd", "gkd", "dml"]})
    divergence: str = field(
        default="forward_kl", metadata={"help": "kd's token divergence: forward_kl (classic), reverse_kl, jsd (with "
                                                "--jsd_beta; 0 = forward, 1 = reverse KL), skew_kl, skew_reverse_kl "
                                                "(with --skew_alpha).",
                                        "choices": ["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"]})
    jsd_beta: float = field(default=0.5, metadata={"help": "Interpolation beta of --divergence jsd, in [0, 1]."})
    skew_alpha: float = field(default=0.1, metadata={"help": "Skew a of skew_kl / skew_reverse_kl, in [0, 1)."})
    dkd_alpha: float = field(default=1.0, metadata={"help": "DKD weight of TCKD (target vs rest), >= 0."})
    dkd_beta: float = field(default=8.0, metadata={"help": "DKD weight of NCKD (non-target distribution), >= 0."})
    student_init: str = field(
        default="pretrained", metadata={"help": "pretrained: load --student_model; copy_layers: shrink the teacher "
                                                "(evenly spaced blocks, first and last kept; teacher width).",
                                        "choices": ["pretrained", "copy_layers"]})
    student_encoder_layers: Optional[int] = field(default=None, metadata={"help": "copy_layers: encoder blocks (>= 1)."})
    student_decoder_layers: Optional[int] = field(default=None, metadata={"help": "copy_layers: decoder blocks (>= 1)."})
    student_fake_quant: Optional[int] = field(
        default=None, metadata={"help": "Quantization-aware distillation: train the student through b-bit fake-quantized "
                                        "Linear weights (RTN per channel, straight-through estimator; LM head float); "
                                        "the saved student's weights lie on the grid. BITS in [2, 8]."})
    hidden_weight: float = field(
        default=0.0, metadata={"help": "copy_layers: weight of the hidden-state loss, the MSE between each student "
                                       "block's output and that of the teacher block it was copied from (>= 0)."})
    fake_quant_init: str = field(
        default="rtn", metadata={"help": "--student_fake_quant grid: rtn (per-channel round-to-nearest of the current "
                                         "weights) or gpfq (start from GPFQ-quantized weights on 128 training rows; "
                                         "train on GPFQ's per-layer grid).", "choices": ["rtn", "gpfq"]})
    dml_teacher_weight: float = field(default=0.0, metadata={"help": "dml: weight of an extra T^2*KL(teacher || "
                                                                     "student) term per student (>= 0; 0 = no teacher)."})
    student_b_model: Optional[str] = field(default=None, metadata={"help": "dml: the second student (default: a copy "
                                                                           "of the first, perturbed by --dml_noise)."})
    dml_noise: float = field(default=0.01, metadata={"help": "dml: std of the Gaussian perturbation of student b's "
                                                             "weights, relative to each tensor's std (>= 0)."})
    lmbda: float = field(default=0.5, metadata={"help": "gkd: probability that a training batch is on-policy (student "
                                                        "samples), in [0, 1]; 0 = kd."})
    gkd_temperature: float = field(default=1.0, metadata={"help": "gkd: sampling temperature of the student (> 0)."})
    gkd_max_new_tokens: int = field(default=64, metadata={"help": "gkd: most tokens sampled per target (>= 1)."})
    gkd_divergence_temperature: float = field(default=1.0, metadata={
        "help": "gkd: temperature of the divergence on sampled targets (> 0). 1 (default) is the GKD paper's and "
                "TRL's objective: the divergence of the unscaled distributions, no T^2 factor; another value "
                "softens both distributions and multiplies by T^2, as kd does. Reference batches use --temperature."})
    gkd_seq_kd: bool = field(default=False, metadata={"help": "gkd: off-policy batches use the teacher's samples "
                                                              "instead of the references."})
    teacher_cache: str | None = field(
        default=None,
        metadata={"help": "Directory of cached teacher top-k log-probs (built there on first use, resumable). "
                          "Training then needs no teacher forward; KD uses a top-k + tail distribution."},
    )
    teacher_cache_topk: int = field(default=32, metadata={"help": "k of the teacher cache (>= 1)."})
    sequence_kd: str = field(
        default="off",
        metadata={"help": "Sequence-level KD: train on the teacher's beam-search translations of the training "
                          "sources instead of ('replace') or besides ('mix') the references.",
                  "choices": ["off", "replace", "mix"]},
    )
    sequence_kd_file: str | None = field(
        default=None, metadata={"help": "JSONL cache of teacher translations (default: OUTPUT_DIR/teacher_translations.jsonl); "
                                        "an interrupted generation resumes from it."},
    )
    sequence_kd_beams: int = field(default=4, metadata={"help": "Beam size for the teacher's translations (>= 1)."})
    rebuild_caches: bool = field(
        default=False, metadata={"help": "Delete and rebuild the teacher cache / teacher translations when they were "
                                         "built with other inputs (otherwise such a mismatch stops the run)."})
    eval_max_new_tokens: int = field(
        default=128, metadata={"help": "Tokens generated per eval sentence for the in-training BLEU/chrF/ROUGE-L "
                                       "(--predict_with_generate); 128 as in llmdiet eval, so both give one BLEU."})

    def __post_init__(self):
        check_range("teacher_cache_topk", self.teacher_cache_topk, 1)
        check_range("sequence_kd_beams", self.sequence_kd_beams, 1)
        check_range("eval_max_new_tokens", self.eval_max_new_tokens, 1)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, low_open=True)
        check_range("jsd_beta", self.jsd_beta, 0.0, 1.0)
        check_range("skew_alpha", self.skew_alpha, 0.0, 1.0, high_open=True)
        check_range("dkd_alpha", self.dkd_alpha, 0.0)
        check_range("dkd_beta", self.dkd_beta, 0.0)
        check_range("lmbda", self.lmbda, 0.0, 1.0)
        check_range("student_fake_quant", self.student_fake_quant, 2, 8)
        check_range("student_encoder_layers", self.student_encoder_layers, 1)
        check_range("student_decoder_layers", self.student_decoder_layers, 1)
        if self.student_init == "copy_layers" and (self.student_encoder_layers is None or self.student_decoder_layers is None):
            raise ConfigError("--student_init copy_layers needs --student_encoder_layers N and --student_decoder_layers M")
        check_range("hidden_weight", self.hidden_weight, 0.0)
        check_range("dml_teacher_weight", self.dml_teacher_weight, 0.0)
        check_range("dml_noise", self.dml_noise, 0.0)
        if self.hidden_weight > 0 and self.student_init != "copy_layers":
            raise ConfigError("--hidden_weight needs --student_init copy_layers (it compares each student block with "
                              "the teacher block it was copied from); or set --hidden_weight 0")
        if self.hidden_weight > 0 and self.teacher_cache:
            raise ConfigError("--hidden_weight needs the teacher's hidden states, which --teacher_cache does not "
                              "keep; drop one of them")
        if self.fake_quant_init == "gpfq" and not self.student_fake_quant:
            raise ConfigError("--fake_quant_init gpfq needs --student_fake_quant BITS")
        if self.method == "dml" and (self.teacher_cache or self.student_fake_quant):
            raise ConfigError("--method dml trains two students against each other: --teacher_cache and "
                              "--student_fake_quant are not supported with it; drop them")
        if self.method != "dml" and (self.student_b_model or self.dml_teacher_weight):
            raise ConfigError("--student_b_model and --dml_teacher_weight belong to --method dml")
        check_range("gkd_temperature", self.gkd_temperature, 0.0, low_open=True)
        check_range("gkd_max_new_tokens", self.gkd_max_new_tokens, 1)
        check_range("gkd_divergence_temperature", self.gkd_divergence_temperature, 0.0, low_open=True)
        if self.teacher_cache and self.method == "gkd":
            raise ConfigError("--teacher_cache cannot serve --method gkd: on-policy targets are sampled anew every "
                              "step, so no teacher output can be cached; drop --teacher_cache")

    def needs_teacher(self) -> bool:
        """Whether training uses the teacher (its logits, its hidden states, or its samples)."""
        if self.method == "dml":
            return self.dml_teacher_weight > 0
        return self.alpha > 0 or self.method in ("dkd", "gkd") or self.hidden_weight > 0

    def loss_options(self) -> dict:
        if self.method == "dkd":
            return {"dkd_alpha": self.dkd_alpha, "dkd_beta": self.dkd_beta}
        if self.method == "dml":
            return {"dml_teacher_weight": self.dml_teacher_weight}
        options = {"divergence": self.divergence, "jsd_beta": self.jsd_beta, "skew_alpha": self.skew_alpha}
        if self.method == "gkd":
            options["gkd"] = {"lmbda": self.lmbda, "temperature": self.gkd_temperature,
                              "max_new_tokens": self.gkd_max_new_tokens, "seq_kd": self.gkd_seq_kd,
                              "divergence_temperature": self.gkd_divergence_temperature}
        return options


@dataclass
class DataArguments:
    dataset_name: str = field(
        default="Nicolas-BZRD/Parallel_Global_Voices_English_French",
        metadata={"help": "Hub dataset id (ignored when --data_files is given)."},
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision (commit) to pin."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split to slice from."})
    data_files: str | None = field(
        default=None, metadata={"help": "Local JSONL/JSON/TSV/CSV/Parquet file with parallel rows (replaces the hub dataset)."}
    )
    source_column: str = field(default="en", metadata={"help": "Column holding the source text."})
    target_column: str = field(default="fr", metadata={"help": "Column holding the target text."})
    no_header: bool = field(
        default=False, metadata={"help": "The --data_files TSV/CSV has no header row: two columns, source then target."}
    )
    train_start: int = field(default=0, metadata={"help": "First training row (rows are taken in file order)."})
    train_rows: int = field(default=10_000, metadata={"help": "Number of training rows."})
    eval_rows: int = field(default=1_000, metadata={"help": "Dev rows (checkpoint selection, in-training BLEU; 0: none)."})
    eval_start: int | None = field(default=12_000, metadata={
        "help": "First dev row (default for PGV: 12,000, after the 10,000-11,999 test rows; none = right after the "
                "training rows). Dev rows that overlap a declared test set of the same data are refused."})
    source_prefix: str = field(default="translate English to French: ", metadata={"help": "Prompt prefix of every source."})
    max_source_length: int = field(default=256, metadata={"help": "Sources longer than this are truncated (and counted)."})
    max_target_length: int = field(default=256, metadata={"help": "Targets longer than this are truncated (and counted)."})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip (and count in the log) empty/malformed rows instead of failing."}
    )

    def __post_init__(self):
        check_range("train_start", self.train_start, 0)
        check_range("train_rows", self.train_rows, 1)
        check_range("eval_rows", self.eval_rows, 0)
        check_range("eval_start", self.eval_start, 0)
        train_end = self.train_start + self.train_rows
        if self.eval_rows and self.dev_start < train_end and self.dev_start + self.eval_rows > self.train_start:
            raise ConfigError(f"--eval_start {self.dev_start}: the dev rows [{self.dev_start}, "
                              f"{self.dev_start + self.eval_rows}) overlap the training rows [{self.train_start}, "
                              f"{train_end}); start them at {train_end} or later")

    @property
    def dev_start(self) -> int:
        return self.train_start + self.train_rows if self.eval_start is None else self.eval_start

    def source_key(self) -> tuple:
        from llmdiet.evaluation.eval_sets import data_source_key

        return data_source_key(file=self.data_files) if self.data_files else \
            data_source_key(hub=self.dataset_name, split=self.dataset_split)

    def leaks(self, test_sets: list | None = None) -> list[str]:
        """Problems where training or dev rows are rows of a test set (declared test sets of the same data)."""
        from llmdiet.evaluation.eval_sets import named_test_sets, overlapping_sets

        sets = named_test_sets() if test_sets is None else test_sets
        found = []
        for what, start, count in (("training", self.train_start, self.train_rows), ("dev", self.dev_start, self.eval_rows)):
            hits = overlapping_sets(self.source_key(), start, start + count, sets) if count else []
            if hits:
                found.append(f"the {what} rows [{start}, {start + count}) are test rows of {', '.join(hits)}")
        return found
        check_range("max_source_length", self.max_source_length, 1)
        check_range("max_target_length", self.max_target_length, 1)


def reference_defaults() -> dict:
    """The study's settings that differ from the Trainer's own defaults."""
    return {"learning_rate": 1e-5, "optim": "adamw_torch", "output_dir": "runs/distill", "report_to": "none",
            "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "num_train_epochs": 3,
            "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 2, "logging_steps": 50,
            "predict_with_generate": False}


def demo_preset() -> dict:
    from llmdiet.demo import DEMO_DEV_ROWS, DEMO_EN_FR, DEMO_TRAIN_ROWS

    return {
        **reference_defaults(),
        "teacher_model": DEMO_MODEL_PREFIX + "teacher", "student_model": DEMO_MODEL_PREFIX + "student",
        "data_files": str(DEMO_EN_FR), "source_column": "en", "target_column": "fr",
        "train_rows": DEMO_TRAIN_ROWS, "eval_start": DEMO_DEV_ROWS[0], "eval_rows": DEMO_DEV_ROWS[1] - DEMO_DEV_ROWS[0],
        "max_source_length": 64, "max_target_length": 64,
        "output_dir": "runs/distill-demo", "learning_rate": 3e-3, "num_train_epochs": 6,
        "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64, "logging_steps": 10,
        "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 2, "seed": 0, "warmup_ratio": 0.05,
        "dataloader_num_workers": 0, "disable_tqdm": False,
        "predict_with_generate": True, "metric_for_best_model": "bleu",
        "load_best_model_at_end": True,
    }


PRESETS = {"reference": reference_defaults, "demo": demo_preset}


def load_splits(data: DataArguments):
    """Training and evaluation rows, validated, with a report of skipped rows."""
    report = SkipReport()
    need = max(data.train_start + data.train_rows, data.dev_start + data.eval_rows if data.eval_rows else 0)
    if data.data_files:
        rows = read_parallel_file(data.data_files, data.source_column, data.target_column,
                                  skip_bad_rows=data.skip_bad_rows, report=report, header=not data.no_header)
        what = data.data_files
    else:
        rows = read_hub_dataset(data.dataset_name, data.source_column, data.target_column, split=data.dataset_split,
                                revision=data.dataset_revision, start=0, stop=need,
                                skip_bad_rows=data.skip_bad_rows, report=report)
        what = f"dataset '{data.dataset_name}'"
    report.log(what)
    train = take_rows(rows, data.train_start, data.train_rows, f"{what} (training split)")
    evaluation = take_rows(rows, data.dev_start, data.eval_rows, f"{what} (dev split)") if data.eval_rows else []
    return train, evaluation, report


def plot_loss_curve(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "train total = alpha*T^2*KD + (1-alpha)*CE"), ("ce", "train CE (labels)"),
                       ("kd", "train KD = KL(teacher||student), before alpha*T^2")):
        points = [(e["step"], e[key]) for e in log_history if key in e and "step" in e]
        if points:
            ax.plot(*zip(*points), label=label)
    for key, label in (("eval_loss", "eval total (same objective)"), ("eval_ce", "eval CE"), ("eval_kd", "eval KD")):
        points = [(e["step"], e[key]) for e in log_history if key in e]
        if points:
            ax.plot(*zip(*points), "o--", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("distillation losses per optimizer step (train: running mean; eval: held-out rows)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_compute_metrics(tokenizer, references: list[str]):
    """BLEU/chrF/ROUGE-L of the generated eval translations against the RAW reference strings.

    (Not the references decoded back from the tokenised labels: truncation and the tokenizer's normalisation
    change them.) With the same generation settings as ``llmdiet eval``, the in-training BLEU of a model equals
    the harness's BLEU on the same rows. The Trainer keeps the eval set's order, so prediction i is row i.
    """
    import numpy as np

    from llmdiet.evaluation.metrics import corpus_scores

    def compute_metrics(prediction) -> dict:
        preds = np.where(prediction.predictions < 0, tokenizer.pad_token_id, prediction.predictions)
        hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        if len(hyps) != len(references):
            raise RuntimeError(f"{len(hyps)} eval predictions for {len(references)} references")
        scores = corpus_scores(hyps, references)
        return {k: round(scores[k], 4) for k in ("bleu", "chrf", "rougeL")}

    return compute_metrics


GENERATION_METRICS = ("bleu", "chrf", "rougeL", "eval_bleu", "eval_chrf", "eval_rougeL")


def check_training_arguments(training) -> None:
    """Trainer settings that would give wrong numbers or crash, refused or adjusted with one clear line."""
    if training.fp16:
        raise ConfigError("--fp16 is refused: T5 activations overflow to NaN in float16; use --bf16 true or float32")
    if training.n_gpu > 1:
        raise ConfigError(
            f"one process sees {training.n_gpu} GPUs (nn.DataParallel), which llmdiet does not support: its token "
            "counts are per process; launch one process per GPU: accelerate launch --multi_gpu --num_processes N ...")
    if training.generation_max_length is not None:
        raise ConfigError("--generation_max_length is not used by llmdiet distill: set --eval_max_new_tokens "
                          "(the in-training BLEU uses the same generation settings as llmdiet eval)")
    if not training.predict_with_generate and training.metric_for_best_model in GENERATION_METRICS:
        logger.warning("--predict_with_generate false: no BLEU during training, so the best checkpoint is chosen by "
                       "eval loss (the distillation objective) instead of %s", training.metric_for_best_model)
        training.metric_for_best_model, training.greater_is_better = "loss", False


def _resume_target(value: str | None, output_dir: str) -> str | None:
    """The checkpoint to resume from. ``latest`` is the newest *complete* checkpoint: a run killed while it was
    saving leaves a ``checkpoint-N`` folder without ``trainer_state.json`` (the Trainer writes it last), which is
    skipped with a warning instead of crashing the resumed run."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    def complete(folder: Path) -> bool:
        try:
            json.loads((folder / TRAINER_STATE).read_text())
            return True
        except (OSError, ValueError):
            return False

    if value in (None, "", "False", "false"):
        return None
    if value in ("latest", "auto", "True", "true"):
        found = sorted((p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                        if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()),
                       key=lambda p: int(p.name.rsplit("-", 1)[-1])) if Path(output_dir).is_dir() else []
        done = [p for p in found if complete(p)]
        if not done:
            raise ConfigError(f"--resume_from_checkpoint {value}: no complete checkpoint-* folder in {output_dir}"
                              + (f" ({', '.join(p.name for p in found)} lack a readable {TRAINER_STATE}: killed while saving)"
                                 if found else ""))
        skipped = [p.name for p in found[found.index(done[-1]) + 1:]]
        if skipped:
            logger.warning("resuming from %s: %s lack a readable %s (the run was killed while saving them)",
                           done[-1].name, ", ".join(skipped), TRAINER_STATE)
        return str(done[-1])
    if not Path(value).is_dir():
        raise ConfigError(f"--resume_from_checkpoint: checkpoint folder '{value}' not found")
    if not complete(Path(value)):
        raise ConfigError(f"--resume_from_checkpoint {value}: no readable {TRAINER_STATE} (the run was killed while saving "
                          "this checkpoint?); use an earlier checkpoint or --resume_from_checkpoint latest")
    return value


TRAINER_STATE = "trainer_state.json"


def _sequence_kd_rows(args, data, training, teacher_path, train_rows):
    from llmdiet.distill.pseudo_labels import apply_pseudo_labels, generate_pseudo_labels

    path = args.sequence_kd_file or str(Path(training.output_dir) / "teacher_translations.jsonl")
    with training.main_process_first(desc="teacher translations"):  # rank 0 generates, the others read
        targets = generate_pseudo_labels(teacher_path, train_rows, data.source_prefix, path,
                                         num_beams=args.sequence_kd_beams, max_new_tokens=data.max_target_length,
                                         batch_size=training.per_device_eval_batch_size, device=str(training.device),
                                         dtype=args.teacher_dtype,
                                         rebuild=args.rebuild_caches and training.process_index == 0)
    return apply_pseudo_labels(train_rows, targets, args.sequence_kd)


def _with_teacher_cache(args, teacher, teacher_path, train_ds, collator, training):
    """Build (or finish) the cache on rank 0, then wrap the collator to serve it."""
    from llmdiet.distill.teacher_cache import INDEX_COLUMN, CachedTeacherCollator, TeacherCache, build_teacher_cache

    with training.main_process_first(desc="teacher cache"):
        if training.process_index == 0:
            from llmdiet.fingerprint import model_identity
            from llmdiet.locking import directory_lock

            # study jobs on several machines may share one cache: the first builds it, the others wait, then reuse
            with directory_lock(args.teacher_cache, "teacher cache build", wait=True):
                build_teacher_cache(teacher.to(training.device), train_ds, collator, args.teacher_cache,
                                    k=args.teacher_cache_topk, temperature=args.temperature,
                                    batch_size=training.per_device_eval_batch_size, teacher_name=teacher_path,
                                    teacher_identity=model_identity(teacher_path), teacher_dtype=args.teacher_dtype,
                                    rebuild=args.rebuild_caches)
    cache = TeacherCache(args.teacher_cache)
    cache.check_matches(train_ds["labels"], args.temperature)
    training.remove_unused_columns = False  # keep the example index for the collator
    return CachedTeacherCollator(collator, cache), train_ds.add_column(INDEX_COLUMN, list(range(len(train_ds))))


PROGRESS_KEYS = ("loss", "ce", "kd", "eval_loss", "eval_bleu")


def progress_lines(name: str):
    """A TrainerCallback that replaces the Trainer's printed ``{'loss': ...}`` dicts with one log line per logging
    step ("alpha-0.5: step 32/128 (epoch 1.00): loss 0.4125, ce 0.3951, kd 0.0174"); every value is still in
    ``training_log.json``."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            parts = [f"{k} {logs[k]:.4g}" for k in PROGRESS_KEYS if isinstance(logs.get(k), (int, float))]
            if parts:
                logger.info("%s: step %d/%d (epoch %.2f): %s", name, state.global_step, state.max_steps,
                            logs.get("epoch") or state.epoch or 0.0, ", ".join(parts))

    return ProgressLines()


def run(args: DistillationArguments, data: DataArguments, training: "Seq2SeqTrainingArguments", command=None,
        quiet: bool = False) -> dict:
    """Train and save; returns the summary written to ``training_log.json``."""
    from transformers import DataCollatorForSeq2Seq

    from llmdiet.distill.trainer import DistillationTrainer

    check_training_arguments(training)
    leaks = data.leaks()
    if leaks:
        raise ConfigError("; ".join(leaks) + ": selection on test rows; move them with --train_start/--eval_start "
                          "(or --eval_rows 0)")
    teacher_path, student_path = resolve_model(args.teacher_model), resolve_model(args.student_model)
    teacher = None
    if args.needs_teacher():
        teacher, _ = load_seq2seq(teacher_path, dtype=parse_dtype(args.teacher_dtype))
    copied_layers = None
    if args.student_init == "copy_layers":
        from llmdiet.distill.student_init import copy_layers_student

        source, tokenizer = load_seq2seq(teacher_path, tokenizer_path=args.tokenizer and resolve_model(args.tokenizer))
        student, copied_layers = copy_layers_student(source, args.student_encoder_layers, args.student_decoder_layers)
        student_path = f"copy_layers({teacher_path}, encoder {copied_layers['encoder']}, decoder {copied_layers['decoder']})"
        del source
    else:
        student, tokenizer = load_seq2seq(student_path, tokenizer_path=args.tokenizer and resolve_model(args.tokenizer))
    train_rows, eval_rows, skipped = load_splits(data)
    if args.sequence_kd != "off":
        train_rows = _sequence_kd_rows(args, data, training, teacher_path, train_rows)
    train_ds, train_trunc = tokenize_rows(train_rows, tokenizer, data.source_prefix, data.max_source_length,
                                          data.max_target_length)
    eval_ds, eval_trunc = (None, None)
    if eval_rows:
        eval_ds, eval_trunc = tokenize_rows(eval_rows, tokenizer, data.source_prefix, data.max_source_length,
                                            data.max_target_length)
    elif training.eval_strategy != "no":
        training.eval_strategy = "no"
    collator = train_collator = DataCollatorForSeq2Seq(tokenizer, model=student, label_pad_token_id=-100)
    if args.student_fake_quant:
        from llmdiet.distill.fake_quant import apply_fake_quant

        calibration = None
        if args.fake_quant_init == "gpfq":  # the first 128 training rows, teacher-forced
            rows = [train_ds[i] for i in range(min(128, len(train_ds)))]
            calibration = [dict(collator(rows[i:i + 32])) for i in range(0, len(rows), 32)]
        apply_fake_quant(student, args.student_fake_quant, init=args.fake_quant_init, calibration=calibration)
        student.train()
    model = student
    if args.method == "dml":
        from llmdiet.distill.mutual import MutualStudents, perturbed_copy

        if args.student_b_model:
            student_b, _ = load_seq2seq(resolve_model(args.student_b_model))
        else:
            student_b = perturbed_copy(student, args.dml_noise, training.seed + 1)
        model = MutualStudents(student, student_b)
    if args.teacher_cache and teacher is not None:
        train_collator, train_ds = _with_teacher_cache(args, teacher, teacher_path, train_ds, collator, training)
        if eval_ds is None:
            teacher = None  # training reads the cache; the live teacher is only kept for eval losses
    trainer = DistillationTrainer(
        model=model, teacher_model=teacher, alpha=args.alpha, temperature=args.temperature, args=training,
        train_dataset=train_ds, eval_dataset=eval_ds, data_collator=train_collator, processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer, [r.target for r in eval_rows])
        if training.predict_with_generate and eval_ds else None,
        eval_generation={"max_new_tokens": args.eval_max_new_tokens, "num_beams": training.generation_num_beams or 1},
        method=args.method, loss_options=args.loss_options(), hidden_layers=copied_layers,
        hidden_weight=args.hidden_weight,
    )
    if quiet:  # the study and the Python API: progress lines instead of the Trainer's printed dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress_lines(Path(training.output_dir).name))
    result = trainer.train(resume_from_checkpoint=_resume_target(training.resume_from_checkpoint, training.output_dir))
    fake_quant = None
    if args.student_fake_quant:
        from llmdiet.distill.fake_quant import finalize

        fake_quant = finalize(trainer.accelerator.unwrap_model(trainer.model))  # weights := their b-bit values
    trainer.save_model(training.output_dir)  # student + tokenizer only; the teacher is never saved
    summary = {
        "train_metrics": result.metrics,
        "global_step": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        "distillation": asdict(args),
        "data": asdict(data),
        # the teacher that produced any of the training signal: logits (alpha > 0), its cache or its translations
        "resolved_models": {"teacher": teacher_path if (args.needs_teacher() or args.sequence_kd != "off") else None,
                            "student": student_path},
        "truncation": {"train": train_trunc.as_dict(), "eval": eval_trunc.as_dict() if eval_trunc else None},
        "skipped_rows": {"total": skipped.total, "by_reason": dict(skipped.reasons)},
        "provenance": provenance(seed=training.seed, command=command),
        "world_size": trainer.accelerator.num_processes,
        "parameters": sum(p.numel() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()),
        "on_policy_batches": getattr(trainer, "on_policy_batches", None),  # gkd: batches trained on student samples
        "copied_layers": copied_layers,  # copy_layers: teacher block of each student block
        "fake_quant": fake_quant,  # student_fake_quant: bits and packed size of the saved (on-grid) student
    }
    if trainer.is_world_process_zero():
        out = Path(training.output_dir)
        (out / "training_log.json").write_text(json.dumps(summary, indent=2, default=str))
        plot_loss_curve(trainer.state.log_history, out / "loss_curve.png")
        for card_dir in ([out / "student_a", out / "student_b"] if args.method == "dml" else [out]):
            write_student_card(card_dir, args, data, summary, eval_rows=len(eval_rows))
    return summary


def write_student_card(out: Path, args: "DistillationArguments", data: "DataArguments", summary: dict,
                       eval_rows: int) -> Path:
    """The student's model card (README.md): method, command, in-training eval scores, size, provenance."""
    from llmdiet.model_card import write_model_card
    from llmdiet.modeling import directory_bytes

    history = summary["log_history"]
    last = next((e for e in reversed(history) if "eval_bleu" in e), None)
    results = [{"set": f"dev rows {data.dev_start}..{data.dev_start + eval_rows - 1}"
                       f" of {Path(data.data_files).name if data.data_files else data.dataset_name}",
                "bleu": last["eval_bleu"], "chrf": last["eval_chrf"], "rougeL": last.get("eval_rougeL"),
                "source": f"in-training eval at step {last['step']}"}] if last else None
    method = (f"alpha = {args.alpha} (loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE), "
              f"T = {args.temperature}" if args.alpha > 0 else "fine-tuned on the references (alpha = 0, no teacher)")
    if args.sequence_kd != "off":
        method += f"; sequence-level KD ({args.sequence_kd}, teacher beams {args.sequence_kd_beams})"
    demo = args.teacher_model.startswith(DEMO_MODEL_PREFIX) or args.student_model.startswith(DEMO_MODEL_PREFIX)
    return write_model_card(
        out, title=f"{out.name}: a student distilled by llmdiet", kind="distillation",
        base_model=args.teacher_model if args.student_init == "copy_layers" else args.student_model, datasets=None if data.data_files else [data.dataset_name],
        how=(f"Student `{summary['resolved_models']['student']}` distilled from teacher `{args.teacher_model}` with llmdiet: {method}; "
             f"{data.train_rows} training rows from "
             f"{data.data_files or data.dataset_name}, prefix `{data.source_prefix}`."),
        command=summary["provenance"]["command"] if isinstance(summary["provenance"]["command"], str)
        else " ".join(summary["provenance"]["command"]),
        size={"parameters": f"{summary['parameters']:,}", "disk (MB)": f"{directory_bytes(out) / 1e6:.1f}"},
        provenance=summary["provenance"], results=results, demo=demo,
        loading="```python\nfrom transformers import pipeline\n"
                f"translate = pipeline(\"translation_en_to_fr\", model=\"{out}\")\n```",
    )


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
    overwrite_output_dir: Optional[bool] = field(default=None, metadata={"help": "Start over in an output_dir with checkpoints."})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "latest, or a checkpoint folder."})

    def __post_init__(self):
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            check_range(name, getattr(self, name), 1)
        check_range("num_train_epochs", self.num_train_epochs, 0.0, low_open=True)
        check_range("learning_rate", self.learning_rate, 0.0)
        if self.fp16:
            raise ConfigError("--fp16 is refused: T5 activations overflow to NaN in float16; use --bf16 true (GPU/CPU "
                              "with bf16) or the default float32")
        if self.output_dir:
            out = Path(self.output_dir)
            if out.exists() and not out.is_dir():
                raise ConfigError(f"--output_dir {out}: exists and is not a directory; choose a directory path")
            parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise ConfigError(f"--output_dir {out}: {parent} is not a writable directory; choose another --output_dir")


def check_output_dir(output_dir: str, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into a directory that holds checkpoints unless told to resume or to overwrite.

    (Before, such a re-run silently restarted at step 0 and rotated the old checkpoints away.)
    """
    out = Path(output_dir)
    if resume not in (None, "", "False", "false") or overwrite or not out.is_dir():
        return
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*") if p.is_dir())
    if checkpoints:
        raise ConfigError(f"--output_dir {out} already holds {', '.join(checkpoints[-3:])}: pass "
                          "--resume_from_checkpoint latest to continue that run, or --overwrite_output_dir true to "
                          "start over (its checkpoints will be replaced)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    is_demo = "demo" in argv and ("--preset" in argv or "--preset=demo" in argv)
    prog = "recipes/distill.py"
    # our own flags and the common Trainer mistakes are checked before torch/transformers load (~0.3 s)
    early = precheck((DistillationArguments, DataArguments, TrainerFlagChecks), argv, presets=PRESETS, prog=prog,
                     default_preset="reference")
    if early:
        check_output_dir(early.get("output_dir") or "runs/distill", early.get("resume_from_checkpoint"),
                         bool(early.get("overwrite_output_dir")))
    from transformers import Seq2SeqTrainingArguments

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "--use_cpu" not in argv:
        import torch

        if not torch.cuda.is_available():  # several CPU processes (torchrun/accelerate): DDP over gloo
            argv += ["--use_cpu", "true"]
    args, data, training = parse_config(
        (DistillationArguments, DataArguments, Seq2SeqTrainingArguments), argv, presets=PRESETS,
        prog=prog,
        description="Distil a seq2seq teacher into a student: loss = alpha*T^2*KL(teacher||student) + (1-alpha)*CE.",
        default_preset="reference",
    )
    if is_demo:
        from llmdiet.demo import DEMO_BANNER

        print(DEMO_BANNER, flush=True)
    summary = run(args, data, training, command=["llmdiet", "distill", *argv])
    if training.process_index == 0:
        final = [e for e in summary["log_history"] if "loss" in e]
        if final:
            first, last = final[0], final[-1]
            print(f"\nstudent saved to {training.output_dir} after {summary['global_step']} steps; "
                  f"loss {first['loss']:.3f} -> {last['loss']:.3f}, CE {first.get('ce', float('nan')):.3f} -> "
                  f"{last.get('ce', float('nan')):.3f}, KD {first.get('kd', float('nan')):.3f} -> {last.get('kd', float('nan')):.3f}")
        bleu = [e["eval_bleu"] for e in summary["log_history"] if "eval_bleu" in e]
        if bleu:
            print(f"eval BLEU per evaluation: {', '.join(f'{b:.1f}' for b in bleu)} "
                  f"(saved model: {'best' if training.load_best_model_at_end else 'last'})")
        print(f"training log: {Path(training.output_dir) / 'training_log.json'}; "
              f"loss curve: {Path(training.output_dir) / 'loss_curve.png'}")
        if is_demo:
            from llmdiet.demo import DEMO_BANNER

            print(DEMO_BANNER)
    return 0


def options_to_argv(options: dict) -> list[str]:
    """``{"alpha": 0.5, "eval_sets": ["a", "b"], "bf16": True}`` -> ``["--alpha", "0.5", "--eval_sets", "a", "b", ...]``."""
    argv: list[str] = []
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def distill(*, preset: str | None = None, config: str | None = None, **options) -> dict:
    """``llmdiet distill`` from Python: ``options`` are its flags (DistillationArguments, DataArguments and every
    Seq2SeqTrainingArguments field), checked the same way; returns the summary written to training_log.json.

    ``llmdiet.distill(preset="demo", output_dir="runs/s", alpha=0.25)``
    """
    from transformers import Seq2SeqTrainingArguments

    argv = (["--preset", preset] if preset else []) + (["--config", config] if config else []) + options_to_argv(options)
    early = precheck((DistillationArguments, DataArguments, TrainerFlagChecks), argv, presets=PRESETS,
                     prog="llmdiet.distill", default_preset="reference")
    check_output_dir(early.get("output_dir") or "runs/distill", early.get("resume_from_checkpoint"),
                     bool(early.get("overwrite_output_dir")))
    args, data, training = parse_config((DistillationArguments, DataArguments, Seq2SeqTrainingArguments), argv,
                                        presets=PRESETS, prog="llmdiet.distill", default_preset="reference")
    return run(args, data, training, command=["llmdiet.distill", *argv], quiet=True)


__all__ = ["DistillationArguments", "DataArguments", "main", "run", "distill", "DataError"]
