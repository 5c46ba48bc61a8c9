"""An eval run directory: what it was made with (``eval_settings.json``, checked before resuming) and the samples
already translated (``<set>/samples.jsonl``, read back with every check a resumed run needs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llmdiet.config import ConfigError
from llmdiet.data import DataError, ParallelRow
from llmdiet.evaluation.eval_sets import EvalSet
from llmdiet.evaluation.reports import RESULTS_FILE
from llmdiet.fingerprint import differences

logger = logging.getLogger("llmdiet.evaluation.harness")

SETTINGS_FILE = "eval_settings.json"
SAMPLES_FILE = "samples.jsonl"


def model_fingerprint(path: str) -> dict | None:
    """Content hashes of a local model's config, generation config, weight and tokenizer files, by part (None for a
    hub id): a model retrained at the same path, or given another forced target language, is another model, and a
    resumed run says which part changed."""
    if not Path(path).is_dir():
        return None
    from llmdiet.fingerprint import model_identity

    return model_identity(path)


def set_settings(spec: EvalSet, max_eval_samples: int | None, skip_bad_rows: bool, num_rows: int) -> dict:
    """What decides a set's samples, beside the run-wide settings."""
    return {
        "version": spec.version,
        "fingerprint": spec.fingerprint(),
        "prefix": spec.prefix,
        "columns": [spec.source_column, spec.reference_column],
        "rows": [spec.start, spec.stop],
        "limit": max_eval_samples,
        "num_rows": num_rows,
        "skip_bad_rows": skip_bad_rows,
    }


def check_run_dir(out: Path, run_settings: dict, sets: dict[str, dict]) -> dict:
    """Refuse ``out`` if it was made with other settings; return the settings to record (nothing written)."""
    path = out / SETTINGS_FILE
    hint = f"use a new --output_dir directory (or delete {out}) to start over"
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); {hint}") from None
        diffs = differences(stored.get("run", {}), run_settings)
        for name, now in sets.items():
            if name in stored.get("sets", {}):
                diffs += differences(stored["sets"][name], now, f"{name}.")
        if diffs:
            raise ConfigError(f"{out} was made with different settings ({'; '.join(diffs)}); {hint}")
        sets = {**stored.get("sets", {}), **sets}
    elif out.is_dir() and any(out.glob(f"*/{SAMPLES_FILE}")):
        raise ConfigError(f"{out} holds samples but no {SETTINGS_FILE}, so they cannot be trusted; {hint}")
    return {"run": run_settings, "sets": sets}


def read_samples(path: Path, rows: list[ParallelRow]) -> dict[int, dict]:
    """Samples already written, by row index; drops a truncated last line; checks they match ``rows``."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        logger.warning(
            "%s: dropping a truncated last line (%d bytes) left by an interrupted run", path, len(data) - complete
        )
        with open(path, "r+b") as f:
            f.truncate(complete)
        data = data[:complete]
    samples: dict[int, dict] = {}
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            sample = json.loads(line)
            index = sample["index"]
            sample["hypothesis"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(
                f"{where}: not a valid sample line ({err}); delete the file or use a new --output_dir"
            ) from None
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise DataError(
                f"{where}: sample index {index!r} is outside this eval set's {len(rows)} rows; use a new --output_dir"
            )
        if index in samples:
            raise DataError(f"{where}: row {index} appears twice; delete the file or use a new --output_dir")
        if sample.get("source") != rows[index].source or sample.get("reference") != rows[index].target:
            raise ConfigError(
                f"{where}: row {index} does not match the eval set's source/reference; "
                "the samples come from other data; use a new --output_dir"
            )
        samples[index] = sample
    return samples


def previous_results(out: Path) -> dict:
    try:
        return json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
