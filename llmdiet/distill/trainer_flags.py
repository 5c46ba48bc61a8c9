"""The names of ``Seq2SeqTrainingArguments``' flags, known without importing transformers (which loads torch).

``llmdiet distill`` and ``llmdiet alpha-sweep`` refuse a misspelt flag before torch loads, so they must know
the Trainer's ~150 flags by name. ``trainer_flags.json`` ships them for the transformers versions of
``constraints.txt`` and ``constraints-onnx.txt``; any other version computes them once (one transformers import)
and keeps them in ``$LLMDIET_CACHE_DIR`` (default ``~/.cache/llmdiet``).

    python -m llmdiet.distill.trainer_flags --write    # add the installed version to trainer_flags.json
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

SHIPPED = Path(__file__).with_name("trainer_flags.json")


def transformers_version() -> str:
    return metadata.version("transformers")


def compute_trainer_flags() -> list[str]:
    """Every option string HfArgumentParser gives Seq2SeqTrainingArguments (imports transformers)."""
    from transformers import HfArgumentParser, Seq2SeqTrainingArguments

    parser = HfArgumentParser([Seq2SeqTrainingArguments])  # type: ignore[list-item]  # a dataclass type
    return sorted(o for o in parser._option_string_actions if o.startswith("--") and o != "--help")


def _cache_file(version: str) -> Path:
    root = Path(os.environ.get("LLMDIET_CACHE_DIR") or Path.home() / ".cache" / "llmdiet")
    return root / f"trainer-flags-transformers-{version}.json"


def trainer_flags() -> list[str]:
    """The installed transformers' Seq2SeqTrainingArguments option strings: shipped, cached, or computed once."""
    version = transformers_version()
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8")) if SHIPPED.is_file() else {}
    if version in shipped:
        return shipped[version]
    cache = _cache_file(version)
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    flags = compute_trainer_flags()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(flags), encoding="utf-8")
        tmp.replace(cache)
    except OSError:  # a read-only home: computed again next time
        pass
    return flags


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv != ["--write"]:
        print(__doc__)
        return 2
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8")) if SHIPPED.is_file() else {}
    shipped[transformers_version()] = compute_trainer_flags()
    SHIPPED.write_text(json.dumps(shipped, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{SHIPPED}: {len(shipped[transformers_version()])} flags for transformers {transformers_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
