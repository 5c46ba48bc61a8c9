"""Paired bootstrap over sacreBLEU's sufficient statistics: score CIs, paired deltas, non-inferiority, Holm.

Pure functions, no model, no I/O. Every resample is the one sacreBLEU's paired bootstrap draws
(``numpy.random.default_rng(seed).choice(n, size=(B, n))``, as ``sacrebleu --paired-bs``), and every corpus
score is recomputed from the resampled per-sentence statistics with sacreBLEU's own formulas (BLEU: n-gram
matches/totals and lengths, exp smoothing; chrF: character n-gram hyp/ref/match counts), vectorised over the
resamples, so 10,000 resamples of 2,000 sentences take well under a second per system.

The decision rule (``docs/statistics.md`` and the study's STUDY.md state it beside every verdict):

* Δ = metric(model) − metric(teacher) on the same sentences; its bootstrap distribution comes from resampling
  sentence indices once for both systems (paired).
* Non-inferiority with margin δ: H0: Δ ≤ −δ. One-sided p = (1 + #{Δ* ≤ −δ}) / (B + 1) (percentile bootstrap).
  Several metrics must all hold (intersection-union test: the p of a model is the largest of its metrics'
  p-values; no correction is needed for the metrics).
* Inferiority: H0': Δ ≥ −δ, p' = (1 + #{Δ* ≥ −δ}) / (B + 1); a model is inferior when at least one metric is
  (its p' is the smallest over metrics, Bonferroni-multiplied by the number of metrics).
* Across candidate models, Holm's step-down procedure controls the family-wise error at α for each of the two
  families. A model is **non-inferior** when Holm rejects its non-inferiority null, **inferior** when Holm
  rejects its inferiority null, else **inconclusive** (its interval straddles −δ).
* Intervals are percentile intervals (inside [0, 100] for scores), at the simultaneous (Bonferroni) level
  1 − 2α/m when reported beside a family of m models.
* Each p-value carries its Monte-Carlo standard error sqrt(p(1 − p)/B).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from llmdiet.constants import BOOTSTRAP_METRICS
from llmdiet.evaluation.metrics import sacrebleu_metric

METRICS = BOOTSTRAP_METRICS
LABELS = ("non-inferior", "inferior", "inconclusive")


def signature(metric: str) -> str:
    """sacreBLEU's signature of the metric as scored here (default BLEU() / CHRF() settings)."""
    scorer = sacrebleu_metric(metric)
    from llmdiet.evaluation.metrics import SIGNATURE_SUFFIX

    scorer.corpus_score(["a"], [["a"]])  # sacreBLEU fills the signature's reference count when it scores
    return str(scorer.get_signature()) + SIGNATURE_SUFFIX


def check_seed(seed) -> int:
    """A real seed: sacreBLEU reads seed 0 as "no seed" (entropy from the OS), so 0 is refused."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed <= 0:
        raise ValueError(f"seed must be a positive integer (sacreBLEU treats 0 as 'unseeded'), got {seed!r}")
    return seed


def sentence_statistics(hypotheses: list[str], references: list[str], metric: str) -> np.ndarray:
    """Per-sentence sufficient statistics, shape (n, k), exactly as sacreBLEU extracts them."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise ValueError("no sentences to score")
    from llmdiet.evaluation.metrics import normalize

    stats = sacrebleu_metric(metric)._extract_corpus_statistics(
        normalize(list(hypotheses)), [normalize(list(references))]
    )
    return np.asarray(stats, dtype=np.float64)


