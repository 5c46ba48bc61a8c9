"""One eval set of a run: translate the rows not yet in ``samples.jsonl`` (in the batches of the original plan, so a
resumed run gives the same outputs), time them, then score the complete file."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from llmdiet.data import ParallelRow
from llmdiet.engines import GenerationSettings, TranslationBackend
from llmdiet.evaluation.eval_sets import EvalSet
from llmdiet.evaluation.generation import generate_all, plan_batches, source_lengths
from llmdiet.evaluation.metrics import corpus_scores, degenerate_outputs
from llmdiet.evaluation.ranks import Ranks, part_files
from llmdiet.evaluation.run_dir import SAMPLES_FILE, read_samples
from llmdiet.languages import direction_languages, language_codes

logger = logging.getLogger("llmdiet.evaluation.harness")


def set_generation_settings(backend, spec: EvalSet, settings: GenerationSettings) -> GenerationSettings:
    """The run's generation settings, with the set's direction as the languages of a multilingual model when
    ``--source_lang`` / ``--target_lang`` are not given (one-direction models take none)."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None or not language_codes(tokenizer):
        return settings
    source, target = direction_languages(spec.direction)
    return dataclasses.replace(
        settings, source_lang=settings.source_lang or source, target_lang=settings.target_lang or target
    )


def _add_speculative_stats(backend, timing: dict) -> None:
    """Speculative decoding's acceptance over the rows this run translated (warm-up batches included)."""
    stats = backend.decoding_stats() if hasattr(backend, "decoding_stats") else None
    if stats is not None:
        timing["speculative"] = stats
        logger.info(
            "speculative decoding: %s of %s draft tokens accepted (%.0f%%), %.2f tokens per verifying forward",
            stats["accepted"],
            stats["proposed"],
            100 * (stats["acceptance_rate"] or 0.0),
            stats["tokens_per_teacher_forward"] or 0.0,
        )


@dataclasses.dataclass
class SetJob:
    """One set's work: its rows and where they go, with the run's decoding settings."""

    backend: TranslationBackend
    spec: EvalSet
    rows: list[ParallelRow]
    set_dir: Path
    settings: GenerationSettings  # with the set's languages
    max_source_length: int
    max_new_tokens: int
    batch_size: int
    warmup_batches: int
    progress: bool
    ranks: Ranks = Ranks()  # under accelerate launch: this process's share of the batches

    @property
    def samples_path(self) -> Path:
        return self.set_dir / SAMPLES_FILE

    def generate(self, sources: list[str], on_batch=None):
        return generate_all(
            self.backend,
            sources,
            self.settings,
            self.batch_size,
            warmup_batches=self.warmup_batches,
            on_batch=on_batch,
            progress=self.progress,
        )


def evaluate_set(job: SetJob, previous_timing: dict | None) -> dict | None:
    """Translate the rows not yet in ``samples.jsonl``, then score the complete file. Under several processes each
    translates every N-th pending batch and rank 0 merges and scores (the others return None)."""
    job.set_dir.mkdir(parents=True, exist_ok=True)
    if job.ranks.main:
        _merge_parts(job)  # rows an interrupted multi-process run translated
    job.ranks.barrier()
    spec, rows, max_len = job.spec, job.rows, job.max_source_length
    done = read_samples(job.samples_path, rows)
    prefixed = [spec.prefix + r.source for r in rows]
    lengths, unit = source_lengths(job.backend, prefixed)
    truncated = sum(n > max_len for n in lengths) if unit == "tokens" else None
    if truncated:
        logger.warning(
            "%s: %d of %d sources are longer than %d tokens and are truncated (--max_source_length)",
            spec.name,
            truncated,
            len(rows),
            max_len,
        )
    plan = plan_batches([min(n, max_len) for n in lengths] if unit == "tokens" else lengths, job.batch_size)
    pending = [batch for batch in plan if any(j not in done for j in batch)]
    todo = sorted(i for batch in pending[job.ranks.rank :: job.ranks.world] for i in batch)  # whole plan batches
    resumed_from = len(done)
    if resumed_from and job.ranks.main:
        logger.info("%s: resuming, %d of %d rows already translated", spec.name, resumed_from, len(rows))
    timing = previous_timing
    if todo:
        timing = _translate(job, prefixed, todo, done)
    elif timing is None and not pending and job.ranks.main:
        # every row was translated by a run killed before it saved its timing: time the set again (outputs are
        # not rewritten), so a resumed run never loses a set's speed
        logger.info(
            "%s: every row was translated by an interrupted run that saved no timing; timing the set again", spec.name
        )
        timing = {
            **job.generate(prefixed).timing_dict(),
            "resumed_from": resumed_from,
            "generated_this_run": 0,
            "covers_all_rows": True,
            "retimed": True,
        }
        _add_speculative_stats(job.backend, timing)
    job.ranks.barrier()
    if not job.ranks.main:
        return None
    _merge_parts(job)
    if timing is not None and job.ranks.world > 1:
        timing = {**timing, "processes": job.ranks.world, "covers": "rank 0's share of the batches"}
    scored = _score(job)
    return {
        "languages": scored["languages"],
        "metrics": scored["metrics"],
        "timing": timing,
        "num_samples": scored["num_samples"],
        "degenerate": scored["degenerate"],
        "truncated_sources": truncated,
        "max_source_length": max_len,
        "samples_file": scored["samples_file"],
    }


