"""Eval sets: small versioned YAML declarations in ``eval_sets/``, or any local parallel file.

A set named ``NAME`` is the file ``eval_sets/NAME.yaml`` (directory overridable with the
environment variable ``LLMDIET_EVAL_SETS``). Schema (``eval_sets/README.md`` has the long form)::

    version: 1                          # bump when rows/columns/prefix change (stored with every run)
    description: In-domain test set ...
    direction: en-fr                    # source-target language codes
    prefix: "translate English to French: "
    demo: false                         # true for the offline sets written for llmdiet
    source:                             # exactly one of file / hub
      file: data/parallel.jsonl             # relative to this YAML file (llmdiet-demo:NAME: the demo corpus)
      # hub: owner/dataset   revision: <commit sha>   split: train   config: <name or omitted>
    columns: {source: en, reference: fr}
    header: true                        # TSV/CSV only: false = no header row (two columns: source, reference)
    rows: [1000, 1200]                  # optional half-open slice [start, stop) of the usable rows
    notes: free text                    # optional

``--eval_set`` also takes a path: a YAML file with the schema above, or a JSONL/JSON/CSV/TSV/Parquet
file of ``source``/``reference`` columns (names configurable). A TSV/CSV file's first row is its
header unless it is declared headerless (``header: false`` in YAML, ``--no_header`` on the command
line): then it has exactly two columns, source and reference. Nothing is guessed. Files are read by :func:`llmdiet.data.read_parallel_file`, which validates
every row and names the file, line and field of any problem.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmdiet.config import ConfigError, load_yaml
from llmdiet.constants import REFERENCE_PREFIX
from llmdiet.data import (
    LOCAL_FORMATS,
    DataError,
    ParallelRow,
    SkipReport,
    read_hub_dataset,
    read_parallel_file,
    take_rows,
)

EVAL_SETS_ENV = "LLMDIET_EVAL_SETS"
YAML_SUFFIXES = (".yaml", ".yml")
_TOP_KEYS = {
    "name",
    "version",
    "description",
    "direction",
    "prefix",
    "demo",
    "source",
    "columns",
    "header",
    "rows",
    "notes",
    "role",
}
# a dev set serves selection (checkpoints, alphas, methods); a test set the verdict; a train set replay (distill)
ROLES = ("test", "dev", "train")
_SOURCE_KEYS = {"file", "hub", "revision", "split", "config"}
_COLUMN_KEYS = {"source", "reference"}


def _shipped_sets() -> Path:
    """The named sets: the checkout's top-level ``eval_sets/`` (editable installs), else the wheel's copy of it,
    the package data ``llmdiet/eval_sets/`` (pyproject.toml maps the folder to that package)."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent / "eval_sets"
    return (
        checkout
        if (checkout / "README.md").is_file() and (package.parent / "pyproject.toml").is_file()
        else (package / "eval_sets")
    )


SHIPPED_SETS = _shipped_sets()


def eval_sets_dir() -> Path:
    """Where named sets live: ``$LLMDIET_EVAL_SETS`` or the package's own ``eval_sets/``."""
    override = os.environ.get(EVAL_SETS_ENV)
    return Path(override) if override else SHIPPED_SETS


DEMO_DATA_PREFIX = "llmdiet-demo:"  # a set's file among the demo corpus shipped in the package


def _source_file(yaml_path: Path, name: str) -> Path:
    """A set's ``source: file:``: ``llmdiet-demo:NAME`` is the shipped demo corpus file NAME (found from a checkout and
    a wheel alike); any other path is relative to the YAML file."""
    if name.startswith(DEMO_DATA_PREFIX):
        from llmdiet.demo import DEMO_DATA_DIR

        return (DEMO_DATA_DIR / name[len(DEMO_DATA_PREFIX) :]).resolve()
    return (yaml_path.parent / name).resolve()


def known_eval_sets() -> dict[str, Path]:
    """Set name -> YAML file, for every ``*.yaml`` in :func:`eval_sets_dir`."""
    root = eval_sets_dir()
    if not root.is_dir():
        return {}
    return {p.stem: p for p in sorted(root.iterdir()) if p.suffix in YAML_SUFFIXES and p.is_file()}


