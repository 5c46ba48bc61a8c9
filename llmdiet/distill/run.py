"""One distillation run in steps: models, data, trainer, train, save.

:func:`run` is what ``llmdiet distill``, ``llmdiet.distill(...)`` and the study's training jobs call; each step is
a function a newcomer reads alone. Outputs in ``output_dir``: the student (``save_pretrained``, safetensors) and
its tokenizer, ``training_log.json`` (the Trainer's log history plus run metadata), ``loss_curve.png``, the model
card and the Trainer's ``checkpoint-*`` folders (for ``--resume_from_checkpoint``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from llmdiet.config import ConfigError
from llmdiet.constants import REFERENCE_PREFIX, SCORED_METRICS
from llmdiet.data import ParallelRow, SkipReport, read_hub_dataset, read_parallel_file, take_rows, tokenize_rows
from llmdiet.distill.card import plot_loss_curve, write_student_card
from llmdiet.distill.methods import get_method
from llmdiet.distill.replay import ReplaySet, load_replay, replay_summary
from llmdiet.distill.settings import DataArguments, DistillationArguments, check_training_arguments
from llmdiet.distill.sharding import check_launch
from llmdiet.distill.teacher_placement import placement_kwargs, placement_summary
from llmdiet.languages import apply_languages, default_prefix
from llmdiet.modeling import load_seq2seq, parse_dtype, resolve_model
from llmdiet.provenance import provenance

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

    from llmdiet.distill.trainer import DistillationTrainer

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
PROGRESS_KEYS = ("loss", "ce", "kd", "eval_loss", "eval_bleu")


@dataclass
class Models:
    teacher: Any  # None when training never reads it
    student: Any
    tokenizer: Any
    teacher_path: str
    student_path: str
    copied_layers: Optional[dict] = None  # copy_layers: teacher block of each student block


@dataclass
class Data:
    train: Any  # tokenized datasets
    eval: Any
    eval_rows: list
    truncation: dict
    skipped: SkipReport
    source_prefix: str = ""  # the prefix used: --source_prefix, else the family's default (T5 prefix for T5 only)
    replay: Optional[dict] = None  # --replay_set: rows mixed in per set (replay.replay_summary)
    test_overlap: Optional[dict] = None  # rows whose text is a test set's, per split and set (checked, or dropped)


# ----------------------------------------------------------------------------- data


def load_splits(data: DataArguments) -> tuple[list[ParallelRow], list[ParallelRow], SkipReport]:
    """Training and evaluation rows, validated, with a report of skipped rows."""
    report = SkipReport()
    need = max(data.train_start + data.train_rows, data.dev_start + data.eval_rows if data.eval_rows else 0)
    if data.data_files:
        rows = read_parallel_file(
            data.data_files,
            data.source_column,
            data.target_column,
            skip_bad_rows=data.skip_bad_rows,
            report=report,
            header=not data.no_header,
        )
        what = data.data_files
    else:
        rows = read_hub_dataset(
            data.dataset_name,
            data.source_column,
            data.target_column,
            split=data.dataset_split,
            revision=data.dataset_revision,
            start=0,
            stop=need,
            skip_bad_rows=data.skip_bad_rows,
            report=report,
        )
        what = f"dataset '{data.dataset_name}'"
    report.log(what)
    train = take_rows(rows, data.train_start, data.train_rows, f"{what} (training split)")
    evaluation = take_rows(rows, data.dev_start, data.eval_rows, f"{what} (dev split)") if data.eval_rows else []
    return train, evaluation, report


def _sequence_kd_rows(
    args: DistillationArguments,
    data: DataArguments,
    training: Seq2SeqTrainingArguments,
    teacher_path: str,
    train_rows: list[ParallelRow],
    prefix: str,
) -> list[ParallelRow]:
    from llmdiet.distill.pseudo_labels import apply_pseudo_labels, generate_pseudo_labels

    path = args.sequence_kd_file or str(Path(str(training.output_dir)) / "teacher_translations.jsonl")
    with training.main_process_first(desc="teacher translations"):  # rank 0 generates, the others read
        targets = generate_pseudo_labels(
            teacher_path,
            train_rows,
            prefix,
            path,
            num_beams=args.sequence_kd_beams,
            max_new_tokens=data.max_target_length,
            batch_size=training.per_device_eval_batch_size,
            device=str(training.device),
            dtype=args.teacher_dtype,
            rebuild=args.rebuild_caches and training.process_index == 0,
        )
    return apply_pseudo_labels(train_rows, targets, args.sequence_kd)


@dataclass
class Rows:
    """The run's rows, read and checked before any model loads."""

    train: list[ParallelRow]
    dev: list[ParallelRow]
    replay: list[ReplaySet]
    skipped: SkipReport
    overlap: dict


