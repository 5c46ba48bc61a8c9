"""Writing and reading eval run reports: ``results.json`` (schema: ``docs/results_schema.md``) and ``summary.md``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmdiet.config import ConfigError

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"
SCHEMA_VERSION = 1
MB = 1_000_000  # sizes are reported in MB = 10^6 bytes (flan-T5-large fp32: 3,133 MB)


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON through a temporary file and a rename, so a killed run never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_results(run_dir: str | Path) -> dict:
    """The ``results.json`` of an eval run directory, with clear errors for anything else."""
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: not an llmdiet eval run directory (no {RESULTS_FILE}); run `llmdiet eval --output_dir {run_dir}` first"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != "llmdiet-eval":
        raise ConfigError(f'{path}: not an llmdiet eval results file (missing "kind": "llmdiet-eval")')
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: results schema version {data.get('schema_version')}, this llmdiet reads {SCHEMA_VERSION}"
        )
    return data


def fmt(value, digits: int = 2) -> str:
    """Numbers for tables: fixed decimals, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def size_mb(size: dict) -> tuple[float | None, str]:
    """Model size in MB and where it came from: the artifact on disk, else the in-memory size."""
    if size.get("disk_bytes"):
        return size["disk_bytes"] / MB, "disk"
    if size.get("memory_bytes"):
        return size["memory_bytes"] / MB, "memory"
    return None, "unknown"


def set_table_rows(results: dict) -> list[list]:
    """One row per eval set: name, sentences, BLEU, chrF, ROUGE-L, sentences/s, p50 batch latency, peak RSS MB."""
    rows = []
    for name, entry in results["sets"].items():
        m, t = entry["metrics"], entry.get("timing") or {}
        rss = t.get("peak_rss_bytes")
        rows.append(
            [
                name,
                entry["num_samples"],
                m["bleu"],
                m["chrf"],
                m["rougeL"],
                t.get("sentences_per_s"),
                t.get("latency_p50_s"),
                rss / MB if rss else None,
            ]
        )
    return rows


SET_TABLE_HEADERS = ["eval set", "sentences", "BLEU", "chrF", "ROUGE-L", "sent/s", "p50 batch s", "peak RSS MB"]


def summary_markdown(results: dict, banner: str | None = None) -> str:
    """The human-readable ``summary.md`` of one run."""
    model, size, prov = results["model"], results["size"], results["provenance"]
    mb, where = size_mb(size)
    lines = [f"# llmdiet eval: {model['name']}", ""]
    if banner:
        lines += [f"> {banner}", ""]
    details = ", ".join(f"{k}={v}" for k, v in model["backend"].items() if k != "backend")
    lines += [
        f"- model: `{model['path']}`",
        f"- backend: {model['backend'].get('backend')}" + (f" ({details})" if details else ""),
        f"- size: {fmt(mb, 1)} MB ({where}), {size.get('parameters') or 0:,} parameters",
        f"- decoding: {', '.join(f'{k}={v}' for k, v in results['decoding'].items())}",
        "",
        markdown_table(SET_TABLE_HEADERS, set_table_rows(results)),
        "",
    ]
    for name, entry in results["sets"].items():
        t = entry.get("timing") or {}
        note = ""
        if t.get("resumed_from"):
            note = f" Resumed: {t['resumed_from']} samples came from an earlier run; timing covers the {t['generated_this_run']} translated in this run."
        about = (entry["eval_set"].get("description") or str(entry["eval_set"]["source"])).rstrip(".")
        degenerate = entry.get("degenerate") or {}
        if degenerate.get("warning"):
            note += (
                f" **WARNING: {100 * degenerate['share']:.0f}% of the hypotheses are degenerate** "
                f"({degenerate['empty']} empty, {degenerate.get('repeated_ngram', 0)} looping, "
                f"{degenerate.get('hit_max_new_tokens') or 0} cut at max_new_tokens): the model may be broken."
            )
        if entry.get("truncated_sources"):
            note += f" {entry['truncated_sources']} sources were truncated to {entry['max_source_length']} tokens."
        lines.append(f"- **{name}**: {about}.{note}")
    first = next(iter(results["sets"].values()))["metrics"]
    lines += [
        "",
        f"BLEU signature: `{first['bleu_signature']}`; chrF signature: `{first['chrf_signature']}`; "
        f"ROUGE-L: {first['rouge_aggregation']}, tokenizer {first['rouge_tokenizer']}.",
        "",
        f"Provenance: {prov['date']}, git {prov['git_sha']}, {prov['hardware'].get('cpu')}, "
        f"torch threads {prov['hardware'].get('torch_threads')}; command: `{prov['command']}`",
        "",
    ]
    return "\n".join(lines)
