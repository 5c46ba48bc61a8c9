"""Content overlap between training data and held-out sets: the same sentence, not the same row number.

Two sets leak into each other when a text of one (a source or a reference, in either direction) occurs in the
other after normalisation (Unicode NFC, whitespace collapsed, ends stripped). Row ranges are not enough: two files
or two directions of one file can hold the same sentence at different rows (a French->English test reference is an
English training source of English->French; a Korean->English training target is an English test source).

Callers: ``llmdiet distill`` (training, replay and dev rows against every declared test set, dev rows against the
test sets too) and ``llmdiet study`` (every student's data and the eval.dev set against the study's test sets).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from llmdiet.data import ParallelRow

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, every whitespace run as one space, ends stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def texts_of(rows: Iterable[ParallelRow]) -> set[str]:
    """The normalised sources and targets of ``rows`` (one pool: a sentence leaks whichever side it is on)."""
    return {normalize_text(t) for row in rows for t in (row.source, row.target)}


@dataclass
class Overlap:
    """``rows`` of the ``what`` rows contain a text of the held-out set ``held_out``."""

    what: str
    held_out: str
    rows: list[int]  # indices into the checked rows
    example: str

    def describe(self, total: int) -> str:
        return (
            f"{len(self.rows)}/{total} {self.what} rows share a sentence with {self.held_out} (e.g. {self.example!r})"
        )


def find_overlaps(rows: list[ParallelRow], what: str, held_out: dict[str, set[str]]) -> list[Overlap]:
    """For each held-out set (name -> :func:`texts_of`), the rows of ``rows`` whose source or target is one of its
    texts."""
    found = []
    for name, texts in held_out.items():
        hits = [
            (i, text)
            for i, row in enumerate(rows)
            for text in (normalize_text(row.source), normalize_text(row.target))
            if text in texts
        ]
        if hits:
            found.append(Overlap(what, name, sorted({i for i, _ in hits}), hits[0][1]))
    return found


def held_out_texts(sets: list, skip: frozenset[str] | set[str] = frozenset()) -> dict[str, set[str]]:
    """name -> normalised texts of each :class:`~llmdiet.evaluation.eval_sets.EvalSet` in ``sets`` (names in
    ``skip`` left out; sets listed twice read once)."""
    out: dict[str, set[str]] = {}
    for spec in sets:
        if spec.name in skip or spec.name in out:
            continue
        out[spec.name] = texts_of(spec.load())
    return out