def check_replay_family(args: DistillationArguments, data: DataArguments) -> None:
    """Replay rows select their direction with their set's task prefix, which only T5-family models read: refuse
    --replay_set for other families in one line, before anything loads (their directions need language codes)."""
    from llmdiet.artifacts import model_type_of
    from llmdiet.languages import uses_task_prefix

    if not data.replay_set:
        return
    model_type = model_type_of(resolve_model(args.student_model))
    if model_type is not None and not uses_task_prefix(model_type):
        raise ConfigError(
            f"--replay_set: replay rows choose their direction by the set's task prefix, which {model_type} models do "
            "not read (T5-family students only); drop --replay_set"
        )


def load_rows(data: DataArguments, seed: int) -> Rows:
    """Training, dev and replay rows, with the content check against the declared test sets (a refusal costs no
    model load)."""
    train_rows, eval_rows, skipped = load_splits(data)
    replay = load_replay(data.replay_set, data.replay_fraction, len(train_rows), seed) if data.replay_set else []
    train_rows, eval_rows, replay, overlap = check_test_overlap(data, train_rows, eval_rows, replay)
    return Rows(train_rows, eval_rows, replay, skipped, overlap)


def setup_data(
    args: DistillationArguments, data: DataArguments, training: Seq2SeqTrainingArguments, models: Models, rows: Rows
) -> Data:
    train_rows, eval_rows, replay, skipped, overlap = rows.train, rows.dev, rows.replay, rows.skipped, rows.overlap
    # the T5 task prefix is a T5-family default only (the settings keep None: "the family's default")
    prefix = default_prefix(models.student.config.model_type, REFERENCE_PREFIX, data.source_prefix)
    forced = apply_languages(models.tokenizer, data.source_lang, data.target_lang)
    if forced is not None:  # in-training eval, sequence KD and every later use of the saved student
        for model in (models.student, models.teacher):
            if model is not None:
                model.generation_config.forced_bos_token_id = forced
    if args.sequence_kd != "off":
        train_rows = _sequence_kd_rows(args, data, training, models.teacher_path, train_rows, prefix)
    tok = models.tokenizer
    train_ds, train_trunc = tokenize_rows(train_rows, tok, prefix, data.max_source_length, data.max_target_length)
    if replay:
        train_ds, train_trunc = _with_replay(train_ds, train_trunc, replay, tok, data)
    eval_ds, eval_trunc = None, None
    if eval_rows:
        eval_ds, eval_trunc = tokenize_rows(eval_rows, tok, prefix, data.max_source_length, data.max_target_length)
    elif training.eval_strategy != "no":
        training.eval_strategy = "no"
    return Data(
        train_ds,
        eval_ds,
        eval_rows,
        {"train": train_trunc.as_dict(), "eval": eval_trunc.as_dict() if eval_trunc else None},
        skipped,
        prefix,
        replay_summary(replay, data.replay_fraction) if data.replay_set else None,
        overlap,
    )


def _with_replay(train_ds: Any, trunc: Any, replay: list[ReplaySet], tok: Any, data: DataArguments) -> tuple:
    """The training dataset with each replay set's rows appended, tokenized with that set's own prefix."""
    import datasets

    parts = [train_ds]
    for spec in replay:
        part, part_trunc = tokenize_rows(spec.rows, tok, spec.prefix, data.max_source_length, data.max_target_length)
        parts.append(part)
        trunc.sources, trunc.targets = trunc.sources + part_trunc.sources, trunc.targets + part_trunc.targets
        trunc.total += part_trunc.total
    return datasets.concatenate_datasets(parts), trunc


