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

from llmdiet.engines import GenerationSettings
from llmdiet.data import DataError, ParallelRow

logger = logging.getLogger(__name__)

MODES = ("replace", "mix")


def read_pseudo_labels(path: Path, rows: list[ParallelRow]) -> dict[int, str]:
    """Finished pseudo-labels by row index; a truncated last line (killed mid-write) is dropped."""
    done: dict[int, str] = {}
    if not path.exists():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):
                break  # partial final line from an interrupted run
            raise DataError(f"{path}:{lineno}: not valid JSON; delete the file to regenerate") from None
        i = item.get("index")
        if not isinstance(i, int) or not 0 <= i < len(rows) or item.get("source") != rows[i].source:
            raise DataError(f"{path}:{lineno}: does not match the training rows (other data?); use another file")
        done[i] = item["target"]
    return done


def generate_pseudo_labels(teacher_path: str, rows: list[ParallelRow], prefix: str, out_file: str | Path,
                           num_beams: int = 4, max_new_tokens: int = 256, batch_size: int = 32,
                           device: str = "cpu", dtype: str = "float32") -> list[str]:
    """Teacher translations of ``rows`` (resuming from ``out_file``), in row order."""
    from llmdiet.engines import load_backend
    from llmdiet.evaluation.generation import generate_all

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    done = read_pseudo_labels(out_file, rows)
    if len(done) < len(rows):
        todo = [i for i in range(len(rows)) if i not in done]
        logger.info("sequence-level KD: the teacher translates %d sources (%d already in %s)", len(todo), len(done), out_file)
        backend = load_backend("torch-bf16" if dtype == "bfloat16" else "torch-fp32", teacher_path, device=device)
        if done:  # drop a partial last line before appending
            valid = [ln for ln in out_file.read_text(encoding="utf-8").splitlines() if _is_json(ln)]
            out_file.write_text("".join(ln + "\n" for ln in valid), encoding="utf-8")
        with out_file.open("a", encoding="utf-8") as f:
            def write(batch_indices, translations):
                for j, t in zip(batch_indices, translations):
                    i = todo[j]
                    done[i] = t.hypothesis
                    f.write(json.dumps({"index": i, "source": rows[i].source, "target": t.hypothesis},
                                       ensure_ascii=False) + "\n")
                f.flush()

            generate_all(backend, [prefix + rows[i].source for i in todo],
                         GenerationSettings(max_new_tokens=max_new_tokens, num_beams=num_beams), batch_size,
                         warmup_batches=0, on_batch=write)
    empty = [i for i, t in done.items() if not t.strip()]
    if empty:
        logger.warning("sequence-level KD: %d empty teacher translations fall back to the reference", len(empty))
    return [done[i] if done[i].strip() else rows[i].target for i in range(len(rows))]


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def apply_pseudo_labels(rows: list[ParallelRow], targets: list[str], mode: str) -> list[ParallelRow]:
    """``replace``: pseudo-targets only; ``mix``: references followed by pseudo-targets."""
    if mode not in MODES:
        raise ValueError(f"unknown sequence-level KD mode '{mode}' (use one of {MODES})")
    pseudo = [ParallelRow(r.source, t, r.origin + " (teacher)") for r, t in zip(rows, targets)]
    return pseudo if mode == "replace" else rows + pseudo
