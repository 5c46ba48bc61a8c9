"""``STUDY.md``, ``study_results.json`` and the figures, assembled from the finished jobs' results files.

Nothing here measures or re-types a number: every value is read from a job's ``results.json``,
``statistics.json``, ``training_log.json`` or ``bit_sweep.json`` (``collect``), the paired tests are run by
sacreBLEU on the stored hypotheses (``paired_tests``, cached by content), and ``STUDY.md`` is rendered from
``study_results.json``. A job that has not finished is left out and listed as missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llmdiet.evaluation.reports import MB, size_mb  # MB = 10^6 bytes, as in llmdiet eval
from llmdiet.study.jobs import TEACHER, VANILLA, StudyPlan, status

logger = logging.getLogger(__name__)

RESULTS_FILE = "study_results.json"
REPORT_FILE = "STUDY.md"


# ----------------------------------------------------------------------------- collect


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _samples(eval_dir: Path, entry: dict) -> list[dict]:
    lines = (eval_dir / entry["samples_file"]).read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda s: s["index"])


def collect_model(plan: StudyPlan, label: str) -> dict | None:
    """Everything the report says about one model, read from its eval directory (None if not evaluated)."""
    if status(plan, f"eval/{label}") != "done":
        return None
    entry = plan.models[label]
    eval_dir = plan.jobs[f"eval/{label}"].out
    results = _read_json(eval_dir / "results.json")
    stats = _read_json(eval_dir / "statistics.json") or {}
    batch1 = _read_json(eval_dir / "batch1" / "results.json")
    size, size_source = size_mb(results["size"])
    sets = {}
    for name, s in results["sets"].items():
        m = s["metrics"]
        sets[name] = {"bleu": m["bleu"], "chrf": m["chrf"], "rougeL": m["rougeL"], "num_samples": s["num_samples"],
                      "bleu_ci": stats.get(name, {}).get("bleu"), "chrf_ci": stats.get(name, {}).get("chrf"),
                      "degenerate_share": (s.get("degenerate") or {}).get("share"),
                      "sentences_per_s": (s.get("timing") or {}).get("sentences_per_s"),
                      "bleu_signature": m["bleu_signature"], "chrf_signature": m["chrf_signature"]}
    first = plan.config.eval.in_domain[0]
    latency = None
    if batch1:
        t = batch1["sets"][first].get("timing") or {}
        if t.get("num_sentences"):
            latency = {"ms_per_sentence": 1000 * t["wall_s"] / t["num_sentences"],
                       "p50_ms": 1000 * t["latency_p50_s"], "p95_ms": 1000 * t["latency_p95_s"],
                       "sentences": t["num_sentences"]}
    timing = (results["sets"][first].get("timing") or {})
    return {
        "label": label, "role": entry.role, "base": entry.base, "method": entry.method, "alpha": entry.alpha,
        "demo": bool(results.get("demo")),  # demo models or demo eval sets
        "distill_method": entry.distill_method, "backend": results["model"]["backend"].get("backend"),
        "size_mb": size, "size_source": size_source, "parameters": results["size"].get("parameters"),
        "sets": sets, "throughput_sent_s": timing.get("sentences_per_s"), "device": timing.get("device"),
        "peak_rss_mb": (timing.get("peak_rss_bytes") or 0) / MB or None, "latency": latency,
        "source": {"results": str(eval_dir / "results.json"), "statistics": str(eval_dir / "statistics.json")},
        "provenance": results["provenance"],
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
    return [{k: p[k] for k in ("method", "bits", "bleu", "chrf", "packed_bytes", "fp32_bytes")}
            for p in summary.get("points", [])]


def paired_tests(plan: StudyPlan, labels: list[str]) -> dict:
    """``{set: {baseline: {system: {metric: {...}}}}}``: every evaluated model against the teacher and the vanilla
    student, by sacreBLEU's paired test on the stored hypotheses; cached in ``report/paired_tests.json`` by content."""
    from llmdiet.evaluation.statistics import paired_significance
    from llmdiet.fingerprint import digest

    st = plan.config.statistics
    cache_path = plan.config.root / "report" / "paired_tests.json"
    cache = _read_json(cache_path) or {}
    out: dict = {}
    for set_name in plan.config.eval.sets:
        hyps, refs = {}, None
        for label in labels:
            eval_dir = plan.jobs[f"eval/{label}"].out
            results = _read_json(eval_dir / "results.json")
            if set_name not in results["sets"]:
                continue
            samples = _samples(eval_dir, results["sets"][set_name])
            hyps[label] = [s["hypothesis"] for s in samples]
            refs = [s["reference"] for s in samples]
        out[set_name] = {}
        for baseline in (TEACHER, VANILLA):
            if baseline not in hyps:
                continue
            systems = [(k, v) for k, v in hyps.items() if k != baseline]
            if not systems:
                continue
            key = digest({"baseline": hyps[baseline], "systems": systems, "refs": refs, "test": st.paired_test,
                          "n": st.n_samples, "seed": st.seed})
            if key not in cache:
                logger.info("paired %s test on %s against %s: %d systems", st.paired_test, set_name, baseline, len(systems))
                cache[key] = paired_significance((baseline, hyps[baseline]), systems, refs, test=st.paired_test,
                                                 n_samples=st.n_samples, seed=st.seed)
            out[set_name][baseline] = cache[key]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache))
    return out


def collect(plan: StudyPlan) -> dict:
    """The whole study as one JSON-ready dict (written to ``study_results.json``)."""
    models = {label: m for label in plan.models if (m := collect_model(plan, label))}
    teacher = models.get(TEACHER)
    for m in models.values():
        if teacher and m["size_mb"] and teacher["size_mb"]:
            m["size_x"] = teacher["size_mb"] / m["size_mb"]
        if teacher and m["throughput_sent_s"] and teacher["throughput_sent_s"]:
            m["throughput_x"] = m["throughput_sent_s"] / teacher["throughput_sent_s"]
        if teacher and m["latency"] and teacher["latency"]:
            m["latency_x"] = teacher["latency"]["ms_per_sentence"] / m["latency"]["ms_per_sentence"]
    cfg = plan.config
    missing = [name for name in plan.jobs if status(plan, name) != "done"]
    return {
        "study": {"config": cfg.path, "study_dir": str(cfg.root), "teacher": cfg.teacher, "student": cfg.student,
                  "alphas": cfg.alphas, "methods": cfg.methods, "quantize": cfg.quantize.methods,
                  "in_domain": cfg.eval.in_domain, "out_of_domain": cfg.eval.out_of_domain,
                  "demo": cfg.demo or any(m["demo"] for m in models.values()),
                  "statistics": vars(cfg.statistics), "eval": vars(cfg.eval)},
        "models": models,
        "paired": paired_tests(plan, list(models)),
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
