"""The study's speed job: every model timed in ``eval.speed_repeats`` interleaved rounds, in one process.

A single eval run per model measures the machine as much as the model (other jobs, frequency scaling, cache
state minutes apart). Here every round times every model once, round after round (odd rounds in reverse order,
so a drift over the job does not favour the models timed first), and a model is loaded afresh each round:

* batch 1: the first ``eval.latency_sentences`` in-domain rows one at a time (2 warm-up sentences) -> ms per
  sentence and the p50 of the per-sentence latencies;
* batched: the first ``eval.speed_sentences`` in-domain rows at ``eval.batch_size`` (1 warm-up batch) ->
  sentences and tokens per second.

Each finished (round, model) measurement is one line of ``speed/timings.jsonl`` (appended and flushed), so a
killed job resumes at the next measurement. The first round also stores the batch-1 hypotheses: the report
compares them with the batched eval's hypotheses of the same rows (whose outputs depend on batch composition).
:func:`summarise` turns the lines into median and min-max per model; :func:`speed_ratio` calls a ratio a gain
or a loss only when the two spreads do not overlap.
"""

from __future__ import annotations

import gc
import json
import logging
import statistics
from pathlib import Path

logger = logging.getLogger(__name__)

TIMINGS_FILE = "timings.jsonl"


def read_timings(path: Path) -> list[dict]:
    """The complete lines of a timings file (a line cut by a kill is dropped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def round_order(labels: list[str], round_index: int) -> list[str]:
    return list(labels) if round_index % 2 == 0 else list(reversed(labels))


def measure(backend, latency_sources: list[str], batch_sources: list[str], settings, batch_size: int) -> dict:
    from llmdiet.evaluation.generation import generate_all

    one = generate_all(backend, latency_sources, settings, 1, warmup_batches=2, progress=False)
    many = generate_all(backend, batch_sources, settings, batch_size, warmup_batches=1, progress=False)
    return {
        "batch1": {
            "ms_per_sentence": 1000 * one.wall_s / max(one.num_sentences, 1),
            "p50_ms": 1000 * (one.latency_p50_s or 0.0),
            "sentences": one.num_sentences,
        },
        "batched": {
            "sentences_per_s": many.sentences_per_s,
            "tokens_per_s": many.tokens_per_s,
            "sentences": many.num_sentences,
            "batch_size": batch_size,
        },
        "hypotheses_batch1": [t.hypothesis for t in one.translations],
        "device": one.device,
        "torch_threads": one.torch_threads,
    }


def run_speed(plan, job) -> dict:
    """Run (or resume) every (round, model) measurement of the study."""
    from llmdiet.engines import GenerationSettings, detect_backend, load_backend
    from llmdiet.evaluation.eval_sets import resolve_eval_set
    from llmdiet.study.plan import eval_device

    cfg, ev = plan.config, plan.config.eval
    job.out.mkdir(parents=True, exist_ok=True)
    path = job.out / TIMINGS_FILE
    done = {(t["round"], t["model"]) for t in read_timings(path)}
    spec = resolve_eval_set(ev.in_domain[0])
    rows = spec.load()
    sources = [spec.prefix + r.source for r in rows]
    latency_sources, batch_sources = sources[: max(ev.latency_sentences, 1)], sources[: ev.speed_sentences]
    settings = GenerationSettings(ev.max_new_tokens, 0, ev.num_beams, 512)
    labels = list(plan.models)
    with open(path, "a", encoding="utf-8") as out:
        for r in range(ev.speed_repeats):
            for label in round_order(labels, r):
                if (r, label) in done:
                    continue
                model = plan.models[label]
                own = model.role in ("quantized", "pruned")  # they carry their own tokenizer
                options: dict = {"tokenizer_path": cfg.tokenizer} if cfg.tokenizer and not own else {}
                if model.draft is not None:  # the teacher with a student drafting (speculative decoding)
                    options["draft"] = plan.models[model.draft].path
                backend = load_backend(
                    detect_backend(model.path), model.path, device=eval_device(plan, label), **options
                )
                record = {
                    "round": r,
                    "model": label,
                    **measure(backend, latency_sources, batch_sources, settings, ev.batch_size),
                }
                if r:
                    record.pop("hypotheses_batch1")
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                del backend
                gc.collect()
                logger.info(
                    "speed round %d/%d: %s %.1f ms/sentence at batch 1, %.1f sentences/s at batch %d",
                    r + 1,
                    ev.speed_repeats,
                    label,
                    record["batch1"]["ms_per_sentence"],
                    record["batched"]["sentences_per_s"],
                    ev.batch_size,
                )
    return {"measurements": len(read_timings(path))}


def _spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
        "repeats": len(values),
    }


def summarise(timings: list[dict]) -> dict:
    """``{model: {"latency_ms": spread, "throughput": spread, "hypotheses_batch1": [...]}}``."""
    by: dict[str, dict] = {}
    for t in sorted(timings, key=lambda t: t["round"]):
        entry = by.setdefault(t["model"], {"latency_ms": [], "throughput": []})
        entry["latency_ms"].append(t["batch1"]["ms_per_sentence"])
        entry["throughput"].append(t["batched"]["sentences_per_s"])
        if "hypotheses_batch1" in t:
            entry["hypotheses_batch1"] = t["hypotheses_batch1"]
    return {
        label: {
            "latency_ms": _spread(e["latency_ms"]),
            "throughput": _spread(e["throughput"]),
            "hypotheses_batch1": e.get("hypotheses_batch1"),
        }
        for label, e in by.items()
    }


def speed_ratio(model: dict, reference: dict, higher_is_faster: bool) -> dict:
    """Median ratio (> 1 = the model is faster) and the verdict: gain / loss only when the spreads do not overlap."""
    if higher_is_faster:
        ratio = model["median"] / reference["median"]
        gain, loss = model["min"] > reference["max"], model["max"] < reference["min"]
    else:
        ratio = reference["median"] / model["median"]
        gain, loss = model["max"] < reference["min"], model["min"] > reference["max"]
    return {"x": ratio, "verdict": "faster" if gain else "slower" if loss else "within noise"}