@dataclass
class EvalSet:
    """One declared eval set: where its rows come from and how to present them to the model."""

    name: str
    version: str
    prefix: str
    source_column: str
    reference_column: str
    file: Path | None = None
    hub: str | None = None
    revision: str | None = None
    split: str = "train"
    config: str | None = None
    start: int = 0
    stop: int | None = None
    direction: str | None = None
    description: str = ""
    demo: bool = False
    notes: str = ""
    declared_in: Path | None = None  # the YAML file, or None for a bare data file
    header: bool = True  # TSV/CSV: False declares a headerless two-column file (source, reference)
    role: str = "test"  # "dev": rows for selection only, never for a verdict

    def source_key(self) -> tuple:
        """What identifies the underlying rows' source (a resolved file, or hub id + split + config)."""
        return data_source_key(file=self.file, hub=self.hub, split=self.split, config=self.config)

    def load(self, skip_bad_rows: bool = False, report: SkipReport | None = None) -> list[ParallelRow]:
        """The set's rows (validated); hub sets need the network or a warm ``datasets`` cache."""
        report = report if report is not None else SkipReport()
        what = f"eval set '{self.name}'"
        if self.file is not None:
            rows = read_parallel_file(
                self.file,
                self.source_column,
                self.reference_column,
                skip_bad_rows=skip_bad_rows,
                report=report,
                header=self.header,
            )
            count = None if self.stop is None else self.stop - self.start
            return take_rows(rows, self.start, count, f"{what} ({self.file})")
        assert self.hub is not None  # a set is a file or a hub dataset (checked when it is declared)
        try:
            return read_hub_dataset(
                self.hub,
                self.source_column,
                self.reference_column,
                split=self.split,
                revision=self.revision,
                config=self.config,
                start=self.start,
                stop=self.stop,
                skip_bad_rows=skip_bad_rows,
                report=report,
            )
        except DataError as err:
            reason = str(err).split(" Offline?")[0].rstrip(". ")
            raise DataError(
                f"{what} needs the hub dataset '{self.hub}' (revision {self.revision or 'latest'}): {reason}. "
                f"Offline? Use the offline sets ({', '.join(offline_set_names()) or 'none found'}) "
                "or pass a local file with --eval_set FILE."
            ) from None

    def fingerprint(self) -> str:
        """Identifies the exact rows: sha256 of a local file's bytes, or hub id@revision."""
        if self.file is not None:
            digest = hashlib.sha256()
            with open(self.file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return "sha256:" + digest.hexdigest()
        return f"{self.hub}@{self.revision or 'unpinned'}"

    def describe(self) -> dict:
        """JSON-ready description stored in results.json and used to check resumed runs."""
        source = (
            {"file": str(self.file)}
            if self.file is not None
            else {"hub": self.hub, "revision": self.revision, "split": self.split, "config": self.config}
        )
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "direction": self.direction,
            "prefix": self.prefix,
            "demo": self.demo,
            "source": source,
            "columns": {"source": self.source_column, "reference": self.reference_column},
            "header": self.header,
            "rows": [self.start, self.stop],
            "declared_in": str(self.declared_in) if self.declared_in else None,
        }


def data_source_key(file=None, hub=None, split="train", config=None) -> tuple:
    return ("file", str(Path(file).resolve())) if file is not None else ("hub", hub, split or "train", config)


def overlapping_sets(source_key: tuple, start: int, stop: int | None, sets: list[EvalSet]) -> list[str]:
    """The sets among ``sets`` that read any of the rows [start, stop) of the same source, as
    ``"NAME (rows A-B)"``; rows are counted as the sets count them (usable rows in file order)."""
    hits = []
    for spec in sets:
        if spec.source_key() != source_key:
            continue
        lo = max(start, spec.start)
        hi = min(float("inf") if stop is None else stop, float("inf") if spec.stop is None else spec.stop)
        if lo < hi:
            end = "end" if hi == float("inf") else int(hi) - 1
            hits.append(f"{spec.name} (rows {lo}-{end})")
    return hits


def named_sets(roles: tuple[str, ...]) -> list[EvalSet]:
    """Every declared set whose role is one of ``roles``."""
    out = []
    for path in known_eval_sets().values():
        try:
            spec = parse_eval_set_yaml(path)
        except ConfigError:
            continue
        if spec.role in roles:
            out.append(spec)
    return out


def named_test_sets() -> list[EvalSet]:
    """Every declared set whose role is test (what no training or dev row may overlap)."""
    return named_sets(("test",))


def offline_set_names() -> list[str]:
    names = []
    for name, path in known_eval_sets().items():
        try:
            if parse_eval_set_yaml(path).file is not None:
                names.append(name)
        except ConfigError:
            continue
    return names


# ----------------------------------------------------------------------------- YAML


def _require(data: dict, key: str, kind: type | tuple, where: str):
    if key not in data or data[key] is None:
        raise ConfigError(f"{where}: missing required key '{key}'")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: '{key}' must be {names}, got {value!r}")
    return value


