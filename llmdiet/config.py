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


def parse_config(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    presets: dict[str, Callable[[], dict[str, Any]]] | None = None,
    prog: str | None = None,
    description: str | None = None,
    default_preset: str | None = None,
):
    """Parse ``argv`` into one instance per dataclass type (see module docstring for precedence)."""
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser):
        def error(self, message):  # one line instead of the whole usage
            raise ConfigError(f"{message} (see {self.prog} --help)")

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(
        list(dataclass_types),  # type: ignore[arg-type]  # dataclass types
        prog=prog,
        description=description,
        allow_abbrev=False,
    )  # no --temp = --temperature
    parser.add_argument("--config", default=None, help="YAML file of option: value pairs (command-line flags win).")
    if presets:
        parser.add_argument(
            "--preset",
            default=default_preset,
            choices=sorted(presets),
            help=f"Named set of defaults (default: {default_preset}).",
        )
    if "-h" in argv or "--help" in argv:
        parser.parse_args(argv)  # prints help and exits
    known = {f.name for dc in dataclass_types for f in fields(dc)}
    defaults = _preset_and_config(argv, presets, default_preset, known)
    parser.set_defaults(**defaults)
    # Required fields given by a preset/YAML must not be demanded again on the command line.
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ConfigError:
        raise
    except ValueError as err:  # a dataclass's own check (e.g. TrainingArguments): report it without a traceback
        raise ConfigError(" ".join(str(err).split())) from None
    return tuple(parsed[: len(dataclass_types)])  # drop the namespace holding --config/--preset


# ----------------------------------------------------------------------------- fast checks before heavy imports


def _field_parser(dataclass_types: Sequence[type], prog: str | None):
    """An argparse parser for llmdiet's own (light) dataclasses, without transformers (which imports torch)."""
    import argparse
    import typing

    class _Light(argparse.ArgumentParser):
        def error(self, message):
            raise ConfigError(f"{message} (see {self.prog} --help)")

    def to_bool(text: str) -> bool:
        if text.lower() in ("true", "1", "yes", "y"):
            return True
        if text.lower() in ("false", "0", "no", "n"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")

    parser = _Light(prog=prog, add_help=False, allow_abbrev=False)
    for dc in dataclass_types:
        hints = typing.get_type_hints(dc)
        for f in fields(dc):
            kind = hints[f.name]
            args = typing.get_args(kind)
            if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
                kind = next(a for a in args if a is not type(None))
            names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
            options: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
            if "choices" in f.metadata:
                options["choices"] = f.metadata["choices"]
            if kind is bool:
                parser.add_argument(*names, type=to_bool, nargs="?", const=True, **options)
                if f.default is True:
                    parser.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", default=argparse.SUPPRESS)
            elif typing.get_origin(kind) is list:
                parser.add_argument(*names, type=typing.get_args(kind)[0], nargs="+", **options)
            else:
                parser.add_argument(*names, type=kind if kind in (int, float, str) else str, **options)
    return parser


def precheck(
    dataclass_types: Sequence[type],
    argv: Sequence[str],
    presets: dict[str, Callable[[], dict[str, Any]]] | None = None,
    prog: str | None = None,
    default_preset: str | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Validate the flags of llmdiet's own dataclasses in well under a second, before torch/transformers load.

    Builds each dataclass from (defaults < preset < YAML < flags) so its range checks run; flags that belong
    to other dataclasses (e.g. the Trainer's) are left for the full parse, unless ``strict`` (every flag is one of
    these dataclasses'): then an unknown flag is refused here too. Returns the merged values.
    """
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        return {}
    values = _preset_and_config(argv, presets, default_preset, known=None)
    parsed, others = _field_parser(dataclass_types, prog).parse_known_args(argv)
    if strict and others:
        unknown = [a for a in others if a.startswith("-")] or others
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (see {prog} --help)")
    values.update(vars(parsed))
    for dc in dataclass_types:
        names = {f.name for f in fields(dc)}
        dc(**{k: v for k, v in values.items() if k in names})
    return values


# ----------------------------------------------------------------------------- settings as objects


def _scalar_kind(hint):
    """int/float/bool/str of a field type (``Optional[int]`` -> int), or None for anything else."""
    import types
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None)):
        hint = args[0] if len(args) == 1 else None
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
