"""Parallel data: read, validate, split and tokenise source/target pairs.

Two sources of rows:
  * a Hugging Face hub dataset (the study's default,
    ``Nicolas-BZRD/Parallel_Global_Voices_English_French``) through ``datasets.load_dataset``;
  * local files (JSONL, JSON, TSV, CSV, Parquet) through :func:`read_parallel_file`.

TSV/CSV files have a header row unless the caller declares them headerless (``header=False``,
the CLIs' ``--no_header``); a header that lacks the requested columns is an error, never data.
CSV is parsed by the csv module (quoted fields with commas, quotes and newlines).
Every row is checked: a missing file or column, a TSV/CSV record with the wrong number of
fields, invalid UTF-8 and an empty source/target raise :class:`DataError` naming
the file, the line/row and the field. With ``skip_bad_rows=True`` bad rows are
skipped instead and counted in a :class:`SkipReport` that callers log. Never silent.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """A user-facing data problem; the message names the file, row and field."""


@dataclass
class SkipReport:
    """Rows that were skipped because ``skip_bad_rows`` was set, by reason."""

    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, message: str, reason: str) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def merge(self, other: SkipReport) -> None:
        self.reasons.update(other.reasons)
        self.examples.extend(other.examples[: max(0, 5 - len(self.examples))])

    def log(self, what: str) -> None:
        if self.total:
            logger.warning(
                "%s: skipped %d bad rows %s, e.g. %s", what, self.total, dict(self.reasons), self.examples[:3]
            )


@dataclass
class ParallelRow:
    source: str
    target: str
    origin: str  # "file:line" or "dataset[split]:row", for error messages and samples


# ----------------------------------------------------------------------------- local files


def _check_row(source, target, origin: str, fields: tuple[str, str], report: SkipReport | None, skip: bool):
    """Return a ParallelRow or None (skipped); raise DataError when not skipping."""
    for value, name in ((source, fields[0]), (target, fields[1])):
        problem = None
        if value is None:
            problem, reason = f"{origin}: field '{name}' is missing or null", "missing"
        elif not isinstance(value, str):
            problem, reason = f"{origin}: field '{name}' is not text (got {type(value).__name__})", "not_text"
        elif not value.strip():
            problem, reason = f"{origin}: field '{name}' is empty or whitespace-only", "empty"
        if problem:
            if skip and report is not None:
                report.add(problem, reason)
                return None
            raise DataError(problem + " (pass --skip_bad_rows to skip and count such rows)")
    return ParallelRow(source.strip(), target.strip(), origin)


def _decoded_lines(path: Path, skip: bool, report: SkipReport) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) and name the line of any invalid UTF-8."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                msg = f"{path}:{lineno}: invalid UTF-8 at byte {err.start} of the line"
                if skip:
                    report.add(msg, "invalid_utf8")
                    continue
                raise DataError(msg + " (pass --skip_bad_rows to skip and count such rows)") from None
            if lineno == 1:
                text = text.lstrip("\ufeff")
            yield lineno, text.rstrip("\r\n")


def _read_jsonl(path, src_col, tgt_col, skip, report):
    for lineno, line in _decoded_lines(path, skip, report):
        if not line.strip():
            continue
        origin = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if skip:
                report.add(f"{origin}: not valid JSON ({err.msg})", "bad_json")
                continue
            raise DataError(f"{origin}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{origin}: expected a JSON object per line, got {type(obj).__name__}")
        obj = _flatten_translation(obj)
        for col in (src_col, tgt_col):
            if col not in obj:
                raise DataError(f"{origin}: no field '{col}' (fields present: {sorted(obj)}); set the column names")
        yield obj[src_col], obj[tgt_col], origin


def _records(path: Path, lines: list[tuple[int, str]], delimiter: str) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, fields)`` per record, parsed by the csv module.

    CSV follows RFC 4180 (quoted fields may hold delimiters, quotes and newlines); TSV has no quoting:
    a tab always separates fields and a newline always ends the record.
    """
    texts = (text + "\n" for _, text in lines)
    if delimiter == "\t":
        reader = csv.reader(texts, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(texts, delimiter=",", strict=True)
    consumed = 0
    while True:
        first = lines[consumed][0] if consumed < len(lines) else len(lines)
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            at = lines[min(reader.line_num, len(lines)) - 1][0]
            raise DataError(
                f"{path}:{first}: malformed CSV record (lines {first}-{at}): {err}; "
                "quote fields that hold commas, quotes or newlines"
            ) from None
        consumed = reader.line_num
        yield first, lines[consumed - 1][0], fields


def _read_delimited(path, src_col, tgt_col, skip, report, delimiter, header=True):
    kind = "TSV" if delimiter == "\t" else "CSV"
    records = _records(path, list(_decoded_lines(path, skip, report)), delimiter)
    if header:
        first = next(records, None)
        if first is None:
            return
        names = [name.strip() for name in first[2]]
        missing = [c for c in (src_col, tgt_col) if c not in names]
        if missing:
            raise DataError(
                f"{path}:1: the header row has columns {names}, not the requested {missing} "
                f"(source column '{src_col}', target column '{tgt_col}'); set the column names to ones in the header, "
                f"or, if this {kind} has no header row, say so with --no_header (two columns: source, reference)"
            )
        width, src_i, tgt_i = len(names), names.index(src_col), names.index(tgt_col)
    else:  # declared headerless: exactly two columns, source then reference
        width, src_i, tgt_i = 2, 0, 1
    for first_line, last_line, fields in records:
        if not fields or (
            len(fields) == 1 and not fields[0].strip()
        ):  # a blank line is no row; "  \t  " is a row of empty fields
            continue
        origin = f"{path}:{first_line}" if first_line == last_line else f"{path}:{first_line}-{last_line}"
        if len(fields) != width:
            msg = f"{origin}: expected {width} {kind} fields, found {len(fields)}"
            if skip:
                report.add(msg, "wrong_field_count")
                continue
            raise DataError(msg + " (pass --skip_bad_rows to skip and count such rows)")
        yield fields[src_i], fields[tgt_i], origin


def _read_parquet(path, src_col, tgt_col, skip, report):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read as Parquet ({err})") from None
    columns = table.column_names
    if "translation" in columns and (src_col not in columns or tgt_col not in columns):
        rows = [_flatten_translation({"translation": t}) for t in table.column("translation").to_pylist()]
    else:
        missing = [c for c in (src_col, tgt_col) if c not in columns]
        if missing:
            raise DataError(f"{path}: no column(s) {missing} (columns: {columns}); set the column names")
        rows = table.select([src_col, tgt_col]).to_pylist()
    for i, row in enumerate(rows):
        yield row.get(src_col), row.get(tgt_col), f"{path}[row {i}]"


def _flatten_translation(obj: dict) -> dict:
    """Accept the hub's ``{"translation": {"en": ..., "fr": ...}}`` layout as well as flat rows."""
    if isinstance(obj.get("translation"), dict):
        return {**obj["translation"], **{k: v for k, v in obj.items() if k != "translation"}}
    return obj


def read_parallel_file(
    path: str | Path,
    source_column: str = "source",
    target_column: str = "reference",
    *,
    skip_bad_rows: bool = False,
    report: SkipReport | None = None,
    header: bool = True,
) -> list[ParallelRow]:
    """Read a local parallel file, validating every row (see module docstring).

    TSV and CSV files have a header row naming their columns unless ``header=False`` says the file is
    headerless (then it must have exactly two columns: source, reference). Nothing is guessed: a header
    row that lacks the requested columns is an error, never data.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a JSONL/JSON/TSV/CSV/Parquet file")
    fmt = LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown extension '{path.suffix}' (supported: {sorted(LOCAL_FORMATS)})")
    report = report if report is not None else SkipReport()
    reader: Any = {
        "jsonl": _read_jsonl,
        "tsv": functools.partial(_read_delimited, delimiter="\t", header=header),
        "csv": functools.partial(_read_delimited, delimiter=",", header=header),
        "parquet": _read_parquet,
    }[fmt]
    fields = (source_column, target_column)
    rows = []
    for source, target, origin in reader(path, source_column, target_column, skip_bad_rows, report):
        row = _check_row(source, target, origin, fields, report, skip_bad_rows)
        if row is not None:
            rows.append(row)
    if not rows:
        header_only = fmt in ("tsv", "csv") and header and _has_one_line(path)
        empty = " (a header row and no data rows)" if header_only else " (file is empty)"
        raise DataError(
            f"{path}: no usable rows"
            + (f" ({report.total} skipped: {dict(report.reasons)})" if report.total else empty)
        )
    return rows


def _has_one_line(path: Path) -> bool:
    return len([line for line in path.read_bytes().splitlines() if line.strip()]) == 1


# ----------------------------------------------------------------------------- hub datasets


def read_hub_dataset(
    name: str,
    source_column: str,
    target_column: str,
    *,
    split: str = "train",
    revision: str | None = None,
    config: str | None = None,
    start: int = 0,
    stop: int | None = None,
    skip_bad_rows: bool = False,
    report: SkipReport | None = None,
) -> list[ParallelRow]:
    """Rows ``[start, stop)`` of a hub dataset split, validated like local files."""
    import datasets

    report = report if report is not None else SkipReport()
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as err:
        raise DataError(
            f"cannot load dataset '{name}' (split '{split}'): {type(err).__name__}: {err}. "
            "Offline? Pass local files with --data_files, or use --preset demo."
        ) from None
    n = len(ds)
    stop = n if stop is None else stop
    if stop > n:
        raise DataError(f"dataset '{name}' split '{split}' has {n} rows; rows [{start}, {stop}) were asked for")
    columns = ds.column_names
    nested = "translation" in columns and (source_column not in columns or target_column not in columns)
    if not nested:
        missing = [c for c in (source_column, target_column) if c not in columns]
        if missing:
            raise DataError(f"dataset '{name}': no column(s) {missing} (columns: {columns}); set the column names")
    rows = []
    for i, item in enumerate(ds.select(range(start, stop)), start=start):
        item = _flatten_translation(item) if nested else item
        row = _check_row(
            item.get(source_column),
            item.get(target_column),
            f"{name}[{split}]:row {i}",
            (source_column, target_column),
            report,
            skip_bad_rows,
        )
        if row is not None:
            rows.append(row)
    return rows


def take_rows(rows: list[ParallelRow], start: int, count: int | None, what: str) -> list[ParallelRow]:
    """Rows ``[start, start+count)``, with a clear error when there are not enough."""
    stop = len(rows) if count is None else start + count
    if stop > len(rows) or start > len(rows):
        raise DataError(f"{what}: asked for rows [{start}, {stop}) but only {len(rows)} usable rows exist")
    return rows[start:stop]


# ----------------------------------------------------------------------------- tokenisation


@dataclass
class TruncationStats:
    sources: int = 0
    targets: int = 0
    total: int = 0

    def as_dict(self) -> dict:
        return {"truncated_sources": self.sources, "truncated_targets": self.targets, "examples": self.total}


def tokenize_rows(rows: list[ParallelRow], tokenizer, prefix: str, max_source_length: int, max_target_length: int):
    """Tokenise rows into a ``datasets.Dataset`` of input_ids/attention_mask/labels.

    Returns ``(dataset, TruncationStats)``; truncation is counted, never silent.
    """
    import datasets

    sources = [prefix + r.source for r in rows]
    targets = [r.target for r in rows]
    full_src = tokenizer(sources, truncation=False)["input_ids"]
    full_tgt = tokenizer(text_target=targets, truncation=False)["input_ids"]
    stats = TruncationStats(
        sources=sum(len(x) > max_source_length for x in full_src),
        targets=sum(len(x) > max_target_length for x in full_tgt),
        total=len(rows),
    )
    enc = tokenizer(sources, max_length=max_source_length, truncation=True)
    enc["labels"] = tokenizer(text_target=targets, max_length=max_target_length, truncation=True)["input_ids"]
    if stats.sources or stats.targets:
        logger.warning(
            "truncated %d/%d sources to %d tokens and %d/%d targets to %d tokens",
            stats.sources,
            stats.total,
            max_source_length,
            stats.targets,
            stats.total,
            max_target_length,
        )
    return datasets.Dataset.from_dict(dict(enc)), stats
