"""Command-line configuration: dataclasses parsed by ``HfArgumentParser``, optionally from YAML.

Precedence, lowest to highest: dataclass defaults < ``--preset NAME`` < ``--config FILE.yaml``
< explicit command-line flags. Unknown YAML keys are an error that names the file and key.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user-facing configuration problem (bad YAML, unknown key, out-of-range value)."""


def check_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (bounds optional, optionally open); NaN and infinities are
    refused whatever the bounds (every comparison with NaN is false, so a plain range check lets it through)."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--{name} must be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"--{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ConfigError(f"--{name} must be {'<' if high_open else '<='} {high}, got {value}")


def _pop_option(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a value")
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(flag + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (line {key_node.start_mark.line + 1}): keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except yaml.constructor.ConstructorError as err:
        raise ConfigError(f"{path}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def _preset_and_config(argv: list[str], presets, default_preset: str | None, known: set[str] | None) -> dict[str, Any]:
    """Pop ``--preset`` and ``--config`` from ``argv``; their values merged (preset < YAML). With ``known``,
    YAML keys outside it are an error naming the file (``None``: the caller checks only some of the fields)."""
    values: dict[str, Any] = {}
    preset = (_pop_option(argv, "--preset") or default_preset) if presets else None
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"unknown --preset '{preset}' (known: {', '.join(sorted(presets))})")
        values.update(presets[preset]())
    config_path = _pop_option(argv, "--config")
    if config_path is not None:
        data = load_yaml(config_path)
        unknown = sorted(set(data) - known) if known is not None else []
        if unknown:
            raise ConfigError(f"{config_path}: unknown option(s) {unknown}")
        values.update(data)
    return values


# ----------------------------------------------------------------------------- one vocabulary

# Old flag spellings -> the one name every command uses now (the Hugging Face examples' names). They keep
# working for one release, hidden from --help, each with a one-line note; README "One vocabulary" lists them.
DEPRECATED_FLAGS: dict[str, str] = {
    "out": "output_dir",
    "sweep_dir": "output_dir",
    "study_dir": "output_dir",
    "overwrite": "overwrite_output_dir",
    "prefix": "source_prefix",
    "calibration_prefix": "source_prefix",
    "eval_sets": "eval_set",
    "limit": "max_eval_samples",
    "eval_limit": "max_eval_samples",
    "calibration_count": "max_calibration_samples",
    "calibration_rows": "max_calibration_samples",
    "reference_column": "target_column",
    "calibration_source_column": "source_column",
    "calibration_target_column": "target_column",
}
DEPRECATION_RELEASE = "0.3"
_NOTED: set[tuple[str, str]] = set()


def deprecation_note(prog: str | None, old: str, new: str, where: str = "") -> None:
    """One line on stderr per old spelling and command (``llmdiet eval: --out is deprecated ...``)."""
    if (str(prog), old) in _NOTED:
        return
    _NOTED.add((str(prog), old))
    print(
        f"{prog or 'llmdiet'}: {where}--{old} is deprecated and will be removed in llmdiet {DEPRECATION_RELEASE}; "
        f"use --{new}",
        file=sys.stderr,
    )


def rename_deprecated(argv: Sequence[str], known: set[str], prog: str | None = None) -> list[str]:
    """``argv`` with each old spelling whose new name this command has (``known``: its field names) renamed."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            key = name.replace("-", "_")
            new = DEPRECATED_FLAGS.get(key)
            if new is not None and key not in known and new in known:
                deprecation_note(prog, name, new)
                arg = f"--{new}{eq}{value}"
        out.append(arg)
    return out


def rename_deprecated_keys(values: dict, known: set[str], where: str, prog: str | None = None) -> dict:
    """A mapping (YAML file, Python options) with old key spellings renamed; both spellings at once is an error."""
    out = dict(values)
    for old, new in DEPRECATED_FLAGS.items():
        if old in out and old not in known and new in known:
            if new in out:
                raise ConfigError(
                    f"{where}: '{old}' and '{new}' are the same option ('{old}' is its old name); keep '{new}'"
                )
            deprecation_note(prog, old, new, where=f"{where}: ")
            out[new] = out.pop(old)
    return out


def rename_deprecated_kwargs(where: str, options: dict, known: set[str]) -> dict:
    """Python keyword arguments with their old names renamed (a FutureWarning per old name, the CLI's note)."""
    import warnings

    out = dict(options)
    for old, new in DEPRECATED_FLAGS.items():
        if old in out and old not in known and new in known:
            if new in out:
                raise ArgumentTypeError(f"{where}: {old}= and {new}= are the same option ({old}= is its old name)")
            warnings.warn(
                f"{where}: {old}= is deprecated and will be removed in llmdiet {DEPRECATION_RELEASE}; use {new}=",
                FutureWarning,
                stacklevel=3,
            )
            out[new] = out.pop(old)
    return out


# ----------------------------------------------------------------------------- parsing


def merge_repeated_option(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``--eval_set a --eval_set b c`` -> ``--eval_set a b c`` (argparse would keep only the last)."""
    values, rest, i, seen = [], [], 0, False
    while i < len(argv):
        arg = argv[i]
        if arg in flags:
            seen, i = True, i + 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        if any(arg.startswith(f + "=") for f in flags):
            seen = True
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest + ([flags[0], *values] if seen else [])


def _merge_repeated_lists(argv: list[str], dataclass_types: Sequence[Any]) -> list[str]:
    """Every list flag (``--eval_set``, ``--replay_set``, ...) may be repeated; its values add up."""
    import typing

    for dc in dataclass_types:
        if dc is TRAINER_ARGUMENTS:
            continue
        hints = typing.get_type_hints(dc)
        for f in fields(dc):
            if typing.get_origin(unwrap_optional(hints[f.name])) is list:
                spellings = (f"--{f.name}", f"--{f.name.replace('_', '-')}")
                if sum(a.split("=", 1)[0] in spellings for a in argv) > 1:
                    argv = merge_repeated_option(argv, spellings)
    return argv


TRAINER_ARGUMENTS = "transformers.Seq2SeqTrainingArguments"  # resolved only after the fast check (it loads torch)


def _is_light(dc) -> bool:
    return dc is not TRAINER_ARGUMENTS


def parse_config(
    dataclass_types: Sequence[Any],
    argv: Sequence[str] | None = None,
    presets: dict[str, Callable[[], dict[str, Any]]] | None = None,
    prog: str | None = None,
    description: str | None = None,
    default_preset: str | None = None,
    extra_flags: Sequence[str] = (),
    config_help: str = "YAML file of option: value pairs (flags win).",
):
    """Parse ``argv`` into one instance per dataclass type (see module docstring for precedence).

    First, without transformers (well under a second): old flag spellings are renamed with a note, ``--help``
    is printed, and an unknown flag is refused with the closest valid name. ``TRAINER_ARGUMENTS`` stands for
    ``Seq2SeqTrainingArguments``, whose flags (``extra_flags``) are checked by name only at that stage.
    Then ``HfArgumentParser`` parses everything into the dataclasses, whose own checks run.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    light = [dc for dc in dataclass_types if _is_light(dc)]
    known = {f.name for dc in light for f in fields(dc)}
    if TRAINER_ARGUMENTS in dataclass_types:
        known |= {flag.lstrip("-").replace("-", "_") for flag in extra_flags}
    argv = _merge_repeated_lists(rename_deprecated(argv, known, prog), light)
    parser = light_parser(light, prog, description, presets, default_preset, extra_flags, config_help=config_help)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        raise SystemExit(0)
    strict_check(parser, argv, extra_flags)
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser):
        def error(self, message):  # one line instead of the whole usage
            raise ConfigError(f"{message} (see {self.prog} --help)")

    types = []
    for dc in dataclass_types:
        if dc is TRAINER_ARGUMENTS:
            from transformers import Seq2SeqTrainingArguments

            dc = Seq2SeqTrainingArguments
        types.append(dc)
    hf = _Parser(types, prog=prog, description=description, allow_abbrev=False)  # no --temp = --temperature
    hf.add_argument("--config", default=None)
    if presets:
        hf.add_argument("--preset", default=default_preset, choices=sorted(presets))
    all_known = {f.name for dc in types for f in fields(dc)}
    defaults = rename_deprecated_keys(
        _preset_and_config(argv, presets, default_preset, all_known | set(DEPRECATED_FLAGS)),
        all_known,
        "--config",
        prog,
    )
    hf.set_defaults(**defaults)
    # Required fields given by a preset/YAML must not be demanded again on the command line.
    for action in hf._actions:
        if action.dest in defaults:
            action.required = False
    try:
        parsed = hf.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ConfigError:
        raise
    except ValueError as err:  # a dataclass's own check (e.g. TrainingArguments): report it without a traceback
        raise ConfigError(" ".join(str(err).split())) from None
    return tuple(parsed[: len(types)])  # drop the namespace holding --config/--preset


def _to_bool(text: str) -> bool:
    import argparse

    if text.lower() in ("true", "1", "yes", "y"):
        return True
    if text.lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def unwrap_optional(hint):
    """``Optional[X]`` / ``X | None`` -> X (any other type unchanged): the one place this is worked out."""
    import types
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None)) and len(args) == 1:
        return args[0]
    return hint


def add_dataclass_arguments(group, dc, with_help: bool = True) -> None:
    """``dc``'s fields as argparse options (HfArgumentParser's spellings: ``--name``, ``--name true|false``,
    ``--no_name`` for a flag that defaults to true, several values for a list), without transformers."""
    import argparse
    import typing

    hints = typing.get_type_hints(dc)
    for f in fields(dc):
        if not f.init:
            continue
        kind = unwrap_optional(hints[f.name])
        options: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if "choices" in f.metadata:
            options["choices"] = f.metadata["choices"]
        if kind is bool:
            options.update(type=_to_bool, nargs="?", const=True, metavar="true|false")
        elif typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            options.update(type=item if item in (int, float, str) else str, nargs="+")
        else:
            options.update(type=kind if kind in (int, float, str) else str)
            if "choices" not in options:
                options["metavar"] = f.name.upper()
        help_text = f.metadata.get("help", "") if with_help else argparse.SUPPRESS
        group.add_argument(f"--{f.name}", help=help_text, **options)
        if "_" in f.name:  # HfArgumentParser's dashed spelling, accepted but not listed
            group.add_argument(f"--{f.name.replace('_', '-')}", help=argparse.SUPPRESS, **options)
        if kind is bool and f.default is True:
            group.add_argument(
                f"--no_{f.name}", dest=f.name, action="store_false", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )


def light_parser(
    dataclass_types: Sequence[type],
    prog: str | None,
    description: str | None = None,
    presets: dict | None = None,
    default_preset: str | None = None,
    extra_flags: Sequence[str] = (),
    groups: Sequence[tuple[str, Sequence[type]]] = (),
    config_help: str = "YAML file of option: value pairs (flags win).",
):
    """An argparse parser of llmdiet's own dataclasses (with help text), without transformers (which imports
    torch); ``extra_flags`` (the Trainer's) are accepted by name, ``groups`` titles sections of the help."""
    import argparse

    class _Light(argparse.ArgumentParser):
        def error(self, message):
            raise ConfigError(f"{message} (see {self.prog} --help)")

    parser = _Light(prog=prog, description=description, allow_abbrev=False, usage=f"{prog} [options]")
    grouped = [t for _, types in groups for t in types]
    for title, types in groups:
        group = parser.add_argument_group(title)
        for dc in types:
            add_dataclass_arguments(group, dc)
    for dc in dataclass_types:
        if dc not in grouped:
            add_dataclass_arguments(parser, dc)
    parser.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    if presets:
        parser.add_argument(
            "--preset",
            default=argparse.SUPPRESS,
            choices=sorted(presets),
            help=f"Named set of defaults (default: {default_preset}).",
        )
    taken = set(parser._option_string_actions)
    for flag in extra_flags:
        if flag not in taken:
            parser.add_argument(flag, nargs="*", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def closest_flag(flag: str, options: Sequence[str]) -> str:
    """`` (did you mean --x?)`` for the valid option closest to ``flag`` (old spellings lead to their new name)."""
    import difflib

    name = flag.split("=", 1)[0]
    current = [o for o in options if o.startswith("--")]
    candidates = {o: o for o in current}
    for old, new in DEPRECATED_FLAGS.items():
        if f"--{new}" in current:
            candidates.setdefault(f"--{old}", f"--{new}")
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f" (did you mean {candidates[found[0]]}?)" if found else ""


def strict_check(parser, argv: Sequence[str], extra_flags: Sequence[str] = ()) -> Any:
    """Parse ``argv`` with the light parser; an unknown flag is one line naming the closest valid one."""
    parsed, others = parser.parse_known_args(list(argv))
    if others:
        unknown = [a for a in others if a.startswith("-")] or others
        raise ConfigError(
            f"unrecognized argument {unknown[0]}{closest_flag(unknown[0], list(parser._option_string_actions))}"
            f" (see {parser.prog} --help)"
        )
    return parsed


def precheck(
    dataclass_types: Sequence[type],
    argv: Sequence[str],
    presets: dict[str, Callable[[], dict[str, Any]]] | None = None,
    prog: str | None = None,
    default_preset: str | None = None,
    extra_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """Validate the flags of llmdiet's own dataclasses in well under a second, before torch/transformers load.

    Every flag must be one of these dataclasses' or in ``extra_flags`` (the Trainer's, checked by name only).
    Builds each dataclass from (defaults < preset < YAML < flags) so its range checks run. Returns the merged
    values (the flags given on the command line, the preset's and the YAML's).
    """
    known = {f.name for dc in dataclass_types for f in fields(dc)}
    argv = rename_deprecated(argv, known | {f.lstrip("-").replace("-", "_") for f in extra_flags}, prog)
    argv = _merge_repeated_lists(argv, dataclass_types)
    if "-h" in argv or "--help" in argv:
        return {}
    values = rename_deprecated_keys(
        _preset_and_config(argv, presets, default_preset, known=None), known, "--config", prog
    )
    parser = light_parser(dataclass_types, prog, presets=None, extra_flags=extra_flags)
    parsed = strict_check(parser, argv, extra_flags)
    values.update({k: v for k, v in vars(parsed).items() if k in known})
    for dc in dataclass_types:
        names = {f.name for f in fields(dc)}
        dc(**{k: v for k, v in values.items() if k in names})
    return values


# ----------------------------------------------------------------------------- settings as objects


def _scalar_kind(hint):
    """int/float/bool/str of a field type (``Optional[int]`` -> int), or None for anything else."""
    hint = unwrap_optional(hint)
    return hint if hint in (int, float, bool, str) else None


def coerce_value(name: str, hint, value):
    """``value`` as the field's scalar type: numbers and flags also from text (YAML reads ``1e-5`` as text);
    a value of the wrong kind is a ConfigError naming ``--name``."""
    kind = _scalar_kind(hint)
    if value is None or kind is None:
        return value
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ConfigError(f"--{name}: expected true or false, got {value!r}")
        try:
            return kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            raise ConfigError(
                f"--{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
    if kind in (int, float) and (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and isinstance(value, float) and not value.is_integer())
    ):
        raise ConfigError(f"--{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind is int and isinstance(value, float):
        return int(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"--{name}: expected true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"--{name}: expected text, got {value!r}")
    return value


class ArgumentTypeError(ConfigError, TypeError):
    """A wrong type given to the Python API: a ConfigError (one line from the CLI) that is also a TypeError."""


def check_python_types(where: str, dataclass_types: Sequence[type], options: dict) -> None:
    """The Python API's one rule: options are given as their documented types, never as text to convert
    (``llmdiet.distill(alpha="0.5")`` and ``llmdiet.evaluate(..., limit="10")`` are both refused); a float option
    takes an int, a list option a list (or tuple) of strings. YAML files and command lines are text and are
    converted (:func:`coerce_value`); Python callers are not."""
    import typing

    for dc in dataclass_types:
        hints = typing.get_type_hints(dc)
        for f in fields(dc):
            if f.name not in options or options[f.name] is None:
                continue
            value, hint = options[f.name], hints.get(f.name)
            kind = _scalar_kind(hint)
            ok = True
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif kind is str:
                ok = isinstance(value, str)
            elif "list" in str(hint).lower():
                ok = (
                    isinstance(value, (list, tuple))
                    and all(isinstance(v, str) for v in value)
                    or isinstance(value, str)
                )
            if not ok:
                expected = kind.__name__ if kind else "a list of strings"
                raise ArgumentTypeError(f"{where}: {f.name} must be {expected}, got {value!r} ({type(value).__name__})")


def coerce_fields(dataclass_type: type, values: dict) -> dict:
    """The entries of ``values`` that are init fields of ``dataclass_type``, each as its field's type."""
    import typing

    hints = typing.get_type_hints(dataclass_type)
    return {
        f.name: coerce_value(f.name, hints.get(f.name), values[f.name])
        for f in fields(dataclass_type)
        if f.init and f.name in values
    }
