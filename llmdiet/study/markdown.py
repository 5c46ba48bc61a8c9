"""``STUDY.md``: the verdict, the tables and the figures, rendered from ``study_results.json``'s content.

Every number comes from ``data`` (see :mod:`llmdiet.study.report`); the sentences of the answer are
generated from the non-inferiority decisions (:mod:`llmdiet.evaluation.noninferiority`) and never claim more
than the stated rule allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmdiet.study.plan import TEACHER, VANILLA


def _f(value, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _decision(data: dict, label: str, family: str = "teacher", set_name: str | None = None) -> dict | None:
    block = data["decisions"].get(family) or {}
    if set_name is not None:
        block = block.get(set_name) or {}
    return (block.get("models") or {}).get(label)


def _test(decision: dict | None, set_name: str, metric: str) -> dict | None:
    return ((decision or {}).get("tests") or {}).get(f"{set_name}/{metric}")


def _delta(test: dict | None) -> str:
    return "–" if test is None else f"{test['delta']:+.2f} [{test['low']:+.2f}, {test['high']:+.2f}]"


def _flag(test: dict | None) -> str:
    """Out of domain: whether the loss may exceed the margin."""
    if test is None:
        return ""
    if test["high"] < -test["margin"]:
        return " **beyond the margin**"
    if test["low"] <= -test["margin"]:
        return " (may exceed the margin)"
    return ""


def _needed(n: int) -> str:
    return "> 1,000,000" if n > 1_000_000 else f"≈{n:,}"


def _degenerate(entry: dict | None) -> str:
    d = (entry or {}).get("degenerate") or {}
    return "–" if d.get("share") is None else f"{100 * d['share']:.1f}%"


def describe(m: dict) -> str:
    if m["role"] == "teacher":
        return "teacher (float)"
    if m["role"] == "vanilla":
        return "student before distillation"
    if m["role"] == "student":
        return f"student, {m['distill_method']}, alpha {m['alpha']:g}"
    if m["role"] == "speculative":
        return f"teacher, speculative decoding with {m['draft']} drafting (same greedy output for a float teacher)"
    if m["role"] == "pruned":
        return _pruned_words(m)
    if m.get("prune"):
        return f"{_pruned_words(m)}, then quantized with {m['method']}"
    return f"{m['base']} quantized with {m['method']}"


def _pruned_words(m: dict) -> str:
    p = m["prune"]
    flags = ", ".join(f"{k} {v}" for k, v in p["flags"].items() if k != "method")
    recovered = {
        "none": "not recovered",
        "finetune": "recovered by fine-tuning (alpha 0, learning-rate rewinding)",
        "distill": f"recovered by distillation from the teacher (alpha {m['alpha']:g})"
        if m.get("alpha") is not None
        else "recovered by distillation",
    }[p["recover"]]
    base = m["base"] if m["role"] == "pruned" else "the teacher"
    return f"{base} pruned ({p['flags']['method']}{': ' + flags if flags else ''}), {recovered}"


def _ci(entry: dict, metric: str) -> str:
    ci = entry.get(f"{metric}_ci")
    return f"{entry[metric]:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]" if ci else f"{entry[metric]:.2f}"


# ----------------------------------------------------------------------------- the answer


def _rule_scope(data: dict, family: str = "teacher") -> str:
    """'every declared set' or 'the in-domain sets' for the decision ``family`` (the rule, or the other rule)."""
    rule = (data["decisions"].get(family) or {}).get("rule") or {}
    ood = set(data["study"]["out_of_domain"])
    return "every declared set" if ood and ood <= set(rule.get("sets", [])) else "the in-domain sets"


def rule_sentence(data: dict) -> str:
    rule = (data["decisions"].get("teacher") or {}).get("rule")
    v = data["study"]["verdict"]
    if not rule:
        return "**Rule.** (no compressed model has been evaluated yet)"
    margins = ", ".join(f"{ {'bleu': 'BLEU', 'chrf': 'chrF'}[k] } {m:g}" for k, m in rule["margins"].items())
    return (
        f"**Rule (fixed in the config before any score).** A model is *as good as the teacher* only if it is "
        f"shown **non-inferior** on {_rule_scope(data)} ({', '.join(rule['sets'])}) for every metric. What is "
        f"decided: for each model, one-sided paired-bootstrap tests of H0: (model − teacher) ≤ −margin ({margins} "
        "points) on every (set, metric) pair, the model's p-value being the largest of them (intersection-union: "
        "all must hold), Holm-adjusted over all "
        f"{rule['candidates']} candidate models at family-wise error {rule['alpha']:g}. What is printed: Δ = model − "
        f"teacher with simultaneous percentile intervals ({100 * rule['interval_level']:.2f}% two-sided, Bonferroni "
        f"over the candidates), from {rule['n_resamples']:,} paired bootstrap resamples (seed {rule['seed']}); "
        "the labels come from the Holm-adjusted tests, which can decide a model whose Bonferroni interval still "
        'touches −margin. *Inferior*: shown worse than −margin; *inconclusive*: neither (not "as good"; more '
        "sentences would decide it; docs/statistics.md relates the margin to the set size). The answer minimises "
        f"**{v['minimise']}** among the non-inferior models; ties (within {100 * v['tie']:g}% for size and memory, "
        "overlapping min–max spreads for speed) go to the better dev-set BLEU."
    )


def _objective(m: dict, minimise: str) -> tuple[float | None, dict | None]:
    """(value to minimise, speed spread or None)."""
    if minimise == "size":
        return m.get("size_mb"), None
    if minimise == "memory":
        return m.get("peak_rss_mb"), None
    if minimise == "latency":
        lat = m.get("latency")
        return (lat["ms_per_sentence"], {"min": lat["min"], "max": lat["max"]}) if lat else (None, None)
    thr = m.get("throughput")
    return (-thr["median"], {"min": -thr["max"], "max": -thr["min"]}) if thr else (None, None)


def dev_bleu(data: dict, m: dict) -> float | None:
    dev = data["study"].get("dev")
    return m["sets"][dev]["bleu"] if dev and dev in m["sets"] else None


def choose(data: dict, labels: list[str]) -> tuple[dict | None, list[str]]:
    """The model the answer recommends among ``labels`` and the ones it tied with."""
    v = data["study"]["verdict"]
    scored: list[Any] = [(m, *_objective(m, v["minimise"])) for m in (data["models"][x] for x in labels)]
    scored = [x for x in scored if x[1] is not None]
    if not scored:
        return None, []
    best_value = min(x[1] for x in scored)
    best = next(x for x in scored if x[1] == best_value)
    if best[2] is None:  # size, memory: relative tolerance
        tied = [x[0] for x in scored if x[1] <= best_value + abs(best_value) * v["tie"]]
    else:  # speed: spreads that overlap the best one's
        tied = [x[0] for x in scored if x[2]["min"] <= best[2]["max"]]

    def key(m):
        return (dev_bleu(data, m) if dev_bleu(data, m) is not None else float("-inf"), -_objective(m, v["minimise"])[0])

    chosen = max(tied, key=key)
    return chosen, [m["label"] for m in tied if m is not chosen]


def _kind(m: dict) -> str:
    return {
        "student": "distill",
        "vanilla": "the student as it is",
        "speculative": "speculative decoding (the teacher, a student drafting)",
    }.get(m["role"]) or _compression_kind(m)


def _compression_kind(m: dict) -> str:
    if m.get("prune"):
        then = {"none": "", "finetune": ", then fine-tune", "distill": ", then distill"}[m["prune"]["recover"]]
        return f"prune{then}" + (", then quantize" if m["role"] == "quantized" else "")
    return "quantize" if m["base"] == TEACHER else "both (distill, then quantize)"


def _speed_words(m: dict) -> str:
    parts = []
    if m.get("throughput_x") is not None:
        parts.append(f"{m['throughput_x']:.2f}x the teacher's batched throughput ({m['throughput_verdict']})")
    if m.get("latency_x") is not None:
        parts.append(f"{m['latency_x']:.2f}x its batch-1 speed ({m['latency_verdict']})")
    reps = (m.get("latency") or {}).get("repeats")
    return (
        (
            ", ".join(parts)
            + (
                f"; medians of {reps} interleaved rounds, a gain claimed only when the min–max spreads do not overlap"
                if reps
                else ""
            )
        )
        if parts
        else "speed not measured"
    )


def answer(data: dict) -> list[str]:
    """The answer, generated from the decisions: never stronger than the non-inferiority rule allows."""
    models, st = data["models"], data["study"]
    first, dev = st["in_domain"][0], st.get("dev")
    teacher, vanilla = models.get(TEACHER), models.get(VANILLA)
    if not teacher:
        return ["The teacher has not been evaluated yet: no verdict."]
    out = [rule_sentence(data)]
    trained = [m for m in models.values() if m["role"] == "student"]
    if trained and dev and all(dev_bleu(data, m) is not None for m in trained):
        best = max(trained, key=lambda m: dev_bleu(data, m) or 0.0)  # every dev BLEU is known here
        d = _decision(data, best["label"])
        text = (
            f"**Distill.** The best trained student on the dev set ({dev}, BLEU {dev_bleu(data, best):.2f}) is "
            f"`{best['label']}` ({describe(best)}). On the test set {first} it scores BLEU "
            f"{best['sets'][first]['bleu']:.2f} against {teacher['sets'][first]['bleu']:.2f} for the teacher: "
            f"Δ {_delta(_test(d, first, 'bleu'))}, **{(d or {}).get('label', 'not tested')}**"
        )
        vd = _decision(data, best["label"], "vanilla", first)
        if vanilla and vd:
            text += (
                f"; against the student before distillation ({vanilla['sets'][first]['bleu']:.2f}) Δ "
                f"{_delta(_test(vd, first, 'bleu'))}, {_vanilla_label(vd)}"
            )
        out.append(text + f". It is {_f(best.get('size_x'), 1)}x smaller than the teacher.")
    elif trained:
        out.append(
            "**Distill.** No dev set (eval.dev), so no best student is named: picking it on the test rows "
            "would bias its score."
        )
    out.extend(_group_counts(data))
    for m in models.values():
        if m["role"] != "speculative":
            continue
        spec = ((m.get("speculative") or {}).get(first)) or {}
        rate = spec.get("acceptance_rate")
        out.append(
            f"**Speculative decoding** (the teacher itself, not a smaller model): `{m['label']}` lets `{m['draft']}` "
            f"propose and the teacher verify; same BLEU as the teacher on {first} ({m['sets'][first]['bleu']:.2f}), "
            + (f"{100 * rate:.0f}% of the draft tokens accepted, " if rate is not None else "")
            + f"{_speed_words(m)}."
        )
    out.append(_answer_line(data, "teacher"))
    if data["decisions"].get("teacher_other_rule"):
        out.append(_answer_line(data, "teacher_other_rule"))
    return out


_GROUPS = (
    ("**Quantize** (the teacher's quantizations)", lambda m: m["role"] == "quantized" and m["base"] == TEACHER),
    (
        "**Both** (quantized students)",
        lambda m: m["role"] == "quantized" and m["base"] != TEACHER and not m.get("prune"),
    ),
    ("**Prune** (pruned models, as pruned and recovered)", lambda m: m["role"] == "pruned"),
    ("**Prune, then quantize**", lambda m: m["role"] == "quantized" and bool(m.get("prune"))),
)


def _group_counts(data: dict) -> list[str]:
    """One line per group of compressed models present: how many are non-inferior, inconclusive, inferior."""
    out = []
    for title, pick in _GROUPS:
        group = [m for m in data["models"].values() if pick(m)]
        if not group:
            continue
        by = {
            label: [m["label"] for m in group if (_decision(data, m["label"]) or {}).get("label") == label]
            for label in ("non-inferior", "inconclusive", "inferior")
        }
        out.append(
            f"{title}: {len(by['non-inferior'])} non-inferior"
            + (f" ({', '.join(f'`{x}`' for x in by['non-inferior'])})" if by["non-inferior"] else "")
            + f", {len(by['inconclusive'])} inconclusive, {len(by['inferior'])} inferior, of {len(group)}."
        )
    return out


def _answer_line(data: dict, family: str) -> str:
    """The answer under the rule (``family`` "teacher") or, beside it, under the other rule ("teacher_other_rule":
    in-domain only when the rule covers every declared set, and the reverse)."""
    models = data["models"]
    scope = _rule_scope(data, family)
    ok = [  # the compressions: speculative rows keep the teacher (they are reported above, never chosen)
        label
        for label in models
        if label != TEACHER
        and models[label]["role"] != "speculative"
        and (_decision(data, label, family) or {}).get("label") == "non-inferior"
    ]
    chosen, tied = choose(data, ok)
    title = "Answer for this study" if family == "teacher" else f"Beside it, deciding on {scope} only"
    if chosen:
        return _chosen_text(data, family, title, scope, chosen, tied)
    return _no_choice_text(data, family, title, scope)


def _chosen_text(data: dict, family: str, title: str, scope: str, chosen: dict, tied: list) -> str:
    """The answer when a compressed model is non-inferior: it, its deltas, size, speed, and out of domain."""
    st = data["study"]
    d = _decision(data, chosen["label"], family)
    ind = "; ".join(
        f"ΔBLEU {_delta(_test(d, s, 'bleu'))}, ΔchrF {_delta(_test(d, s, 'chrf'))} on {s}" for s in st["in_domain"]
    )
    text = (
        f"**{title}: {_kind(chosen)}: `{chosen['label']}`** ({describe(chosen)}). It is non-inferior to the "
        f"teacher on {scope}: {ind}; {_f(chosen.get('size_x'), 2)}x smaller; {_speed_words(chosen)}; degenerate "
        f"outputs {_degenerate(chosen['sets'].get(st['in_domain'][0]))}."
    )
    if tied:
        text += f" Tied on {st['verdict']['minimise']} with {', '.join(f'`{x}`' for x in tied)}: chosen by dev BLEU."
    ood = [
        f"{s} ΔBLEU {_delta(t)}{_flag(t)}"
        for s in st["out_of_domain"]
        if (t := _test(_decision(data, chosen["label"], "out_of_domain", s), s, "bleu"))
    ]
    if ood:
        part = "part of this rule" if scope == "every declared set" else "not part of this rule"
        text += f" **Out of domain** ({part}): " + "; ".join(ood) + "."
    return text


def _no_choice_text(data: dict, family: str, title: str, scope: str) -> str:
    """The answer when no compressed model is non-inferior: the Pareto front, and what a larger test set decides."""
    from llmdiet.study.figures import pareto_front

    models, first = data["models"], data["study"]["in_domain"][0]
    pts = [
        (m["size_mb"], m["sets"][first]["bleu"], m["label"])
        for m in models.values()
        if m["size_mb"] and m["role"] != "speculative"
    ]
    front = [label for label in pareto_front(pts) if label != TEACHER]
    open_ = sorted(
        (label for label in models if (_decision(data, label, family) or {}).get("label") == "inconclusive"),
        key=lambda x: models[x].get("size_mb") or 0,
    )
    text = (
        f"**{title}: no compressed model is shown non-inferior to the teacher on {scope}.** "
        f"The trade-off is a choice along the Pareto front of {first} BLEU vs size: "
        + ", ".join(
            f"`{x}` ({_f(models[x].get('size_x'), 1)}x smaller, ΔBLEU "
            f"{_delta(_test(_decision(data, x, family), first, 'bleu'))}, "
            f"{(_decision(data, x, family) or {}).get('label', '?')})"
            for x in front
        )
        + "."
    )
    needs = [(x, n) for x in open_ if (n := (_decision(data, x, family) or {}).get("sentences_needed"))]
    if needs:
        text += (
            " Inconclusive models a larger test set could decide (sentences needed if Δ stays as "
            "observed): " + ", ".join(f"`{x}` {_needed(n)}" for x, n in needs[:8]) + "."
        )
    return text


def _vanilla_label(decision: dict) -> str:
    return {
        "non-inferior": "better (significant)",
        "inferior": "worse (significant)",
        "inconclusive": "no clear difference",
    }.get(str(decision.get("label")), "not tested")


# ----------------------------------------------------------------------------- tables


def results_table(data: dict) -> str:
    st = data["study"]
    sets = st["in_domain"] + st["out_of_domain"] + ([st["dev"]] if st.get("dev") else [])
    headers = (
        ["model", "what", "size MB", "params"]
        + [f"{s} BLEU [95% CI]" for s in sets]
        + [f"{s} chrF" for s in sets]
        + [f"{s} ROUGE-L" for s in sets]
        + [f"{s} degenerate" for s in st["in_domain"]]
        + ["sent/s (batched, median)", "ms/sent (batch 1, median)"]
    )
    rows = []
    for m in sorted(data["models"].values(), key=lambda m: -(m["size_mb"] or 0)):
        rows.append(
            [f"`{m['label']}`", describe(m), _f(m["size_mb"]), f"{m['parameters']:,}" if m["parameters"] else "–"]
            + [_ci(m["sets"][s], "bleu") if s in m["sets"] else "–" for s in sets]
            + [_f(m["sets"][s]["chrf"]) if s in m["sets"] else "–" for s in sets]
            + [_f(m["sets"][s]["rougeL"]) if s in m["sets"] else "–" for s in sets]
            + [_degenerate(m["sets"].get(s)) for s in st["in_domain"]]
            + [_f(m["throughput_sent_s"], 1), _f((m["latency"] or {}).get("ms_per_sentence"), 1)]
        )
    return _table(headers, rows)


def verdict_table(data: dict) -> str:
    ind, ood = data["study"]["in_domain"], data["study"]["out_of_domain"]
    first = ind[0]
    other = bool(data["decisions"].get("teacher_other_rule"))
    headers = (
        ["model", "what", f"verdict ({_rule_scope(data)})"]
        + ([f"verdict ({_rule_scope(data, 'teacher_other_rule')} only)"] if other else [])
        + ["size x", "throughput x", "batch-1 speed x"]
        + [f"Δ{metric} {s}" for s in ind for metric in ("BLEU", "chrF")]
        + ["degenerate"]
        + [f"ΔBLEU {s}" for s in ood]
    )
    rows = []
    compressed = (m for m in data["models"].values() if m["label"] != TEACHER and m["role"] != "speculative")
    for m in sorted(compressed, key=lambda m: m["size_mb"] or 0):
        d = _decision(data, m["label"])
        label = (d or {}).get("label", "–")
        if label == "inconclusive" and d and d.get("sentences_needed"):
            label += f" ({_needed(d['sentences_needed'])} sentences)"

        def speed(key, m=m):
            return "–" if m.get(f"{key}_x") is None else f"{m[f'{key}_x']:.2f} ({m[f'{key}_verdict']})"

        rows.append(
            [f"`{m['label']}`", describe(m), f"**{label}**"]
            + ([(_decision(data, m["label"], "teacher_other_rule") or {}).get("label", "–")] if other else [])
            + [_f(m.get("size_x"), 2), speed("throughput"), speed("latency")]
            + [_delta(_test(d, s, metric)) for s in ind for metric in ("bleu", "chrf")]
            + [_degenerate(m["sets"].get(first))]
            + [_delta(t := _test(_decision(data, m["label"], "out_of_domain", s), s, "bleu")) + _flag(t) for s in ood]
        )
    return _table(headers, rows)


def vanilla_table(data: dict) -> str:
    sets = data["study"]["in_domain"] + data["study"]["out_of_domain"]
    rows = []
    for m in data["models"].values():
        if m["role"] != "student":
            continue
        cells = []
        for s in sets:
            d = _decision(data, m["label"], "vanilla", s)
            cells.append(f"{_delta(_test(d, s, 'bleu'))} {_vanilla_label(d) if d else ''}".strip())
        rows.append([f"`{m['label']}`", describe(m)] + cells)
    return _table(["student", "what"] + [f"ΔBLEU {s}" for s in sets], rows) if rows else "(no trained student yet)"


def batch_table(data: dict) -> str:
    rows, dependent = [], set()
    for m in sorted(data["models"].values(), key=lambda m: m["label"]):
        b = m.get("batch_invariance")
        if not b:
            continue
        if b["identical"] < b["rows"]:
            dependent.add(m["method"] or "float (torch)")
        rows.append(
            [
                f"`{m['label']}`",
                m["method"] or "float",
                f"{b['identical']}/{b['rows']}",
                _f(b["bleu_batch1"]),
                _f(b["bleu_batched"]),
                f"{b['bleu_batched'] - b['bleu_batch1']:+.2f}",
            ]
        )
    if not rows:
        return "(the speed job has not run)"
    b0 = next(m["batch_invariance"] for m in data["models"].values() if m.get("batch_invariance"))
    words = (
        f"Outputs depend on batch composition for: {', '.join(sorted(dependent))} — their BLEU holds for "
        f"batch {b0['batch_size']} in the study's length-sorted order only."
        if dependent
        else "No model's output changed with batch composition."
    )
    return (
        f"The first {b0['rows']} in-domain rows translated alone (speed job, round 1) against the same rows in "
        f"the batched eval (batch {b0['batch_size']}). {words}\n\n"
        + _table(["model", "method", "identical outputs", "BLEU batch 1", f"BLEU batch {b0['batch_size']}", "Δ"], rows)
    )


def bits_table(data: dict) -> str:
    if not data["bits"]:
        return "(the bit sweep has not run)"
    bits = sorted({p["bits"] for pts in data["bits"].values() for p in pts if p["method"] != "float"})
    rows = []
    for label, pts in data["bits"].items():
        by = {(p["method"], p["bits"]): p["bleu"] for p in pts}
        for method in ("rtn", "gpfq"):
            if any(m == method for m, _ in by):
                rows.append(
                    [f"`{label}`", method.upper()]
                    + [_f(by.get((method, b))) for b in bits]
                    + [_f(by.get(("float", 32)))]
                )
    return _table(["model", "method"] + [f"{b}-bit" for b in bits] + ["32-bit"], rows)


def provenance_section(data: dict) -> str:
    provs = [m["provenance"] for m in data["models"].values()]
    if not provs:
        return "(nothing evaluated yet)"

    def distinct(get):
        return sorted({str(get(p)) for p in provs})

    libs = provs[0]["libraries"]
    signatures = sorted(
        {
            e[k]
            for m in data["models"].values()
            for e in m["sets"].values()
            for k in ("bleu_signature", "chrf_signature")
        }
    )
    st = data["study"]["statistics"]
    lines = [
        f"- git sha: {', '.join(distinct(lambda p: p['git_sha']))}",
        f"- dates: {min(distinct(lambda p: p['date']))} to {max(distinct(lambda p: p['date']))}",
        f"- hardware: {', '.join(distinct(lambda p: p['hardware'].get('cpu')))}; "
        f"{', '.join(distinct(lambda p: p['hardware'].get('cpu_count')))} cores; CUDA "
        f"{', '.join(distinct(lambda p: p['hardware'].get('cuda')))}; Python {provs[0]['hardware'].get('python')}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v),
        f"- seeds: {', '.join(distinct(lambda p: p['seed']))} (models, decoding); SACREBLEU_SEED {st['seed']} (statistics)",
        f"- score confidence intervals: percentile bootstrap (2.5th-97.5th) over sacreBLEU's sentence statistics, "
        f"{st['n_bootstrap']} resamples (sacreBLEU's draw for seed {st['seed']})",
        "- decisions: "
        + ((data["decisions"].get("teacher") or {}).get("rule") or {}).get("test", "–")
        + "; "
        + ((data["decisions"].get("teacher") or {}).get("rule") or {}).get("correction", "")
        + "; each p-value's "
        "Monte-Carlo error sqrt(p(1-p)/B) is stored beside it in study_results.json",
        "- sizes: the weights and what is needed to run them (engine files, tokenizer, config); logs, plots, "
        "checkpoints, eval runs and nested artifacts are not counted (each model's counted files: "
        "study_results.json, size_counted)",
        "- speed: medians and min-max of the speed job's interleaved rounds (study_results.json, models.*.latency / "
        "throughput)",
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
    parts.append(
        f"Config `{st['config']}`; in-domain {', '.join(st['in_domain'])}; out-of-domain "
        f"{', '.join(st['out_of_domain']) or 'none'}; alphas {', '.join(f'{a:g}' for a in st['alphas'])}; "
        f"quantization {', '.join(st['quantize']) or 'none'}. Decoding: beam {st['eval']['num_beams']}, "
        f"at most {st['eval']['max_new_tokens']} new tokens, batch {st['eval']['batch_size']}, the same for "
        f"every model."
    )
    if data["missing"]:
        parts.append(
            f"**Incomplete:** {len(data['missing'])} job(s) not finished: {', '.join(data['missing'])}. "
            "Run `llmdiet study --config ...` to finish them."
        )
    parts.append("## Distill, quantize or both?\n\n" + "\n\n".join(answer(data)))
    parts.append(
        f"## Verdict: every compressed model against the teacher\n\nSorted by size. `x`: the teacher's "
        f"size / the model's, the model's throughput / the teacher's (batch {st['eval']['batch_size']}, "
        f"in-domain set), the teacher's batch-1 latency / the model's: medians of "
        f"{st['eval']['speed_repeats']} interleaved rounds, 'faster'/'slower' only when the min–max spreads "
        f"do not overlap. Δ: the model's score minus the teacher's on the same sentences [simultaneous "
        f"interval]; the verdict follows the rule above. Degenerate: share of in-domain outputs that hit "
        f"max_new_tokens or repeat an n-gram 3+ times (or are empty)."
        + (
            " Speed ratios of the toy demo models mostly measure framework overhead, not model compute: "
            "read them as a demonstration of the table, not as a benchmark (see BENCHMARKS.md for "
            "flan-T5 shapes)."
            if st["demo"]
            else ""
        )
        + "\n\n"
        + verdict_table(data)
    )
    parts.append("## All results\n\n" + results_table(data))
    parts.append(
        "## Trained students against the student before distillation\n\nΔBLEU vs `student-vanilla` "
        "[simultaneous interval over the students, per set; Holm], better/worse only when the interval "
        "excludes 0. Out-of-domain columns show what distilling on the in-domain direction costs "
        "elsewhere.\n\n" + vanilla_table(data)
    )
    parts.append("## Batch composition\n\n" + batch_table(data))
    parts.append(f"## Bit width: BLEU on {first} (RTN vs GPFQ, weights of every Linear layer)\n\n" + bits_table(data))
    if figures:
        parts.append("## Figures\n\n" + "\n\n".join(f"![{f.stem}]({f.as_posix()})" for f in figures))
    parts.append("## Provenance\n\n" + provenance_section(data))
    parts.append(
        "## Reproduce\n\n```bash\n" + f"llmdiet study --config {st['config']}            # everything (skips "
        "finished jobs)\n"
        + f"llmdiet study --config {st['config']} --list     # the jobs and their state\n"
        + f"llmdiet study --config {st['config']} --report   # this file from the finished jobs\n```"
    )
    return "\n\n".join(parts) + "\n"
