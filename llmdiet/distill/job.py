"""``llmdiet distill`` (and ``recipes/distill.py``) and its Python twin ``llmdiet.distill(...)``.

Defaults reproduce the reference study: teacher ``google/flan-t5-large``, student ``google/flan-t5-small``,
Parallel Global Voices En->Fr rows [0, 10000) for training, [12000, 13000) as the dev rows that pick checkpoints
(rows [10000, 12000) are the test set ``pgv-en-fr`` and are never used here), AdamW, learning rate 1e-5,
alpha 0.5. ``--preset demo`` runs everything offline on tiny local models.

The settings are the dataclasses of :mod:`llmdiet.distill.settings` (each method's flags come from its module in
:mod:`llmdiet.distill.methods`); the run is :func:`llmdiet.distill.run.run`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from llmdiet.config import TRAINER_ARGUMENTS, check_python_types, parse_config, precheck
from llmdiet.data import DataError
from llmdiet.distill.methods import check_given_flags
from llmdiet.distill.presets import PRESETS, demo_preset, reference_defaults
from llmdiet.distill.run import run
from llmdiet.distill.settings import (
    EARLY_TRAINER_FLAGS,
    DataArguments,
    DistillationArguments,
    DistillSettings,
    TrainerFlagChecks,
    build_settings,
    check_device,
    check_output_dir,
    check_training_arguments,
    merged_values,
)

PROG = "llmdiet distill"
DESCRIPTION = "Distil a seq2seq teacher into a student: loss = alpha*T^2*KL(teacher||student) + (1-alpha)*CE."


def parse_settings(argv: list[str], prog: str = PROG) -> DistillSettings:
    """Command-line flags (with ``--preset``/``--config``) -> the run's settings, checked twice: every flag's name
    and llmdiet's own dataclasses and the common Trainer mistakes before transformers loads (~0.3 s), then
    everything."""
    from llmdiet.distill.trainer_flags import trainer_flags

    extra = trainer_flags()
    early = precheck(
        (DistillationArguments, DataArguments, TrainerFlagChecks, *EARLY_TRAINER_FLAGS),
        argv,
        presets=PRESETS,
        prog=prog,
        default_preset="reference",
        extra_flags=extra,
    )
    if early:
        check_given_flags(str(early.get("method") or "kd"), early)
        check_output_dir(
            early.get("output_dir") or "runs/distill",
            early.get("resume_from_checkpoint"),
            bool(early.get("overwrite_output_dir")),
        )
    argv = list(argv)
    if early.get("device") == "cpu":
        argv += ["--use_cpu", "true"]
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1 and "--use_cpu" not in argv:
        import torch

        if not torch.cuda.is_available():  # several CPU processes (torchrun/accelerate): DDP over gloo
            argv = [*argv, "--use_cpu", "true"]
    settings = DistillSettings(
        *parse_config(
            (DistillationArguments, DataArguments, TRAINER_ARGUMENTS),
            argv,
            presets=PRESETS,
            prog=prog,
            description=DESCRIPTION,
            default_preset="reference",
            extra_flags=extra,
        )
    )
    check_device(settings.distill.device)
    return settings


def print_help(argv: list[str], prog: str = PROG) -> bool:
    """Print the help ``argv`` asks for (grouped, without transformers); False when it asks for none."""
    from llmdiet.distill.cli_help import help_request
    from llmdiet.distill.trainer_flags import trainer_flags

    text = help_request(argv, prog, DESCRIPTION, PRESETS, len(trainer_flags()))
    if text is None:
        return False
    print(text)
    return True


def _print_summary(summary: dict, training: Any) -> None:
    final = [e for e in summary["log_history"] if "loss" in e]
    if final:
        first, last = final[0], final[-1]
        nan = float("nan")
        print(
            f"\nstudent saved to {training.output_dir} after {summary['global_step']} steps; "
            f"loss {first['loss']:.3f} -> {last['loss']:.3f}, CE {first.get('ce', nan):.3f} -> "
            f"{last.get('ce', nan):.3f}, KD {first.get('kd', nan):.3f} -> {last.get('kd', nan):.3f}"
        )
    bleu = [e["eval_bleu"] for e in summary["log_history"] if "eval_bleu" in e]
    if bleu:
        print(
            f"eval BLEU per evaluation: {', '.join(f'{b:.1f}' for b in bleu)} "
            f"(saved model: {'best' if training.load_best_model_at_end else 'last'})"
        )
    print(
        f"training log: {Path(training.output_dir) / 'training_log.json'}; "
        f"loss curve: {Path(training.output_dir) / 'loss_curve.png'}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if print_help(argv):
        return 0
    is_demo = "demo" in argv and ("--preset" in argv or "--preset=demo" in argv)
    args, data, training = parse_settings(argv)
    if args.plan:
        from llmdiet.distill.memory_plan import print_plan

        print_plan(args, data, training)
        return 0
    if is_demo:
        from llmdiet.demo import DEMO_BANNER

        print(DEMO_BANNER, flush=True)
    # one progress line per logging step (the Trainer's printed dicts and bars with --verbose)
    quiet = not (
        os.environ.get("LLMDIET_VERBOSE") or os.environ.get("LLMDIET_LOG_LEVEL", "").upper() in ("INFO", "DEBUG")
    )
    summary = run(args, data, training, command=["llmdiet", "distill", *argv], quiet=quiet)
    if training.process_index == 0:
        _print_summary(summary, training)
        if is_demo:
            from llmdiet.demo import DEMO_BANNER

            print(DEMO_BANNER)
    return 0


def options_to_argv(options: dict) -> list[str]:
    """``{"alpha": 0.5, "eval_sets": ["a", "b"], "bf16": True}`` -> ``["--alpha", "0.5", "--eval_set", "a", "b", ...]``
    (the command line that reproduces a run built from Python values, for its log and model card)."""
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


def settings_from_options(
    preset: str | None = None,
    config: str | None = None,
    where: str = "llmdiet.distill",
    resumable: bool = True,
    **options: Any,
) -> DistillSettings:
    """The run's settings from Python values: defaults < ``preset`` (default ``reference``) < YAML ``config`` <
    ``options`` (any flag of DistillationArguments, DataArguments or Seq2SeqTrainingArguments). ``resumable``:
    refuse an output_dir with checkpoints unless told to resume or overwrite (the study decides that itself)."""
    values = merged_values(preset or "reference", config, options, PRESETS)
    if resumable:
        check_output_dir(
            values.get("output_dir") or "runs/distill",
            values.get("resume_from_checkpoint"),
            bool(values.get("overwrite_output_dir")),
        )
    return build_settings(values, where=where)


def distill(*, preset: str | None = None, config: str | None = None, **options: Any) -> dict:
    """``llmdiet distill`` from Python: ``options`` are its flags as Python values, checked by the same dataclasses;
    returns the summary written to training_log.json.

    ``llmdiet.distill(preset="demo", output_dir="runs/s", alpha=0.25)``
    """
    from transformers import Seq2SeqTrainingArguments

    check_python_types("llmdiet.distill()", [DistillationArguments, DataArguments, Seq2SeqTrainingArguments], options)
    settings = settings_from_options(preset, config, **options)
    command = [
        "llmdiet",
        "distill",
        *(["--preset", preset] if preset else []),
        *(["--config", config] if config else []),
        *options_to_argv(options),
    ]
    return run(*settings, command=command, quiet=True)


__all__ = [
    "DistillationArguments",
    "DataArguments",
    "DistillSettings",
    "PRESETS",
    "main",
    "run",
    "distill",
    "parse_settings",
    "settings_from_options",
    "check_training_arguments",
    "demo_preset",
    "reference_defaults",
    "DataError",
]