def _translate(job: SetJob, prefixed: list[str], todo: list[int], done: dict[int, dict]) -> dict:
    """Translate the rows ``todo`` (whole batches of the plan), appending each finished batch to samples.jsonl."""
    rows = job.rows
    path = job.samples_path if job.ranks.world == 1 else job.ranks.part_file(job.set_dir)
    with open(path, "a", encoding="utf-8") as out:

        def write_batch(indices, translations):
            for local, translation in zip(indices, translations):
                i = todo[local]
                if i in done:  # already on disk from the interrupted run (same batch, same output)
                    continue
                record = {
                    "index": i,
                    "source": rows[i].source,
                    "reference": rows[i].target,
                    "hypothesis": translation.hypothesis,
                    "generated_tokens": translation.generated_tokens,
                    "origin": rows[i].origin,
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                done[i] = record
            out.flush()

        resumed_from = len(done)
        result = job.generate([prefixed[i] for i in todo], on_batch=write_batch)
    timing = {
        **result.timing_dict(),
        "resumed_from": resumed_from,
        "generated_this_run": len(todo),
        "covers_all_rows": resumed_from == 0,
    }
    _add_speculative_stats(job.backend, timing)
    return timing


def _merge_parts(job: SetJob) -> None:
    """Append the per-rank sample files to samples.jsonl (rows not there yet, in row order), then remove them."""
    parts = part_files(job.set_dir)
    if not parts:
        return
    done = read_samples(job.samples_path, job.rows)
    new: dict[int, dict] = {}
    for part in parts:
        new.update({i: s for i, s in read_samples(part, job.rows).items() if i not in done})
    with open(job.samples_path, "a", encoding="utf-8") as out:
        for i in sorted(new):
            out.write(json.dumps(new[i], ensure_ascii=False) + "\n")
    for part in parts:
        part.unlink()


def _score(job: SetJob) -> dict:
    """Metrics of the complete samples.jsonl, in row order, and the share of degenerate outputs."""
    samples = [s for _, s in sorted(read_samples(job.samples_path, job.rows).items())]
    if len(samples) != len(job.rows):
        raise RuntimeError(f"{job.samples_path}: {len(samples)} samples for {len(job.rows)} rows after generation")
    hypotheses = [s["hypothesis"] for s in samples]
    metrics = corpus_scores(hypotheses, [s["reference"] for s in samples])
    degenerate = degenerate_outputs(
        hypotheses,
        generated_tokens=[s.get("generated_tokens") or 0 for s in samples],
        max_new_tokens=job.max_new_tokens,
    )
    if degenerate["warning"]:
        logger.warning(
            "%s: %.0f%% of the hypotheses are empty or repetitive: the model may be broken "
            "(a quantization that overflows?)",
            job.spec.name,
            100 * degenerate["share"],
        )
    return {
        "languages": {"source": job.settings.source_lang, "target": job.settings.target_lang},
        "metrics": metrics,
        "num_samples": len(samples),
        "degenerate": degenerate,
        "samples_file": f"{job.set_dir.name}/{SAMPLES_FILE}",
    }
