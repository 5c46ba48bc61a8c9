"""Calibration sources for the methods that calibrate activations (``onnx-static-int8``, ``quanto-int8``).

Calibration uses *training* sources, never eval rows: a local parallel file (any format
``llmdiet.data.read_parallel_file`` reads), or rows of a hub dataset. Only the source side is
used; the task prefix is prepended here. Zero usable rows is an error, never a silent no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llmdiet.data import DataError, SkipReport, read_hub_dataset, read_parallel_file

logger = logging.getLogger(__name__)


@dataclass
class CalibrationSpec:
    file: str | None = None  # local file; takes precedence over ``dataset``
    dataset: str | None = None  # hub dataset id
    dataset_split: str = "train"
    source_column: str = "en"
    target_column: str | None = None  # only read to validate rows; defaults to the source column
    prefix: str = ""
    start: int = 0
    count: int = 128
    skip_bad_rows: bool = False

    def describe(self) -> dict:
        return {
            "origin": self.file or self.dataset,
            "split": None if self.file else self.dataset_split,
            "source_column": self.source_column,
            "prefix": self.prefix,
            "rows": [self.start, self.start + self.count],
        }


def load_calibration_sources(spec: CalibrationSpec) -> list[str]:
    """Prefixed calibration sources, rows ``[start, start + count)``; DataError when none are usable.

    Fewer usable rows than ``count`` is allowed (logged); zero is an error.
    """
    if spec.count < 1:
        raise DataError(f"calibration set is empty: --max_calibration_samples must be >= 1 (got {spec.count})")
    target = spec.target_column or spec.source_column
    report = SkipReport()
    if spec.file:
        where = spec.file
        try:
            rows = read_parallel_file(
                spec.file, spec.source_column, target, skip_bad_rows=spec.skip_bad_rows, report=report
            )
        except DataError as err:
            if "no usable rows" in str(err):
                raise DataError(f"calibration set: {err}; zero usable rows to calibrate on") from None
            raise
        rows = rows[spec.start : spec.start + spec.count]
    elif spec.dataset:
        where = f"{spec.dataset}[{spec.dataset_split}]"
        try:
            rows = read_hub_dataset(
                spec.dataset,
                spec.source_column,
                target,
                split=spec.dataset_split,
                start=spec.start,
                stop=spec.start + spec.count,
                skip_bad_rows=spec.skip_bad_rows,
                report=report,
            )
        except DataError as err:
            raise DataError(f"calibration set: {err} (for llmdiet quantize: --calibration_file FILE)") from None
    else:
        raise DataError("no calibration data: pass --calibration_file or --calibration_dataset")
    report.log(f"calibration set {where}")
    if not rows:
        raise DataError(
            f"calibration set {where}: zero usable rows in rows [{spec.start}, {spec.start + spec.count})"
            + (f" ({report.total} skipped: {dict(report.reasons)})" if report.total else "")
        )
    if len(rows) < spec.count:
        logger.warning("calibration set %s: %d usable rows (asked for %d)", where, len(rows), spec.count)
    return [spec.prefix + row.source for row in rows]
