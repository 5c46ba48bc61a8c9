"""``llmdiet distill --help`` in well under a second, grouped: the common flags, the data, the Trainer's most used
flags, one line per method (``--help_method NAME`` for one method's flags with their help) and a pointer to
``--help_trainer`` (every Seq2SeqTrainingArguments flag, which loads transformers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from llmdiet.config import ConfigError, light_parser
from llmdiet.distill.methods import get_method, methods, modifiers
from llmdiet.distill.settings import _OWN_TRAINER_FLAGS, EARLY_TRAINER_FLAGS, DataArguments, TrainerFlagChecks
from llmdiet.distill.settings import _RunArguments as RunArguments

HELP_FLAGS = ("--help_method", "--help_trainer")


def _flag_list(config: type) -> str:
    return " ".join(f"--{f.name}" for f in fields(config)) or "(no flags of its own)"


def distill_help(
    prog: str, description: str, presets: dict, trainer_flag_count: int, extra_groups: Sequence = ()
) -> str:
    """The grouped help text of ``llmdiet distill`` (and the sweeps that take its flags)."""
    groups = [
        *extra_groups,
        ("common", [RunArguments, *_OWN_TRAINER_FLAGS, *EARLY_TRAINER_FLAGS]),
        ("data", [DataArguments]),
        ("student modifiers (any method)", [m.config for m in modifiers().values()]),
        ("training (the Trainer's most used flags)", [TrainerFlagChecks]),
    ]
    parser = light_parser([], prog, description, presets, "reference", groups=groups)
    lines = [parser.format_help().rstrip(), "", "methods (--method NAME) and their own flags:"]
    for name, entry in methods().items():
        lines.append(f"  {name:<10} {_flag_list(entry.config)}")
    lines += [
        f"  {prog} --help_method NAME   shows one method's flags with their help.",
        "",
        f"Every other Seq2SeqTrainingArguments flag is accepted too ({trainer_flag_count} option strings, e.g. "
        "--max_steps, --eval_strategy, --bf16, --deepspeed):",
        f"  {prog} --help_trainer        lists them with their help (loads transformers).",
    ]
    return "\n".join(lines)


def method_help(prog: str, name: str) -> str:
    entry = get_method(name)
    parser = light_parser([], f"{prog} --method {name}", entry.help, groups=[(f"--method {name}", [entry.config])])
    lines = parser.format_help().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"--method {name}"))
    body = "\n".join(lines[start:])
    return f"{prog} --method {name}: {entry.help}\n\n{body}\n"


def trainer_help(prog: str) -> str:
    from transformers import HfArgumentParser, Seq2SeqTrainingArguments

    parser = HfArgumentParser([Seq2SeqTrainingArguments], prog=f"{prog} (Trainer flags)")  # type: ignore[list-item]
    return parser.format_help()


def help_request(
    argv: list[str], prog: str, description: str, presets: dict, trainer_flag_count: int, extra_groups: Sequence = ()
) -> str | None:
    """The help text ``argv`` asks for (``--help``, ``--help_method NAME``, ``--help_trainer``), or None."""
    if "--help_method" in argv:
        i = argv.index("--help_method")
        if i + 1 >= len(argv):
            raise ConfigError(f"--help_method needs a method name ({', '.join(methods())})")
        return method_help(prog, argv[i + 1])
    if "--help_trainer" in argv:
        return trainer_help(prog)
    if "-h" in argv or "--help" in argv:
        return distill_help(prog, description, presets, trainer_flag_count, extra_groups)
    return None