def scores_from_statistics(summed: np.ndarray, metric: str) -> np.ndarray:
    """Corpus scores from summed statistics, shape (..., k) -> (...): sacreBLEU's BLEU() / CHRF() formulas."""
    s = np.asarray(summed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "bleu":
            sys_len, ref_len, correct, total = s[..., 0], s[..., 1], s[..., 2:6], s[..., 6:10]
            bp = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
            smooth = np.cumsum(correct == 0, axis=-1)  # 'exp' smoothing doubles for every order with no match
            prec = np.where(correct == 0, 100.0 / (2.0**smooth * total), 100.0 * correct / total)
            score = bp * np.exp(np.log(prec).mean(axis=-1))
            valid = (total > 0).all(axis=-1) & (correct > 0).any(axis=-1)
            return np.where(valid, score, 0.0)
        if metric == "chrf":
            metric_obj = sacrebleu_metric("chrf")
            order, factor, eps = metric_obj.order, metric_obj.beta**2, 1e-16
            hyp, ref, match = s[..., 0 : 3 * order : 3], s[..., 1 : 3 * order : 3], s[..., 2 : 3 * order : 3]
            prec = np.where(hyp > 0, match / hyp, eps)
            rec = np.where(ref > 0, match / ref, eps)
            effective = (hyp > 0) & (ref > 0)
            n_eff = effective.sum(axis=-1)
            avg_prec = np.where(n_eff > 0, (prec * effective).sum(axis=-1) / np.maximum(n_eff, 1), 0.0)
            avg_rec = np.where(n_eff > 0, (rec * effective).sum(axis=-1) / np.maximum(n_eff, 1), 0.0)
            denom = factor * avg_prec + avg_rec
            score = 100 * (1 + factor) * avg_prec * avg_rec / np.where(denom > 0, denom, 1.0)
            return np.where(avg_prec + avg_rec > 0, score, 0.0)
    raise ValueError(f"unknown metric '{metric}' (bleu or chrf)")


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """The resampled sentence indices (B, n), the same draw as sacreBLEU's paired bootstrap with this seed."""
    return np.random.default_rng(check_seed(seed)).choice(n, size=(n_resamples, n), replace=True)


def resampled_scores(stats: np.ndarray, indices: np.ndarray, metric: str, chunk: int = 1000) -> np.ndarray:
    """The corpus score of every resample (B,): per-resample counts of each sentence times its statistics."""
    b, n = indices.shape
    out = np.empty(b)
    for lo in range(0, b, chunk):
        idx = indices[lo : lo + chunk]
        rows = idx.shape[0]
        counts = np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
        out[lo : lo + rows] = scores_from_statistics(counts @ stats, metric)
    return out


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of bootstrap samples."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def score_interval(
    hypotheses: list[str],
    references: list[str],
    metric: str = "bleu",
    n_resamples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> dict:
    """One system's score with a percentile bootstrap interval (never outside [0, 100])."""
    stats = sentence_statistics(hypotheses, references, metric)
    scores = resampled_scores(stats, bootstrap_indices(len(stats), n_resamples, seed), metric)
    scores = np.clip(scores, 0.0, 100.0)  # exp(log(100)) can round to 100.00000000000004
    low, high = percentile_interval(scores, confidence)
    return {
        "score": float(scores_from_statistics(stats.sum(0), metric)),
        "mean": float(scores.mean()),
        "low": low,
        "high": high,
        "confidence": confidence,
        "method": "percentile bootstrap over sacreBLEU sentence statistics",
        "n_bootstrap": n_resamples,
        "seed": seed,
        "signature": signature(metric),
    }


def paired_deltas(
    baseline: list[str], system: list[str], references: list[str], metric: str, indices: np.ndarray
) -> tuple[float, np.ndarray]:
    """(observed Δ = system − baseline, Δ of every resample) on the same resampled sentences."""
    base_stats = sentence_statistics(baseline, references, metric)
    sys_stats = sentence_statistics(system, references, metric)
    observed = float(
        scores_from_statistics(sys_stats.sum(0), metric) - scores_from_statistics(base_stats.sum(0), metric)
    )
    return observed, resampled_scores(sys_stats, indices, metric) - resampled_scores(base_stats, indices, metric)


def holm(p_values: list[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure: (rejected, adjusted p-values), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    rejected, adjusted = [False] * m, [1.0] * m
    running, still = 0.0, True
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
        still = still and p_values[i] <= alpha / (m - rank)
        rejected[i] = still
    return rejected, adjusted


def mc_error(p: float, n_resamples: int) -> float:
    """Monte-Carlo standard error of a bootstrap p-value."""
    return math.sqrt(p * (1 - p) / n_resamples)


def delta_summary(observed: float, deltas: np.ndarray, margin: float, level: float) -> dict:
    """Δ, its percentile interval at ``level`` (two-sided), and the one-sided p-values for the margin."""
    b = len(deltas)
    low, high = percentile_interval(deltas, level)
    p_ni = (1 + int(np.sum(deltas <= -margin))) / (b + 1)
    p_inf = (1 + int(np.sum(deltas >= -margin))) / (b + 1)
    return {
        "delta": observed,
        "low": low,
        "high": high,
        "level": level,
        "margin": margin,
        "se": float(deltas.std(ddof=1)) if b > 1 else 0.0,
        "p_noninferior": p_ni,
        "p_noninferior_mc_error": mc_error(p_ni, b),
        "p_inferior": p_inf,
        "p_inferior_mc_error": mc_error(p_inf, b),
    }


def sentences_needed(n: int, summary: dict, alpha_each: float) -> int | None:
    """Sentences for a decisive answer if Δ and the per-sentence spread stay as observed (the bootstrap SE
    shrinks as 1/sqrt(n)); None when Δ sits on the margin (no sample size decides it)."""
    distance = abs(summary["delta"] + summary["margin"])
    if distance == 0 or summary["se"] == 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha_each)
    return max(n, math.ceil(n * (z * summary["se"] / distance) ** 2))


def _set_tests(
    baseline: list[str],
    candidates: dict[str, dict[str, list[str]]],
    set_name: str,
    refs: list[str],
    metric: str,
    margin: float,
    level: float,
    indices,
) -> dict[str, dict]:
    """Δ = candidate − baseline on one (set, metric) for every candidate scored on the set, paired resamples."""
    base_stats = sentence_statistics(baseline, refs, metric)
    base_scores = resampled_scores(base_stats, indices, metric)
    base_score = float(scores_from_statistics(base_stats.sum(0), metric))
    out = {}
    for name, hypotheses in candidates.items():
        if set_name not in hypotheses:
            continue
        stats = sentence_statistics(hypotheses[set_name], refs, metric)
        observed = float(scores_from_statistics(stats.sum(0), metric)) - base_score
        deltas = resampled_scores(stats, indices, metric) - base_scores
        out[name] = {**delta_summary(observed, deltas, margin, level), "sentences": len(refs)}
    return out


def _label_models(per_model: dict[str, dict], tested: list[str], alpha: float, m: int) -> None:
    """Each tested model's label under Holm across candidates and intersection-union across its tests."""
    p_ni = [max(t["p_noninferior"] for t in per_model[n]["tests"].values()) for n in tested]
    p_inf = [
        min(1.0, len(per_model[n]["tests"]) * min(t["p_inferior"] for t in per_model[n]["tests"].values()))
        for n in tested
    ]
    ni_rejected, ni_adjusted = holm(p_ni, alpha)
    inf_rejected, inf_adjusted = holm(p_inf, alpha)
    for i, name in enumerate(tested):
        entry = per_model[name]
        label = "non-inferior" if ni_rejected[i] else "inferior" if inf_rejected[i] else "inconclusive"
        entry.update(
            label=label,
            p_noninferior=p_ni[i],
            p_noninferior_holm=ni_adjusted[i],
            p_inferior=p_inf[i],
            p_inferior_holm=inf_adjusted[i],
        )
        if label == "inconclusive":
            needs = [sentences_needed(t["sentences"], t, alpha / m) for t in entry["tests"].values()]
            known = [x for x in needs if x is not None]
            entry["sentences_needed"] = max(known) if len(known) == len(needs) else None


def noninferiority(
    baseline: dict[str, list[str]],
    candidates: dict[str, dict[str, list[str]]],
    references: dict[str, list[str]],
    margins: dict[str, float],
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 12345,
) -> dict:
    """Non-inferiority of every candidate against ``baseline`` on the decision sets, with Holm across candidates.

    ``baseline`` and each candidate map set name -> hypotheses; ``references`` set name -> references;
    ``margins`` metric -> δ (metrics tested: its keys). A candidate is tested on every set it and the baseline
    share; all (set, metric) pairs must hold (intersection-union). Returns ``{"models": {name: {...}}, "rule":
    {...}}`` with, per model, the label, the Holm-adjusted p-values and per (set, metric) Δ, its simultaneous
    interval and p-values.
    """
    names = list(candidates)
    m = max(len(names), 1)
    level = 1 - 2 * alpha / m  # two-sided simultaneous interval = one-sided alpha/m on each side
    per_model: dict[str, dict] = {name: {"tests": {}} for name in names}
    for set_name, refs in references.items():
        if set_name in baseline:
            indices = bootstrap_indices(len(refs), n_resamples, seed)
            for metric in margins:
                tests = _set_tests(
                    baseline[set_name], candidates, set_name, refs, metric, margins[metric], level, indices
                )
                for name, summary in tests.items():
                    per_model[name]["tests"][f"{set_name}/{metric}"] = summary
    tested = [n for n in names if per_model[n]["tests"]]
    _label_models(per_model, tested, alpha, m)
    for name in names:
        per_model[name].setdefault("label", "not tested")
    return {
        "models": per_model,
        "rule": {
            "test": "non-inferiority, paired percentile bootstrap over sacreBLEU sentence statistics",
            "margins": dict(margins),
            "alpha": alpha,
            "confidence": 1 - alpha,
            "candidates": len(tested),
            "correction": "Holm step-down across candidate models (family-wise error <= alpha), intersection-union "
            "across sets and metrics; intervals are simultaneous (Bonferroni) at level 1 - 2*alpha/m",
            "interval_level": level,
            "n_resamples": n_resamples,
            "seed": seed,
            "sets": [s for s in references if s in baseline],
        },
    }
