"""``STUDY.md``, ``study_results.json`` and the figures, assembled from the finished jobs' results files.

Nothing here measures or re-types a number: every value is read from a job's ``results.json``,
``statistics.json``, ``training_log.json`` or ``bit_sweep.json`` (``collect``), the paired tests are run by
the non-inferiority rule of :mod:`llmdiet.evaluation.noninferiority` on the stored hypotheses (``decisions``,
cached by content); speed comes from the interleaved rounds of the ``speed`` job, and ``STUDY.md`` is rendered from
``study_results.json``. A job that has not finished is left out and listed as missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmdiet.evaluation.reports import MB, size_mb  # MB = 10^6 bytes, as in llmdiet eval
from llmdiet.quantize.registry import METHODS as QUANTIZE_METHODS
from llmdiet.quantize.registry import missing_libraries
from llmdiet.study.plan import TEACHER, VANILLA, StudyPlan
from llmdiet.study.state import status

logger = logging.getLogger(__name__)

RESULTS_FILE = "study_results.json"
REPORT_FILE = "STUDY.md"


# ----------------------------------------------------------------------------- collect


def _read_json(path: Path) -> Any:  # a JSON document, or None when missing or unreadable
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _samples(eval_dir: Path, entry: dict) -> list[dict]:
    lines = (eval_dir / entry["samples_file"]).read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda s: s["index"])


def _set_entry(s: dict, stats: dict) -> dict:
    """One eval set of a model, as the report reads it (scores, intervals, degenerate share, throughput)."""
    m = s["metrics"]
    return {
        "bleu": m["bleu"],
        "chrf": m["chrf"],
        "rougeL": m["rougeL"],
        "num_samples": s["num_samples"],
        "bleu_ci": stats.get("bleu"),
        "chrf_ci": stats.get("chrf"),
        "degenerate": s.get("degenerate"),
        "degenerate_share": (s.get("degenerate") or {}).get("share"),
        "sentences_per_s": (s.get("timing") or {}).get("sentences_per_s"),
        "bleu_signature": m["bleu_signature"],
        "chrf_signature": m["chrf_signature"],
    }


def _latency(timed: dict | None, sentences: int) -> dict | None:
    if not timed:
        return None
    lat = timed["latency_ms"]
    return {
        "ms_per_sentence": lat["median"],
        "min": lat["min"],
        "max": lat["max"],
        "repeats": lat["repeats"],
        "sentences": sentences,
    }


def collect_model(plan: StudyPlan, label: str, speed: dict) -> dict | None:
    """Everything the report says about one model, read from its eval directory (None if not evaluated)."""
    if status(plan, f"eval/{label}") != "done":
        return None
    entry = plan.models[label]
    eval_dir = plan.jobs[f"eval/{label}"].out
    results = _read_json(eval_dir / "results.json")
    stats = _read_json(eval_dir / "statistics.json") or {}
    size, size_source = size_mb(results["size"])
    sets = {name: _set_entry(s, stats.get(name, {})) for name, s in results["sets"].items()}
    first = set_names(plan)["in_domain"][0]
    timing = results["sets"][first].get("timing") or {}
    timed = speed.get(label)
    latency = _latency(timed, plan.config.eval.latency_sentences)
    return {
        "label": label,
        "role": entry.role,
        "base": entry.base,
        "method": entry.method,
        "alpha": entry.alpha,
        "demo": bool(results.get("demo")),  # demo models or demo eval sets
        "distill_method": entry.distill_method,
        "draft": entry.draft,
        "prune": entry.prune,  # pruned models (and their quantizations): variant, flags, recovery
        "base_role": plan.models[entry.base].role if entry.base in plan.models else None,
        "speculative": {s: (e.get("timing") or {}).get("speculative") for s, e in results["sets"].items()}
        if entry.draft
        else None,
        "backend": results["model"]["backend"].get("backend"),
        "size_mb": size,
        "size_source": size_source,
        "parameters": results["size"].get("parameters"),
        "size_counted": results["size"].get("disk_counted"),
        "sets": sets,
        "throughput_sent_s": timed["throughput"]["median"] if timed else None,
        "throughput": timed["throughput"] if timed else None,
        "device": timing.get("device"),
        "peak_rss_mb": (timing.get("peak_rss_bytes") or 0) / MB or None,
        "latency": latency,
        "batch_invariance": _batch_invariance(plan, eval_dir, results, timed),
        "source": {
            "results": str(eval_dir / "results.json"),
            "statistics": str(eval_dir / "statistics.json"),
            "speed": str(plan.jobs["speed"].out / "timings.jsonl") if timed else None,
        },
        "provenance": results["provenance"],
    }


def _batch_invariance(plan: StudyPlan, eval_dir: Path, results: dict, timed: dict | None) -> dict | None:
    """The speed job's batch-1 outputs against the batched eval's outputs of the same rows (and their BLEU)."""
    from llmdiet.evaluation.metrics import bleu as corpus_bleu

    first = set_names(plan)["in_domain"][0]
    if not timed or not timed.get("hypotheses_batch1") or first not in results["sets"]:
        return None
    one = timed["hypotheses_batch1"]
    batched = _samples(eval_dir, results["sets"][first])[: len(one)]
    if len(batched) < len(one):
        return None
    refs = [s["reference"] for s in batched]
    many = [s["hypothesis"] for s in batched]
    return {
        "rows": len(one),
        "identical": sum(a == b for a, b in zip(one, many)),
        "bleu_batch1": corpus_bleu(one, refs)[0],
        "bleu_batched": corpus_bleu(many, refs)[0],
        "batch_size": plan.config.eval.batch_size,
    }


def training_curves(plan: StudyPlan, label: str) -> dict | None:
    if f"train/{label}" not in plan.jobs or status(plan, f"train/{label}") != "done":
        return None
    log = _read_json(plan.jobs[f"train/{label}"].out / "training_log.json") or {}
    history = log.get("log_history", [])
    curve = {k: [(h["step"], h[k]) for h in history if k in h and "eval_loss" not in h] for k in ("loss", "ce", "kd")}
    evals = [(h["step"], h.get("eval_loss"), h.get("eval_bleu")) for h in history if "eval_loss" in h]
    return {"train": curve, "eval": evals, "global_step": log.get("global_step")}


def bit_points(plan: StudyPlan, label: str) -> list[dict] | None:
    if f"bits/{label}" not in plan.jobs or status(plan, f"bits/{label}") != "done":
        return None
    summary = _read_json(plan.jobs[f"bits/{label}"].out / "bit_sweep.json") or {}
    return [
        {k: p[k] for k in ("method", "bits", "bleu", "chrf", "packed_bytes", "fp32_bytes")}
        for p in summary.get("points", [])
    ]


def set_names(plan: StudyPlan) -> dict:
    """The names the eval jobs file each configured set under (a local file's set is named after the file; a name
    given twice gets -2, as ``llmdiet eval`` does), for the in-domain, out-of-domain and dev entries."""
    from llmdiet.evaluation.eval_sets import resolve_eval_set
    from llmdiet.evaluation.harness import unique_set_names

    ev = plan.config.eval
    names = unique_set_names([resolve_eval_set(s) for s in ev.scored_sets])
    n_in, n_out = len(ev.in_domain), len(ev.out_of_domain)
    return {
        "in_domain": names[:n_in],
        "out_of_domain": names[n_in : n_in + n_out],
        "dev": names[n_in + n_out] if ev.dev else None,
    }


def _hypotheses(plan: StudyPlan, labels: list[str], set_name: str) -> tuple[dict, list[str] | None]:
    hyps, refs = {}, None
    for label in labels:
        eval_dir = plan.jobs[f"eval/{label}"].out
        results = _read_json(eval_dir / "results.json")
        if set_name not in results["sets"]:
            continue
        samples = _samples(eval_dir, results["sets"][set_name])
        hyps[label] = [s["hypothesis"] for s in samples]
        refs = [s["reference"] for s in samples]
    return hyps, refs


def decisions(plan: StudyPlan, labels: list[str]) -> dict:
    """The non-inferiority verdict of every compressed model against the teacher under the rule (decision sets:
    every declared set, in-domain and out-of-domain; only the in-domain ones with verdict.require_out_of_domain
    false) and under the other rule beside it (``teacher_other_rule``), each out-of-domain set on its own for the
    report, and every trained student against the vanilla student (margin 0: better, worse or unclear); cached in
    ``report/decisions.json`` by content."""
    from llmdiet.evaluation.noninferiority import noninferiority
    from llmdiet.fingerprint import digest

    cfg, v = plan.config, plan.config.verdict
    cache_path = cfg.root / "report" / "decisions.json"
    cache = _read_json(cache_path) or {}
    names = set_names(plan)
    texts = {s: _hypotheses(plan, labels, s) for s in names["in_domain"] + names["out_of_domain"]}

    def run(baseline: str, candidates: list[str], sets: list[str], margins: dict) -> dict:
        refs = {s: texts[s][1] for s in sets if texts[s][1] is not None and baseline in texts[s][0]}
        args: dict[str, Any] = {
            "baseline": {s: texts[s][0][baseline] for s in refs},
            "candidates": {c: {s: texts[s][0][c] for s in refs if c in texts[s][0]} for c in candidates},
            "references": refs,
            "margins": margins,
            "alpha": v.alpha,
            "n_resamples": v.n_resamples,
            "seed": cfg.statistics.seed,
        }
        key = digest(args)
        if key not in cache:
            logger.info("non-inferiority: %d models against %s on %s", len(candidates), baseline, ", ".join(refs))
            cache[key] = noninferiority(**args)
        return cache[key]

    # speculative rows run the teacher itself: not candidates (they would widen the Holm family of the others)
    compressed = [label for label in labels if label != TEACHER and plan.models[label].role != "speculative"]
    every_set = names["in_domain"] + names["out_of_domain"]
    out: dict = {"teacher": {}, "teacher_other_rule": {}, "out_of_domain": {}, "vanilla": {}}
    if TEACHER in labels and compressed:
        # the rule (every declared set by default, or in-domain only) and, beside it, the other one
        rule_sets, other_sets = (every_set, names["in_domain"])[:: 1 if v.require_out_of_domain else -1]
        out["teacher"] = run(TEACHER, compressed, rule_sets, v.margin)
        if names["out_of_domain"]:
            out["teacher_other_rule"] = run(TEACHER, compressed, other_sets, v.margin)
        for s in names["out_of_domain"]:
            out["out_of_domain"][s] = run(TEACHER, compressed, [s], v.margin)
    trained = [label for label in labels if plan.models[label].role == "student"]
    if VANILLA in labels and trained:
        for s in names["in_domain"] + names["out_of_domain"]:
            out["vanilla"][s] = run(VANILLA, trained, [s], {"bleu": 0.0})
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache))
    return out


def _speed(plan: StudyPlan) -> dict:
    from llmdiet.study.speed import TIMINGS_FILE, read_timings, summarise

    if status(plan, "speed") != "done":
        return {}
    return summarise(read_timings(plan.jobs["speed"].out / TIMINGS_FILE))


def collect(plan: StudyPlan) -> dict:
    """The whole study as one JSON-ready dict (written to ``study_results.json``)."""
    from llmdiet.study.speed import speed_ratio

    speed = _speed(plan)
    models = {label: m for label in plan.models if (m := collect_model(plan, label, speed))}
    teacher = models.get(TEACHER)
    for m in models.values():
        if teacher and m["size_mb"] and teacher["size_mb"]:
            m["size_x"] = teacher["size_mb"] / m["size_mb"]
        if teacher and m["throughput"] and teacher["throughput"]:
            r = speed_ratio(m["throughput"], teacher["throughput"], higher_is_faster=True)
            m["throughput_x"], m["throughput_verdict"] = r["x"], r["verdict"]
        if teacher and m["latency"] and teacher["latency"]:
            mine, theirs = m["latency"], teacher["latency"]
            r = speed_ratio(
                {"median": mine["ms_per_sentence"], "min": mine["min"], "max": mine["max"]},
                {"median": theirs["ms_per_sentence"], "min": theirs["min"], "max": theirs["max"]},
                higher_is_faster=False,
            )
            m["latency_x"], m["latency_verdict"] = r["x"], r["verdict"]
    cfg = plan.config
    missing = [name for name in plan.jobs if status(plan, name) != "done"]
    return {
        "study": {
            "config": cfg.path,
            "study_dir": str(cfg.root),
            "teacher": cfg.teacher,
            "student": cfg.student,
            "alphas": cfg.alphas,
            "methods": cfg.methods,
            "quantize": cfg.quantize.methods,
            "quantize_left_out": [m for m in cfg.quantize.methods if missing_libraries(QUANTIZE_METHODS[m])],
            "in_domain": set_names(plan)["in_domain"],
            "out_of_domain": set_names(plan)["out_of_domain"],
            "dev": set_names(plan)["dev"],
            "set_entries": {"in_domain": cfg.eval.in_domain, "out_of_domain": cfg.eval.out_of_domain},
            "demo": cfg.demo or any(m["demo"] for m in models.values()),
            "statistics": vars(cfg.statistics),
            "eval": vars(cfg.eval),
            "verdict": vars(cfg.verdict),
        },
        "models": models,
        "decisions": decisions(plan, list(models)),
        "training": {label: c for label in plan.models if (c := training_curves(plan, label))},
        "bits": {label: p for label in plan.models if (p := bit_points(plan, label))},
        "jobs": {name: status(plan, name) for name in plan.jobs},
        "missing": missing,
        "fingerprints": plan.fingerprints,
    }


# ----------------------------------------------------------------------------- write


def write_report(plan: StudyPlan) -> Path:
    """Collect, write ``study_results.json``, the figures and ``STUDY.md``; returns the STUDY.md path."""
    from llmdiet.study.figures import write_figures
    from llmdiet.study.markdown import render

    root = plan.config.root
    root.mkdir(parents=True, exist_ok=True)
    data = collect(plan)
    (root / RESULTS_FILE).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    figures = write_figures(data, root / "figures")
    (root / REPORT_FILE).write_text(render(data, [f.relative_to(root) for f in figures]), encoding="utf-8")
    return root / REPORT_FILE