def _check_keys(data: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(allowed)})")


def _parse_rows(value, where: str) -> tuple[int, int | None]:
    if value is None:
        return 0, None
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and (value[1] is None or isinstance(value[1], int))
    )
    if not ok or value[0] < 0 or (value[1] is not None and value[1] <= value[0]):
        raise ConfigError(
            f"{where}: 'rows' must be [start, stop] with 0 <= start < stop (stop may be null), got {value!r}"
        )
    return value[0], value[1]


def parse_eval_set_yaml(path: str | Path) -> EvalSet:
    """Read and validate one eval-set YAML file (no data is loaded)."""
    path = Path(path)
    data = load_yaml(path)
    where = str(path)
    _check_keys(data, _TOP_KEYS, where)
    name = data.get("name", path.stem)
    if name != path.stem:
        raise ConfigError(f"{where}: 'name' is '{name}' but the file is named '{path.name}'; they must match")
    version = _require(data, "version", (int, str), where)
    prefix = _require(data, "prefix", str, where)
    source = _require(data, "source", dict, where)
    columns = _require(data, "columns", dict, where)
    _check_keys(source, _SOURCE_KEYS, f"{where}: source")
    _check_keys(columns, _COLUMN_KEYS, f"{where}: columns")
    src_col = _require(columns, "source", str, f"{where}: columns")
    ref_col = _require(columns, "reference", str, f"{where}: columns")
    start, stop = _parse_rows(data.get("rows"), where)
    if ("file" in source) == ("hub" in source):
        raise ConfigError(f"{where}: source needs exactly one of 'file' (local path) or 'hub' (dataset id)")
    common = dict(
        name=name,
        version=str(version),
        prefix=prefix,
        source_column=src_col,
        reference_column=ref_col,
        start=start,
        stop=stop,
        direction=data.get("direction"),
        description=str(data.get("description", "")).strip(),
        demo=bool(data.get("demo", False)),
        notes=str(data.get("notes", "")).strip(),
        declared_in=path,
        header=_require(data, "header", bool, where) if "header" in data else True,
        role=str(data.get("role", "test")),
    )
    if common["role"] not in ROLES:
        raise ConfigError(f"{where}: 'role' must be one of {ROLES}, got {common['role']!r}")
    if "file" in source:
        extra = sorted(set(source) - {"file"})
        if extra:
            raise ConfigError(f"{where}: source keys {extra} only apply to hub datasets")
        return EvalSet(file=_source_file(path, _require(source, "file", str, f"{where}: source")), **common)
    return EvalSet(
        hub=_require(source, "hub", str, f"{where}: source"),
        revision=source.get("revision"),
        split=str(source.get("split", "train")),
        config=source.get("config"),
        **common,
    )


# ----------------------------------------------------------------------------- resolving --eval_set


def looks_like_path(value: str) -> bool:
    suffix = Path(value).suffix.lower()
    return "/" in value or os.sep in value or suffix in LOCAL_FORMATS or suffix in YAML_SUFFIXES or Path(value).exists()


def _file_set_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "file"


def resolve_eval_set(
    value: str,
    *,
    source_column: str = "source",
    reference_column: str = "reference",
    prefix: str = REFERENCE_PREFIX,
    header: bool = True,
) -> EvalSet:
    """An :class:`EvalSet` for a set name, a YAML file or a local data file (see module docstring)."""
    known = known_eval_sets()
    if value in known and not Path(value).exists():
        return parse_eval_set_yaml(known[value])
    if not looks_like_path(value):
        listing = ", ".join(known) if known else f"none found in {eval_sets_dir()}"
        raise ConfigError(
            f"unknown eval set '{value}' (known: {listing}); or pass a local JSONL/CSV/TSV file with "
            "source/reference columns"
        )
    path = Path(value).expanduser()
    if not path.exists():
        raise DataError(f"{path}: eval set file not found")
    if path.suffix.lower() in YAML_SUFFIXES:
        return parse_eval_set_yaml(path)
    if path.suffix.lower() not in LOCAL_FORMATS:
        raise DataError(
            f"{path}: unknown eval set file type '{path.suffix}' (supported: {sorted(LOCAL_FORMATS)} or .yaml)"
        )
    return EvalSet(
        name=_file_set_name(path),
        version="file",
        prefix=prefix,
        source_column=source_column,
        reference_column=reference_column,
        file=path.resolve(),
        description=f"local file {path}",
        header=header,
    )