def overlap_test_sets(data: DataArguments) -> list:
    """The declared test sets whose text the training and dev rows must not contain: every named test and dev set
    read from a local file, and those read from the training data's own hub dataset (others would need the hub for
    a check their data cannot fail)."""
    from llmdiet.evaluation.eval_sets import named_sets

    return [s for s in named_sets(("test", "dev")) if s.file is not None or s.source_key() == data.source_key()]


def check_test_overlap(
    data: DataArguments,
    train: list[ParallelRow],
    dev: list[ParallelRow],
    replay: list[ReplaySet],
    sets: Optional[list] = None,
) -> tuple[list[ParallelRow], list[ParallelRow], list[ReplaySet], dict]:
    """Refuse (``--test_overlap refuse``) or drop (``drop``) training, replay and dev rows whose text occurs in a
    declared test set; dev rows are checked against the test sets, training and replay rows against the test and
    dev sets (``sets``: the held-out sets, default :func:`overlap_test_sets`). Returns the kept rows and the
    counts."""
    from llmdiet.evaluation.overlap import find_overlaps, held_out_texts

    sets = overlap_test_sets(data) if sets is None else sets
    tests = held_out_texts([s for s in sets if s.role == "test"])
    held = {**tests, **held_out_texts([s for s in sets if s.role == "dev"])}
    checks = [("training", train, held), ("dev", dev, tests)] + [(f"replay ({r.name})", r.rows, held) for r in replay]
    found = {what: find_overlaps(rows, what, against) for what, rows, against in checks}
    problems = [o.describe(len(rows)) for what, rows, _ in checks for o in found[what]]
    counts = {what: {o.held_out: len(o.rows) for o in hits} for what, hits in found.items() if hits}
    if problems and data.test_overlap == "refuse":
        raise ConfigError(
            "; ".join(problems) + ": training or selection on test sentences; use other rows, or pass "
            "--test_overlap drop to remove them (counted in training_log.json)"
        )
    if problems:
        logger.warning("--test_overlap drop: %s", "; ".join(problems))

    def keep(rows: list[ParallelRow], what: str) -> list[ParallelRow]:
        drop = {i for o in found[what] for i in o.rows}
        return [r for i, r in enumerate(rows) if i not in drop]

    kept_replay = [ReplaySet(r.name, r.prefix, keep(r.rows, f"replay ({r.name})"), r.available) for r in replay]
    return keep(train, "training"), keep(dev, "dev"), kept_replay, {"checked_sets": sorted(held), "rows": counts}


# ----------------------------------------------------------------------------- models


def check_shared_vocabulary(teacher_path: str, teacher: Any, student: Any, tokenizer: Any) -> None:
    """Logit distillation compares the two models' distributions token id by token id: refuse (one line) a teacher
    whose vocabulary size or token-to-id map differs from the student's tokenizer."""
    from transformers import AutoTokenizer

    sizes = (teacher.config.vocab_size, student.config.vocab_size)
    fix = "distil into a student that shares the teacher's tokenizer (e.g. --student_init copy_layers)"
    if sizes[0] != sizes[1]:
        raise ConfigError(
            f"--teacher_model {teacher_path}: vocabulary of {sizes[0]} tokens, the student's has "
            f"{sizes[1]}; logit distillation needs one vocabulary: {fix}"
        )
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    except (OSError, ValueError):  # a teacher directory without a tokenizer: the sizes are all there is to compare
        return
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        differ = sum(1 for t, i in teacher_tokenizer.get_vocab().items() if tokenizer.get_vocab().get(t) != i)
        raise ConfigError(
            f"--teacher_model {teacher_path}: its tokenizer maps {differ} tokens to other ids than the "
            f"student's; logit distillation needs one vocabulary: {fix}"
        )


DEFAULT_OFFLOAD = "teacher-offload"  # under the output directory, removed after training


