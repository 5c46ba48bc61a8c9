"""The alpha sweep: distil once per alpha, evaluate every student, compare them side by side.

For each alpha the student is trained with ``llmdiet.distill.run`` into ``OUTPUT_DIR/alpha-<a>``
and scored by the eval harness into ``OUTPUT_DIR/eval-alpha-<a>``; ``llmdiet compare`` then writes
the table and plots into ``OUTPUT_DIR`` plus ``bleu_vs_alpha.png``. Resumable at every level: a finished
training is skipped only if its recorded settings (``sweep_settings.json``: every distillation, data and
training setting and the content hashes of teacher and student) equal the new ones (else the run stops and
names what changed), an interrupted one continues from its last checkpoint, and the harness resumes its own
samples. The teacher's translations and top-k logits are computed once, in ``OUTPUT_DIR/shared/``.

    python recipes/alpha_sweep.py --alphas 0 0.25 0.5 0.75 1 --eval_set pgv-en-fr pgv-fr-en
    python recipes/alpha_sweep.py --preset demo
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmdiet.config import TRAINER_ARGUMENTS, ConfigError, check_range, parse_config, precheck
from llmdiet.distill.presets import demo_preset as distill_demo_preset
from llmdiet.distill.presets import reference_defaults
from llmdiet.distill.run import run
from llmdiet.distill.settings import EARLY_TRAINER_FLAGS, DataArguments, DistillationArguments, TrainerFlagChecks
from llmdiet.modeling import resolve_model

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments


@dataclass
class SweepArguments:
    alphas: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata={"help": "Alpha values to train, each in [0, 1]."}
    )
    eval_set: list[str] = field(
        default_factory=lambda: ["pgv-en-fr"], metadata={"help": "Eval sets for every student (names or files)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Score only the first N rows of each set."})
    eval_batch_size: int = field(default=32, metadata={"help": "Eval harness batch size."})
    eval_teacher: bool = field(default=True, metadata={"help": "Also evaluate the teacher, as the reference row."})

    def __post_init__(self):
        for a in self.alphas:
            check_range("alphas", a, 0.0, 1.0)
        check_range("max_eval_samples", self.max_eval_samples, 1)


def demo_preset() -> dict:
    return {
        **distill_demo_preset(),
        "alphas": [0.0, 0.5, 1.0],
        "eval_set": ["demo-en-fr", "demo-fr-en"],
        "output_dir": "runs/alpha-sweep-demo",
        "num_train_epochs": 3,
    }


def reference_preset() -> dict:
    return {**reference_defaults(), "output_dir": "runs/alpha-sweep"}


def evaluate(model: str, out: Path, sweep: SweepArguments) -> str:
    from llmdiet.evaluation.harness import EvalArguments, run_eval

    run_eval(
        EvalArguments(
            model=model,
            eval_set=list(sweep.eval_set),
            output_dir=str(out),
            max_eval_samples=sweep.max_eval_samples,
            batch_size=sweep.eval_batch_size,
            progress=False,
        )
    )
    return str(out)


def validate(sweep: SweepArguments, dist: DistillationArguments) -> None:
    """Everything that can be checked before the first student trains: eval sets (declared and readable) and
    local model paths. (Before, an unknown eval set surfaced only after the first training.)"""
    from llmdiet.evaluation.eval_sets import resolve_eval_set

    for name in sweep.eval_set:
        resolve_eval_set(name).load()
    for flag, model in (("--teacher_model", dist.teacher_model), ("--student_model", dist.student_model)):
        looks_local = model.startswith((".", "/", "~", "runs/")) or model.count("/") != 1
        if looks_local and not model.startswith("llmdiet-demo:") and not Path(model).expanduser().exists():
            raise ConfigError(
                f"{flag} {model}: no such directory (a local path, a hub id owner/name, or llmdiet-demo:*)"
            )


SETTINGS_FILE = "sweep_settings.json"


def student_settings(alpha: float, dist: DistillationArguments, data: DataArguments, training) -> dict:
    """Everything that decides a student, by the study's own rule (:func:`llmdiet.study.fingerprints.student_fingerprint`):
    the fingerprint a finished alpha is checked against on a re-run."""
    from llmdiet.fingerprint import model_identity
    from llmdiet.study.fingerprints import student_fingerprint

    args = copy.deepcopy(dist)
    args.alpha = alpha
    return student_fingerprint(
        args,
        data,
        training,
        model_identity(resolve_model(dist.teacher_model)),
        model_identity(resolve_model(dist.student_model)),
    )


def _finished(run_dir: Path, settings: dict) -> bool:
    """A finished student with the same settings is skipped; one made with other settings is refused."""
    from llmdiet.fingerprint import check_parts

    if not (run_dir / "training_log.json").exists():
        return False
    stored = run_dir / SETTINGS_FILE
    if not stored.exists():
        raise ConfigError(
            f"{run_dir}: a finished student without {SETTINGS_FILE}, so its settings are unknown; "
            "delete it or use another --output_dir"
        )
    check_parts(
        json.loads(stored.read_text()),
        settings,
        run_dir,
        "use another --output_dir, or delete this student to retrain it with the new settings",
    )
    return True


def run_sweep(
    sweep: SweepArguments, dist: DistillationArguments, data: DataArguments, training: Seq2SeqTrainingArguments
) -> list[str]:
    """Train, evaluate and compare every alpha. The teacher's work is shared: one teacher-logit cache and one file
    of teacher translations in ``OUTPUT_DIR/shared/`` serve every alpha (each is keyed by its own inputs)."""
    from transformers.trainer_utils import get_last_checkpoint

    from llmdiet.evaluation.compare import main as compare_main

    validate(sweep, dist)
    root = Path(str(training.output_dir))  # the sweep's folder: one sub-folder per alpha
    shared = root / "shared"
    dist = copy.deepcopy(dist)
    if dist.teacher_cache:
        dist.teacher_cache = (
            dist.teacher_cache if Path(dist.teacher_cache).is_absolute() else str(shared / dist.teacher_cache)
        )
    if dist.sequence_kd != "off" and not dist.sequence_kd_file:
        dist.sequence_kd_file = str(shared / "teacher_translations.jsonl")
    eval_dirs, labels = [], []
    for alpha in sweep.alphas:
        run_dir = root / f"alpha-{alpha:g}"
        settings = student_settings(alpha, dist, data, training)
        if not _finished(run_dir, settings):
            args, targs = copy.deepcopy(dist), copy.deepcopy(training)
            args.alpha, targs.output_dir = alpha, str(run_dir)
            if run_dir.is_dir() and get_last_checkpoint(str(run_dir)):
                targs.resume_from_checkpoint = "latest"
            run(args, data, targs, command=["alpha-sweep", f"alpha={alpha}"])
            if training.process_index == 0:
                (run_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, default=str))
        if training.process_index == 0:
            eval_dirs.append(evaluate(str(run_dir), root / f"eval-alpha-{alpha:g}", sweep))
            labels.append(f"student alpha={alpha:g}")
    if training.process_index != 0:
        return []
    if sweep.eval_teacher:
        eval_dirs.append(evaluate(resolve_model(dist.teacher_model), root / "eval-teacher", sweep))
        labels.append("teacher")
    compare_main([*eval_dirs, "--output_dir", str(root), "--labels", *labels])
    plot_metric_by_alpha(root, sweep)
    return eval_dirs


def plot_metric_by_alpha(root: Path, sweep: SweepArguments) -> Path:
    """``bleu_vs_alpha.png``: each eval set's BLEU (and chrF) against alpha, the teacher as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {
        alpha: json.loads((root / f"eval-alpha-{alpha:g}" / "results.json").read_text()) for alpha in sweep.alphas
    }
    teacher_file = root / "eval-teacher" / "results.json"
    teacher = json.loads(teacher_file.read_text()) if teacher_file.exists() else None
    sets = list(next(iter(results.values()))["sets"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, name in ((axes[0], "bleu", "BLEU"), (axes[1], "chrf", "chrF")):
        for i, set_name in enumerate(sets):
            color = plt.get_cmap("tab10")(i)
            xs = sorted(results)
            ax.plot(
                xs,
                [results[a]["sets"][set_name]["metrics"][metric] for a in xs],
                "o-",
                color=color,
                label=f"{set_name} (students)",
            )
            if teacher and set_name in teacher["sets"]:
                ax.axhline(
                    teacher["sets"][set_name]["metrics"][metric],
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label=f"{set_name} (teacher)",
                )
        ax.set_xlabel("alpha (weight of the teacher term; 0 = fine-tuning on references only)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} of the distilled student by alpha")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "alpha sweep: "
        + ", ".join(sets)
        + (" — DEMO models and data" if any(r.get("demo") for r in results.values()) else ""),
        fontsize=10,
    )
    fig.tight_layout()
    out = root / "bleu_vs_alpha.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    presets = {"reference": reference_preset, "demo": demo_preset}
    prog, description = "llmdiet alpha-sweep", "Distil once per alpha, evaluate every student, compare."
    from llmdiet.distill.cli_help import help_request
    from llmdiet.distill.trainer_flags import trainer_flags

    extra = trainer_flags()
    text = help_request(argv, prog, description, presets, len(extra), extra_groups=[("sweep", [SweepArguments])])
    if text is not None:
        print(text)
        return 0
    precheck(
        (SweepArguments, DistillationArguments, DataArguments, TrainerFlagChecks, *EARLY_TRAINER_FLAGS),
        argv,
        presets=presets,
        prog=prog,
        default_preset="reference",
        extra_flags=extra,
    )
    sweep, dist, data, training = parse_config(
        (SweepArguments, DistillationArguments, DataArguments, TRAINER_ARGUMENTS),
        argv,
        presets=presets,
        default_preset="reference",
        prog=prog,
        description=description,
        extra_flags=extra,
    )
    run_sweep(sweep, dist, data, training)
    return 0
