"""The alpha sweep: distil once per alpha, evaluate every student, compare them side by side.

For each alpha the student is trained with ``llmdiet.distill.run`` into ``SWEEP_DIR/alpha-<a>``
and scored by the eval harness into ``SWEEP_DIR/eval-alpha-<a>``; ``llmdiet compare`` then writes
the table and plots into ``SWEEP_DIR``. Resumable at every level: finished trainings (their
``training_log.json`` exists) are skipped, an interrupted one continues from its last checkpoint,
and the harness resumes its own samples.

    python recipes/alpha_sweep.py --alphas 0 0.25 0.5 0.75 1 --eval_sets pgv-en-fr pgv-fr-en
    python recipes/alpha_sweep.py --preset demo
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from llmdiet.config import ConfigError, check_range, parse_config, precheck
from llmdiet.distill.job import DataArguments, DistillationArguments, TrainerFlagChecks, check_output_dir
from llmdiet.distill.job import demo_preset as distill_demo_preset
from llmdiet.distill.job import reference_defaults, run
from llmdiet.modeling import resolve_model

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments


@dataclass
class SweepArguments:
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                metadata={"help": "Alpha values to train, each in [0, 1]."})
    eval_sets: list[str] = field(default_factory=lambda: ["pgv-en-fr"],
                                 metadata={"help": "Eval sets for every student (names or files)."})
    eval_limit: int | None = field(default=None, metadata={"help": "Score only the first N rows of each set."})
    eval_batch_size: int = field(default=32, metadata={"help": "Eval harness batch size."})
    eval_teacher: bool = field(default=True, metadata={"help": "Also evaluate the teacher, as the reference row."})
    sweep_dir: str = field(default="runs/alpha-sweep", metadata={"help": "Where the runs and the comparison go."})

    def __post_init__(self):
        for a in self.alphas:
            check_range("alphas", a, 0.0, 1.0)
        check_range("eval_limit", self.eval_limit, 1)


def demo_preset() -> dict:
    return {**distill_demo_preset(), "alphas": [0.0, 0.5, 1.0], "eval_sets": ["demo-en-fr", "demo-fr-en"],
            "sweep_dir": "runs/alpha-sweep-demo", "num_train_epochs": 3}


def evaluate(model: str, out: Path, sweep: SweepArguments) -> str:
    from llmdiet.evaluation.harness import EvalArguments, run_eval

    run_eval(EvalArguments(model=model, eval_set=list(sweep.eval_sets), out=str(out), limit=sweep.eval_limit,
                           batch_size=sweep.eval_batch_size, progress=False))
    return str(out)


def validate(sweep: SweepArguments, dist: DistillationArguments) -> None:
    """Everything that can be checked before the first student trains: eval sets (declared and readable) and
    local model paths. (Before, an unknown eval set surfaced only after the first training.)"""
    from llmdiet.evaluation.eval_sets import resolve_eval_set

    for name in sweep.eval_sets:
        resolve_eval_set(name).load()
    for flag, model in (("--teacher_model", dist.teacher_model), ("--student_model", dist.student_model)):
        looks_local = model.startswith((".", "/", "~", "runs/")) or model.count("/") != 1
        if looks_local and not model.startswith("llmdiet-demo:") and not Path(model).expanduser().exists():
            raise ConfigError(f"{flag} {model}: no such directory (a local path, a hub id owner/name, or llmdiet-demo:*)")


def run_sweep(sweep: SweepArguments, dist: DistillationArguments, data: DataArguments,
              training: "Seq2SeqTrainingArguments") -> list[str]:
    from transformers.trainer_utils import get_last_checkpoint

    from llmdiet.evaluation.compare import main as compare_main

    validate(sweep, dist)
    root = Path(sweep.sweep_dir)
    eval_dirs, labels = [], []
    for alpha in sweep.alphas:
        run_dir = root / f"alpha-{alpha:g}"
        if not (run_dir / "training_log.json").exists():
            args, targs = copy.deepcopy(dist), copy.deepcopy(training)
            args.alpha, targs.output_dir = alpha, str(run_dir)
            if run_dir.is_dir() and get_last_checkpoint(str(run_dir)):
                targs.resume_from_checkpoint = "latest"
            run(args, data, targs, command=["alpha-sweep", f"alpha={alpha}"])
        if training.process_index == 0:
            eval_dirs.append(evaluate(str(run_dir), root / f"eval-alpha-{alpha:g}", sweep))
            labels.append(f"student alpha={alpha:g}")
    if training.process_index != 0:
        return []
    if sweep.eval_teacher:
        eval_dirs.append(evaluate(resolve_model(dist.teacher_model), root / "eval-teacher", sweep))
        labels.append("teacher")
    compare_main([*eval_dirs, "--out", str(root), "--labels", *labels])
    return eval_dirs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    presets = {"reference": reference_defaults, "demo": demo_preset}
    precheck((SweepArguments, DistillationArguments, DataArguments, TrainerFlagChecks), argv, presets=presets,
             prog="recipes/alpha_sweep.py", default_preset="reference")
    from transformers import Seq2SeqTrainingArguments

    sweep, dist, data, training = parse_config(
        (SweepArguments, DistillationArguments, DataArguments, Seq2SeqTrainingArguments), argv,
        presets=presets, default_preset="reference",
        prog="recipes/alpha_sweep.py", description="Distil once per alpha, evaluate every student, compare.",
    )
    run_sweep(sweep, dist, data, training)
    return 0