def setup_models(args: DistillationArguments, output_dir: str | None = None) -> Models:
    """The teacher (only if training reads it; placed across devices with --teacher_device_map) and the student:
    loaded, or built from the teacher's blocks."""
    teacher_path, student_path = resolve_model(args.teacher_model), resolve_model(args.student_model)
    tokenizer_path = args.tokenizer and resolve_model(args.tokenizer)
    offload = args.teacher_offload_folder or (output_dir and str(Path(output_dir) / DEFAULT_OFFLOAD))
    placement = placement_kwargs(args.teacher_device_map, args.teacher_max_memory, offload)
    teacher = None
    if args.needs_teacher():
        teacher = load_seq2seq(teacher_path, dtype=parse_dtype(args.teacher_dtype), placement=placement)[0]
        if placement:
            logger.info(
                "teacher placed by accelerate (%s): modules per device %s", placement, placement_summary(teacher)
            )
    if args.student_init != "copy_layers":
        student, tokenizer = load_seq2seq(student_path, tokenizer_path=tokenizer_path)
        if teacher is not None:
            check_shared_vocabulary(teacher_path, teacher, student, tokenizer)
        return Models(teacher, student, tokenizer, teacher_path, student_path)
    from llmdiet.distill.student_init import copy_layers_student

    source, tokenizer = load_seq2seq(teacher_path, tokenizer_path=tokenizer_path)
    student, copied = copy_layers_student(source, args.student_encoder_layers, args.student_decoder_layers)
    student_path = f"copy_layers({teacher_path}, encoder {copied['encoder']}, decoder {copied['decoder']})"
    return Models(teacher, student, tokenizer, teacher_path, student_path, copied)


def apply_fake_quant(args: DistillationArguments, student: Any, train_ds: Any, collator: Any) -> None:
    from llmdiet.distill.fake_quant import apply_fake_quant as parametrize

    calibration = None
    if args.fake_quant_init == "gpfq":  # the first 128 training rows, teacher-forced
        rows = [train_ds[i] for i in range(min(128, len(train_ds)))]
        calibration = [dict(collator(rows[i : i + 32])) for i in range(0, len(rows), 32)]
    parametrize(student, args.student_fake_quant, init=args.fake_quant_init, calibration=calibration)
    student.train()


def _with_teacher_cache(args: Any, teacher: Any, teacher_path: Any, train_ds: Any, collator: Any, training: Any) -> Any:
    """Build (or finish) the cache on rank 0, then wrap the collator to serve it."""
    from llmdiet.distill.teacher_cache import (
        INDEX_COLUMN,
        CachedTeacherCollator,
        TeacherCache,
        build_teacher_cache_once,
    )
    from llmdiet.distill.teacher_placement import is_placed
    from llmdiet.fingerprint import model_identity

    with training.main_process_first(desc="teacher cache"):
        if training.process_index == 0:
            # study jobs on several machines may share one cache: the first builds it, the others wait, then reuse
            build_teacher_cache_once(
                teacher if is_placed(teacher) else teacher.to(training.device),
                train_ds,
                collator,
                args.teacher_cache,
                k=args.teacher_cache_topk,
                temperature=args.temperature,
                batch_size=training.per_device_eval_batch_size,
                teacher_name=teacher_path,
                teacher_identity=model_identity(teacher_path),
                teacher_dtype=args.teacher_dtype,
                rebuild=args.rebuild_caches,
            )
    from llmdiet.distill.memory_plan import measured_peaks

    training.llmdiet_cache_peaks = measured_peaks()  # the cache build's own peak (the teacher, maybe offloaded)
    cache = TeacherCache(args.teacher_cache)
    cache.check_matches(train_ds["labels"], args.temperature)
    training.remove_unused_columns = False  # keep the example index for the collator
    return CachedTeacherCollator(collator, cache), train_ds.add_column(INDEX_COLUMN, list(range(len(train_ds))))


# ----------------------------------------------------------------------------- trainer


def build_compute_metrics(tokenizer: Any, references: list[str]) -> Any:
    """BLEU/chrF/ROUGE-L of the generated eval translations against the RAW reference strings.

    (Not the references decoded back from the tokenised labels: truncation and the tokenizer's normalisation
    change them.) With the same generation settings as ``llmdiet eval``, the in-training BLEU of a model equals
    the harness's BLEU on the same rows. The Trainer keeps the eval set's order, so prediction i is row i.
    """

    from llmdiet.evaluation.metrics import corpus_scores, generated_ids

    def compute_metrics(prediction: Any) -> dict:
        preds = generated_ids(prediction.predictions, tokenizer.pad_token_id)
        hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        if len(hyps) != len(references):
            raise RuntimeError(f"{len(hyps)} eval predictions for {len(references)} references")
        scores = corpus_scores(hyps, references)
        return {k: round(scores[k], 4) for k in SCORED_METRICS}

    return compute_metrics


