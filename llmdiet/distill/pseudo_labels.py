"""Sequence-level knowledge distillation (Kim & Rush, 2016): train on the teacher's own translations.

The teacher translates the training sources once (beam search by default) through the same
batched generation code as ``llmdiet eval``; every translation is appended to a JSONL file as
it is produced (``{"index", "source", "target"}``), so a killed run resumes where it stopped.
The student then trains on these pseudo-targets instead of (``replace``) or in addition to
(``mix``) the references, with the usual ``alpha`` mix of CE and logit KD on top.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmdiet.data import DataError, ParallelRow
from llmdiet.engines import GenerationSettings

logger = logging.getLogger(__name__)

MODES = ("replace", "mix")


def read_pseudo_labels(path: Path, rows: list[ParallelRow]) -> dict[int, str]:
    """Finished pseudo-labels by row index. Torn lines (a killed write), wherever they are, are dropped,
    logged, and removed from the file so new records never land on a torn line."""
    done: dict[int, str] = {}
    if not path.exists():
        return done
    kept, torn = [], 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            i, source, target = item["index"], item["source"], item["target"]
        except (json.JSONDecodeError, KeyError, TypeError):
            torn += 1
            continue
        if not isinstance(i, int) or not 0 <= i < len(rows) or source != rows[i].source:
            raise DataError(
                f"{path}:{lineno}: does not match the training rows (other data?); "
                "pass --rebuild_caches true or use another --sequence_kd_file"
            )
        done[i] = target
        kept.append(line)
    if torn:
        logger.warning("%s: dropped %d torn line(s) left by an interrupted run", path, torn)
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return done


def pseudo_label_parts(
    teacher_identity: dict, dtype: str, prefix: str, num_beams: int, max_new_tokens: int, rows: list[ParallelRow]
) -> dict:
    """Everything that changes the teacher's translations (the cache key of the JSONL file)."""
    from llmdiet.fingerprint import rows_sha256

    return {
        "teacher": teacher_identity,
        "dtype": dtype,
        "prefix": prefix,
        "num_beams": num_beams,
        "max_new_tokens": max_new_tokens,
        "sources": rows_sha256((r.source, "") for r in rows),
    }


def _check_or_start(out_file: Path, parts: dict, rebuild: bool) -> None:
    """Resume ``out_file`` only if it was written with ``parts`` (its ``.meta.json``); ``rebuild`` starts over."""
    from llmdiet.fingerprint import check_parts

    out_file.parent.mkdir(parents=True, exist_ok=True)
    meta_file = out_file.with_name(out_file.name + ".meta.json")
    if rebuild:
        out_file.unlink(missing_ok=True)
        meta_file.unlink(missing_ok=True)
    if meta_file.exists():
        check_parts(
            json.loads(meta_file.read_text()),
            parts,
            out_file,
            "pass --rebuild_caches true to translate again, or use another --sequence_kd_file",
        )
    elif out_file.exists() and out_file.stat().st_size:
        raise DataError(
            f"{out_file}: teacher translations without {meta_file.name}, so their settings are unknown; "
            "pass --rebuild_caches true or use another --sequence_kd_file"
        )
    else:
        meta_file.write_text(json.dumps(parts, indent=2))


def generate_pseudo_labels(
    teacher_path: str,
    rows: list[ParallelRow],
    prefix: str,
    out_file: str | Path,
    num_beams: int = 4,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str = "float32",
    rebuild: bool = False,
) -> list[str]:
    """Teacher translations of ``rows`` (resuming from ``out_file``), in row order.

    ``out_file`` is keyed by :func:`pseudo_label_parts` (stored in ``<out_file>.meta.json``): another teacher
    (by content), dtype, prefix, beam count, length or other sources stop with the changed parts named;
    ``rebuild`` starts the file over.
    """
    from llmdiet.fingerprint import model_identity
    from llmdiet.locking import file_lock

    out_file = Path(out_file)
    parts = pseudo_label_parts(model_identity(teacher_path), dtype, prefix, num_beams, max_new_tokens, rows)
    # one writer per file: students sharing --sequence_kd_file wait for the first and reuse its translations
    with file_lock(out_file.with_name(f".{out_file.name}.lock"), "teacher translation", wait=True, shown=out_file):
        _check_or_start(out_file, parts, rebuild)
        return _translate_missing(
            teacher_path, rows, prefix, out_file, num_beams, max_new_tokens, batch_size, device, dtype
        )


def _translate_missing(
    teacher_path: str,
    rows: list[ParallelRow],
    prefix: str,
    out_file: Path,
    num_beams: int,
    max_new_tokens: int,
    batch_size: int,
    device: str,
    dtype: str,
) -> list[str]:
    from llmdiet.engines import load_backend
    from llmdiet.evaluation.generation import generate_all

    done = read_pseudo_labels(out_file, rows)
    if len(done) < len(rows):
        todo = [i for i in range(len(rows)) if i not in done]
        logger.info(
            "sequence-level KD: the teacher translates %d sources (%d already in %s)", len(todo), len(done), out_file
        )
        backend = load_backend("torch-bf16" if dtype == "bfloat16" else "torch-fp32", teacher_path, device=device)
        with out_file.open("a", encoding="utf-8") as f:

            def write(batch_indices: Any, translations: Any) -> None:
                for j, t in zip(batch_indices, translations):
                    i = todo[j]
                    done[i] = t.hypothesis
                    f.write(
                        json.dumps({"index": i, "source": rows[i].source, "target": t.hypothesis}, ensure_ascii=False)
                        + "\n"
                    )
                f.flush()

            generate_all(
                backend,
                [prefix + rows[i].source for i in todo],
                GenerationSettings(max_new_tokens=max_new_tokens, num_beams=num_beams),
                batch_size,
                warmup_batches=0,
                on_batch=write,
            )
    empty = [i for i, t in done.items() if not t.strip()]
    if empty:
        logger.warning("sequence-level KD: %d empty teacher translations fall back to the reference", len(empty))
    return [done[i] if done[i].strip() else rows[i].target for i in range(len(rows))]


def apply_pseudo_labels(rows: list[ParallelRow], targets: list[str], mode: str) -> list[ParallelRow]:
    """``replace``: pseudo-targets only; ``mix``: references followed by pseudo-targets."""
    if mode not in MODES:
        raise ValueError(f"unknown sequence-level KD mode '{mode}' (use one of {MODES})")
    pseudo = [ParallelRow(r.source, t, r.origin + " (teacher)") for r, t in zip(rows, targets)]
    return pseudo if mode == "replace" else rows + pseudo
