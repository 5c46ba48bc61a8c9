"""``STUDY.md``: the verdict, the tables and the figures, rendered from ``study_results.json``'s content.

Every number comes from ``data`` (see :mod:`llmdiet.study.report`); the sentences of the answer are
generated from those numbers and say "not significant" wherever the paired test does.
"""

from __future__ import annotations

from pathlib import Path

from llmdiet.study.jobs import TEACHER, VANILLA

ALPHA = 0.05


def _f(value, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _pair(data: dict, set_name: str, baseline: str, label: str, metric: str = "bleu") -> dict | None:
    return ((data["paired"].get(set_name) or {}).get(baseline) or {}).get(label, {}).get(metric)


def _sig(test: dict | None) -> str:
    if test is None:
        return "not tested"
    if test.get("note"):
        return "identical scores"
    p = test["p_value"]
    return f"p={p:.3f}, " + ("significant" if test["significant"] else "not significant")


def _delta_cell(test: dict | None) -> str:
    if test is None:
        return "–"
    mark = "*" if test["significant"] else ""
    return f"{test['delta']:+.2f} (p={test['p_value']:.3f}){mark}"


def describe(m: dict) -> str:
    if m["role"] == "teacher":
        return "teacher (float)"
    if m["role"] == "vanilla":
        return "student before distillation"
    if m["role"] == "student":
        return f"student, {m['distill_method']}, alpha {m['alpha']:g}"
    return f"{m['base']} quantized with {m['method']}"


def _ci(entry: dict, metric: str) -> str:
    ci = entry.get(f"{metric}_ci")
    return f"{entry[metric]:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]" if ci else f"{entry[metric]:.2f}"


# ----------------------------------------------------------------------------- the answer


def _not_worse(data: dict, label: str, set_name: str) -> bool:
    """In-domain BLEU and chrF not significantly below the teacher's."""
    for metric in ("bleu", "chrf"):
        test = _pair(data, set_name, TEACHER, label, metric)
        if test is None or (test["significant"] and test["delta"] < 0):
            return False
    return True


def answer(data: dict) -> list[str]:
    """Two to five sentences generated from the numbers (never stronger than the paired tests allow)."""
    models, first = data["models"], data["study"]["in_domain"][0]
    teacher, vanilla = models.get(TEACHER), models.get(VANILLA)
    out = []
    if not teacher:
        return ["The teacher has not been evaluated yet: no verdict."]
    trained = [m for m in models.values() if m["role"] == "student"]
    if trained:
        best = max(trained, key=lambda m: m["sets"][first]["bleu"])
        text = (f"**Distill.** The best trained student, `{best['label']}` ({describe(best)}), scores BLEU "
                f"{best['sets'][first]['bleu']:.2f} on {first}")
        if vanilla:
            text += (f", against {vanilla['sets'][first]['bleu']:.2f} before distillation "
                     f"({_sig(_pair(data, first, VANILLA, best['label']))})")
        text += (f" and {teacher['sets'][first]['bleu']:.2f} for the teacher ({_sig(_pair(data, first, TEACHER, best['label']))})"
                 f"; it is {_f(best.get('size_x'), 1)}x smaller than the teacher, with {_f(best.get('throughput_x'), 1)}x "
                 f"its batched throughput and {_f(best.get('latency_x'), 1)}x its batch-1 speed.")
        out.append(text)
        if vanilla:
            parts = []
            for set_name in data["study"]["out_of_domain"]:
                if set_name in best["sets"] and set_name in vanilla["sets"]:
                    test = _pair(data, set_name, VANILLA, best["label"])
                    parts.append(f"{set_name} {best['sets'][set_name]['bleu']:.2f} vs {vanilla['sets'][set_name]['bleu']:.2f} "
                                 f"before distillation ({_sig(test)})")
            if parts:
                out.append(f"**Out of domain**, the same student scores BLEU " + "; ".join(parts) + ".")
    for role_text, pick in (("**Quantize.** Of the teacher's quantizations", lambda m: m["base"] == TEACHER),
                            ("**Both (distill, then quantize).** Of the quantized students", lambda m: m["base"] != TEACHER)):
        group = [m for m in models.values() if m["role"] == "quantized" and pick(m) and m.get("size_x")]
        if not group:
            continue
        ok = [m for m in group if _not_worse(data, m["label"], first)]
        if ok:
            m = max(ok, key=lambda m: m["size_x"])
            out.append(f"{role_text}, the smallest whose in-domain BLEU and chrF are not significantly below the teacher's "
                       f"is `{m['label']}`: {m['size_x']:.1f}x smaller, BLEU {_delta_cell(_pair(data, first, TEACHER, m['label']))} "
                       f"vs the teacher.")
        else:
            m = max(group, key=lambda m: m["sets"][first]["bleu"])
            out.append(f"{role_text}, every one is significantly below the teacher in-domain; the closest is "
                       f"`{m['label']}` ({m['size_x']:.1f}x smaller, BLEU {_delta_cell(_pair(data, first, TEACHER, m['label']))}).")
    candidates = [m for m in models.values() if m["label"] != TEACHER and m.get("size_x") and _not_worse(data, m["label"], first)]
    if candidates:
        m = max(candidates, key=lambda m: m["size_x"])
        kind = {"student": "distill", "vanilla": "the student as it is"}.get(m["role"], "quantize" if m["base"] == TEACHER else "both")
        out.append(f"**Answer for this study: {kind}.** The smallest model whose in-domain BLEU and chrF are not "
                   f"significantly below the teacher's (paired test, p >= {ALPHA}) is `{m['label']}` ({describe(m)}, "
                   f"{m['size_x']:.1f}x smaller). Not significant is not the same as equal: its BLEU 95% CI is "
                   f"{_ci(m['sets'][first], 'bleu')}.")
    else:
        from llmdiet.study.figures import pareto_front

        pts = [(m["size_mb"], m["sets"][first]["bleu"], m["label"]) for m in models.values() if m["size_mb"]]
        front = [label for label in pareto_front(pts) if label != TEACHER]
        out.append("**Answer for this study: no compressed model is statistically as good as the teacher in-domain.** "
                   "The trade-off is a choice along the Pareto front of BLEU vs size: "
                   + ", ".join(f"`{label}` ({models[label]['size_x']:.1f}x smaller, BLEU "
                               f"{_delta_cell(_pair(data, first, TEACHER, label))})" for label in front) + ".")
    return out


# ----------------------------------------------------------------------------- tables


def results_table(data: dict) -> str:
    sets = data["study"]["in_domain"] + data["study"]["out_of_domain"]
    headers = ["model", "what", "size MB", "params"] + [f"{s} BLEU [95% CI]" for s in sets] + \
              [f"{s} chrF" for s in sets] + [f"{s} ROUGE-L" for s in sets] + ["sent/s (batched)", "ms/sent (batch 1)"]
    rows = []
    for m in sorted(data["models"].values(), key=lambda m: -(m["size_mb"] or 0)):
        rows.append([f"`{m['label']}`", describe(m), _f(m["size_mb"]), f"{m['parameters']:,}" if m["parameters"] else "–"]
                    + [_ci(m["sets"][s], "bleu") if s in m["sets"] else "–" for s in sets]
                    + [_f(m["sets"][s]["chrf"]) if s in m["sets"] else "–" for s in sets]
                    + [_f(m["sets"][s]["rougeL"]) if s in m["sets"] else "–" for s in sets]
                    + [_f(m["throughput_sent_s"], 1), _f((m["latency"] or {}).get("ms_per_sentence"), 1)])
    return _table(headers, rows)


def verdict_table(data: dict) -> str:
    first, ood = data["study"]["in_domain"][0], data["study"]["out_of_domain"]
    headers = ["model", "what", "size x", "throughput x", "batch-1 speed x", f"ΔBLEU {first}", f"ΔchrF {first}"] + \
              [f"ΔBLEU {s}" for s in ood]
    rows = []
    for m in sorted((m for m in data["models"].values() if m["label"] != TEACHER), key=lambda m: m["size_mb"] or 0):
        rows.append([f"`{m['label']}`", describe(m), _f(m.get("size_x"), 2), _f(m.get("throughput_x"), 2),
                     _f(m.get("latency_x"), 2), _delta_cell(_pair(data, first, TEACHER, m["label"])),
                     _delta_cell(_pair(data, first, TEACHER, m["label"], "chrf"))]
                    + [_delta_cell(_pair(data, s, TEACHER, m["label"])) for s in ood])
    return _table(headers, rows)


def vanilla_table(data: dict) -> str:
    sets = data["study"]["in_domain"] + data["study"]["out_of_domain"]
    rows = [[f"`{m['label']}`", describe(m)] + [_delta_cell(_pair(data, s, VANILLA, m["label"])) for s in sets]
            for m in data["models"].values() if m["role"] == "student"]
    return _table(["student", "what"] + [f"ΔBLEU {s}" for s in sets], rows) if rows else "(no trained student yet)"


def bits_table(data: dict) -> str:
    if not data["bits"]:
        return "(the bit sweep has not run)"
    bits = sorted({p["bits"] for pts in data["bits"].values() for p in pts if p["method"] != "float"})
    rows = []
    for label, pts in data["bits"].items():
        by = {(p["method"], p["bits"]): p["bleu"] for p in pts}
        for method in ("rtn", "gpfq"):
            if any(m == method for m, _ in by):
                rows.append([f"`{label}`", method.upper()] + [_f(by.get((method, b))) for b in bits] + [_f(by.get(("float", 32)))])
    return _table(["model", "method"] + [f"{b}-bit" for b in bits] + ["32-bit"], rows)


def provenance_section(data: dict) -> str:
    provs = [m["provenance"] for m in data["models"].values()]
    if not provs:
        return "(nothing evaluated yet)"
    def distinct(get):
        return sorted({str(get(p)) for p in provs})
    libs = provs[0]["libraries"]
    signatures = sorted({e[k] for m in data["models"].values() for e in m["sets"].values()
                         for k in ("bleu_signature", "chrf_signature")})
    st = data["study"]["statistics"]
    lines = [
        f"- git sha: {', '.join(distinct(lambda p: p['git_sha']))}",
        f"- dates: {min(distinct(lambda p: p['date']))} to {max(distinct(lambda p: p['date']))}",
        f"- hardware: {', '.join(distinct(lambda p: p['hardware'].get('cpu')))}; "
        f"{', '.join(distinct(lambda p: p['hardware'].get('cpu_count')))} cores; CUDA "
        f"{', '.join(distinct(lambda p: p['hardware'].get('cuda')))}; Python {provs[0]['hardware'].get('python')}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v),
        f"- seeds: {', '.join(distinct(lambda p: p['seed']))} (models, decoding); SACREBLEU_SEED {st['seed']} (statistics)",
        f"- confidence intervals: sacreBLEU bootstrap resampling, {st['n_bootstrap']} resamples, 95%, reported as "
        "sacreBLEU does: the bootstrap mean ± half the width of the 2.5-97.5 percentile range (symmetric, so an "
        "upper end can pass 100 when the resampled scores are skewed)",
        f"- paired tests: sacreBLEU {'paired bootstrap resampling' if st['paired_test'] == 'bs' else 'approximate randomization'}, "
        f"{st['n_samples']} samples; * marks p < {ALPHA}",
        "- metric signatures: " + "; ".join(f"`{s}`" for s in signatures),
        f"- every number above is read from the jobs' results files; all of them: `{data['study']['study_dir']}/study_results.json`",
    ]
    return "\n".join(lines)


def render(data: dict, figures: list[Path]) -> str:
    st = data["study"]
    first = st["in_domain"][0]
    parts = [f"# Study: {st['teacher']} → {st['student']}"]
    if st["demo"]:
        from llmdiet.demo import DEMO_BANNER

        parts.append(f"> {DEMO_BANNER} The demo corpus is written for llmdiet; it is not a public benchmark.")
    parts.append(f"Config `{st['config']}`; in-domain {', '.join(st['in_domain'])}; out-of-domain "
                 f"{', '.join(st['out_of_domain']) or 'none'}; alphas {', '.join(f'{a:g}' for a in st['alphas'])}; "
                 f"quantization {', '.join(st['quantize']) or 'none'}. Decoding: beam {st['eval']['num_beams']}, "
                 f"at most {st['eval']['max_new_tokens']} new tokens, batch {st['eval']['batch_size']}, the same for "
                 f"every model.")
    if data["missing"]:
        parts.append(f"**Incomplete:** {len(data['missing'])} job(s) not finished: {', '.join(data['missing'])}. "
                     "Run `llmdiet study --config ...` to finish them.")
    parts.append("## Distill, quantize or both?\n\n" + "\n\n".join(answer(data)))
    parts.append(f"## Verdict: every compressed model against the teacher\n\nSorted by size. `x`: the teacher's "
                 f"size / the model's, the model's throughput / the teacher's (batch {st['eval']['batch_size']}, "
                 f"in-domain set), the teacher's batch-1 latency / the model's, all measured on the hardware below in "
                 f"this study. Δ: the model's score minus the teacher's on the same sentences, with the paired "
                 f"test's p-value; * = significant at {ALPHA}."
                 + (" Speed ratios of the toy demo models mostly measure framework overhead, not model compute: "
                    "read them as a demonstration of the table, not as a benchmark (see BENCHMARKS.md for "
                    "flan-T5 shapes)." if st["demo"] else "") + "\n\n" + verdict_table(data))
    parts.append("## All results\n\n" + results_table(data))
    parts.append("## Trained students against the student before distillation\n\nΔBLEU vs `student-vanilla` "
                 "(paired test; * = significant). Out-of-domain columns show what distilling on the in-domain "
                 "direction costs elsewhere.\n\n" + vanilla_table(data))
    parts.append(f"## Bit width: BLEU on {first} (RTN vs GPFQ, weights of every Linear layer)\n\n" + bits_table(data))
    if figures:
        parts.append("## Figures\n\n" + "\n\n".join(f"![{f.stem}]({f.as_posix()})" for f in figures))
    parts.append("## Provenance\n\n" + provenance_section(data))
    parts.append("## Reproduce\n\n```bash\n" + f"llmdiet study --config {st['config']}            # everything (skips "
                 "finished jobs)\n" + f"llmdiet study --config {st['config']} --list     # the jobs and their state\n"
                 + f"llmdiet study --config {st['config']} --report   # this file from the finished jobs\n```")
    return "\n\n".join(parts) + "\n"