def progress_lines(name: str) -> Any:
    """A TrainerCallback that replaces the Trainer's printed ``{'loss': ...}`` dicts with one log line per logging
    step ("alpha-0.5: step 32/128 (epoch 1.00): loss 0.4125, ce 0.3951, kd 0.0174"); every value is still in
    ``training_log.json``."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            parts = [f"{k} {logs[k]:.4g}" for k in PROGRESS_KEYS if isinstance(logs.get(k), (int, float))]
            if parts:
                logger.info(
                    "%s: step %d/%d (epoch %.2f): %s",
                    name,
                    state.global_step,
                    state.max_steps,
                    logs.get("epoch") or state.epoch or 0.0,
                    ", ".join(parts),
                )

    return ProgressLines()


def setup_trainer(
    args: DistillationArguments, training: Seq2SeqTrainingArguments, models: Models, data: Data, quiet: bool
) -> DistillationTrainer:
    """The DistillationTrainer of this run: the method's model (one student, or dml's pair), the teacher or its
    cache, the dev-set metrics."""
    from transformers import DataCollatorForSeq2Seq

    from llmdiet.distill.trainer import DistillationTrainer

    method = get_method(args.method)
    collator = train_collator = DataCollatorForSeq2Seq(models.tokenizer, model=models.student, label_pad_token_id=-100)
    train_ds, teacher = data.train, models.teacher
    if args.student_fake_quant:
        apply_fake_quant(args, models.student, train_ds, collator)
    model = method.build_model(models.student, args, training.seed) if method.build_model else models.student
    if args.teacher_cache and teacher is not None:
        train_collator, train_ds = _with_teacher_cache(args, teacher, models.teacher_path, train_ds, collator, training)
        if data.eval is None:
            teacher = None  # training reads the cache; the live teacher is only kept for eval losses
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        alpha=args.alpha,
        temperature=args.temperature,
        args=training,
        train_dataset=train_ds,
        eval_dataset=data.eval,
        data_collator=train_collator,
        processing_class=models.tokenizer,
        compute_metrics=build_compute_metrics(models.tokenizer, [r.target for r in data.eval_rows])
        if training.predict_with_generate and data.eval
        else None,
        eval_generation={"max_new_tokens": args.eval_max_new_tokens, "num_beams": training.generation_num_beams or 1},
        method=args.method,
        method_config=args.method_config(),
        hidden_layers=models.copied_layers,
        hidden_weight=args.hidden_weight,
    )
    if quiet:  # the study and the Python API: progress lines instead of the Trainer's printed dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress_lines(Path(str(training.output_dir)).name))
    return trainer


# ----------------------------------------------------------------------------- train and save


def resume_target(value: str | None, output_dir: str) -> str | None:
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
        found = (
            sorted(
                (
                    p
                    for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                    if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()
                ),
                key=lambda p: int(p.name.rsplit("-", 1)[-1]),
            )
            if Path(output_dir).is_dir()
            else []
        )
        done = [p for p in found if complete(p)]
        if not done:
            raise ConfigError(
                f"--resume_from_checkpoint {value}: no complete checkpoint-* folder in {output_dir}"
                + (
                    f" ({', '.join(p.name for p in found)} lack a readable {TRAINER_STATE}: killed while saving)"
                    if found
                    else ""
                )
            )
        skipped = [p.name for p in found[found.index(done[-1]) + 1 :]]
        if skipped:
            logger.warning(
                "resuming from %s: %s lack a readable %s (the run was killed while saving them)",
                done[-1].name,
                ", ".join(skipped),
                TRAINER_STATE,
            )
        return str(done[-1])
    if not Path(value).is_dir():
        raise ConfigError(f"--resume_from_checkpoint: checkpoint folder '{value}' not found")
    if not complete(Path(value)):
        raise ConfigError(
            f"--resume_from_checkpoint {value}: no readable {TRAINER_STATE} (the run was killed while saving "
            "this checkpoint?); use an earlier checkpoint or --resume_from_checkpoint latest"
        )
    return value


def pruned_lineage(student_path: str | None) -> dict | None:
    """What ``llmdiet prune`` made the student initialisation from (its ``llmdiet_prune.json``), or None."""
    report = Path(str(student_path)) / "llmdiet_prune.json" if student_path else None
    if report is None or not report.is_file():
        return None
    data = json.loads(report.read_text(encoding="utf-8"))
    keys = ("method", "kind", "source_model", "source_identity", "settings", "parameters", "d_ff", "num_heads")
    return {k: data[k] for k in keys if k in data}


def save(
    trainer: Any,
    args: DistillationArguments,
    data_args: DataArguments,
    models: Models,
    data: Data,
    result: Any,
    command: Any,
    engine: str = "single",
) -> dict:
    """The student (on its fake-quant grid if any), training_log.json, the loss curve and the model card(s)."""
    from llmdiet.distill.memory_plan import measured_peaks

    training = trainer.args
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
        "data": asdict(data_args),
        # the teacher that produced any of the training signal: logits (alpha > 0), its cache or its translations
        "resolved_models": {
            "teacher": models.teacher_path if (args.needs_teacher() or args.sequence_kd != "off") else None,
            "student": models.student_path,
        },
        "truncation": data.truncation,
        "source_prefix": data.source_prefix,
        "skipped_rows": {"total": data.skipped.total, "by_reason": dict(data.skipped.reasons)},
        "replay": data.replay,
        "test_overlap": data.test_overlap,
        "provenance": provenance(seed=training.seed, command=command),
        "world_size": trainer.accelerator.num_processes,
        "launch_engine": engine,  # single, ddp, fsdp or deepspeed (recipes/accelerate/*.yaml)
        "parameters": sum(p.numel() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()),
        "on_policy_batches": getattr(trainer, "on_policy_batches", None),  # gkd: batches trained on student samples
        "copied_layers": models.copied_layers,
        "pruned_from": pruned_lineage(models.student_path),  # a student initialised from an llmdiet prune output
        # --teacher_device_map: modules of the teacher per device (GPU index, cpu, disk) while it built the cache
        "teacher_placement": placement_summary(models.teacher) or None,
        "fake_quant": fake_quant,  # student_fake_quant: bits and packed size of the saved (on-grid) student
        # this process's peaks: building the teacher cache (if any), then training (the CPU figure is cumulative)
        "peak_memory": {
            "teacher_cache": getattr(training, "llmdiet_cache_peaks", None),
            "training": measured_peaks(reset=False),
        },
    }
    if trainer.is_world_process_zero():
        out = Path(training.output_dir)
        (out / "training_log.json").write_text(json.dumps(summary, indent=2, default=str))
        plot_loss_curve(trainer.state.log_history, out / "loss_curve.png")
        for card_dir in [out / name for name in get_method(args.method).students] or [out]:
            write_student_card(card_dir, args, data_args, summary, eval_rows=len(data.eval_rows))
    return summary


def run(
    args: DistillationArguments,
    data: DataArguments,
    training: Seq2SeqTrainingArguments,
    command: Any = None,
    quiet: bool = False,
) -> dict:
    """Train and save; returns the summary written to ``training_log.json``."""
    engine = check_launch(args.device)  # an FSDP/DeepSpeed launch this machine cannot serve: one line, nothing loaded
    for note in check_training_arguments(training):
        logger.warning(note)
    leaks = data.leaks()
    if leaks:
        raise ConfigError(
            "; ".join(leaks) + ": selection on test rows; move them with --train_start/--eval_start (or --eval_rows 0)"
        )
    check_replay_family(args, data)
    rows = load_rows(data, training.seed)
    models = setup_models(args, str(training.output_dir))
    splits = setup_data(args, data, training, models, rows)
    trainer = setup_trainer(args, training, models, splits, quiet)
    resume = resume_target(training.resume_from_checkpoint, str(training.output_dir))
    result = trainer.train(resume_from_checkpoint=resume)
    if args.teacher_device_map and not args.teacher_offload_folder:  # the default offload copy is not an output
        import shutil

        shutil.rmtree(Path(str(training.output_dir)) / DEFAULT_OFFLOAD, ignore_errors=True)
    return save(trainer, args, data, models, splits, result, command, engine)
