"""Confidence intervals and paired significance for MT scores, computed by sacreBLEU itself.

* :func:`confidence_interval`: BLEU or chrF with a 95% percentile bootstrap interval over sacreBLEU's sentence
  statistics (the resamples ``sacrebleu --confidence`` draws for the seed; percentile bounds, never the mean ±
  half-width, so an interval never leaves [0, 100]).
* :func:`paired_significance`: systems against a baseline on the same references with sacreBLEU's
  ``PairedTest`` (paired bootstrap ``bs`` or approximate randomization ``ar``, as ``--paired-bs/--paired-ar``).

Both are seeded (sacreBLEU reads ``SACREBLEU_SEED``; we set it for the call and restore it) and report the
method, the sample count and the seed with every number.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from llmdiet.constants import BOOTSTRAP_METRICS
from llmdiet.evaluation.metrics import sacrebleu_metric


@contextlib.contextmanager
def _seed(seed: int):
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


def confidence_interval(
    hypotheses: list[str], references: list[str], metric: str = "bleu", n_bootstrap: int = 1000, seed: int = 12345
) -> dict:
    """``{"score", "mean", "low", "high", "confidence", "method", "n_bootstrap", "seed", "signature"}``: the
    2.5th and 97.5th percentiles of the bootstrap scores (seed 0 is refused: sacreBLEU reads it as unseeded)."""
    from llmdiet.evaluation.noninferiority import score_interval

    return score_interval(list(hypotheses), list(references), metric, n_bootstrap, seed, 0.95)


def paired_significance(
    baseline: tuple[str, list[str]],
    systems: list[tuple[str, list[str]]],
    references: list[str],
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
    test: str = "bs",
    n_samples: int = 1000,
    seed: int = 12345,
) -> dict:
    """``{system: {metric: {"score", "p_value", "significant", ...}}}`` against ``baseline`` (name, hypotheses)."""
    from sacrebleu.significance import PairedTest

    from llmdiet.evaluation.noninferiority import check_seed

    if test not in ("bs", "ar"):
        raise ValueError("test must be 'bs' (paired bootstrap) or 'ar' (approximate randomization)")
    check_seed(seed)
    named = [baseline, *systems]
    with _seed(seed):
        results: Any
        _, results = PairedTest(
            named,  # type: ignore[arg-type]  # (name, hypotheses) pairs; sacreBLEU's hint is narrower than its use
            {m: sacrebleu_metric(m) for m in metrics},
            [list(references)],
            test_type=test,
            n_samples=n_samples,
        )()
    method = {"bs": "sacrebleu paired bootstrap resampling", "ar": "sacrebleu paired approximate randomization"}[test]
    columns = dict(zip(metrics, [k for k in results if k != "System"]))  # sacreBLEU names them BLEU, chrF2
    out: dict = {}
    for i, (name, _) in enumerate(systems, start=1):
        out[name] = {}
        for metric in metrics:
            result = results[columns[metric]][i]
            p = result.p_value
            base = results[columns[metric]][0].score
            entry = {
                "score": result.score,
                "baseline": base,
                "delta": result.score - base,
                "p_value": p,
                "significant": p is not None and p < 0.05,
                "method": method,
                "n_samples": n_samples,
                "seed": seed,
            }
            if result.score == base:
                # sacreBLEU counts resamples whose delta exceeds the observed one strictly, so a delta of exactly 0
                # gets p = 1/(n+1): "significant" for two identical outputs. No difference is no difference.
                entry.update(p_value=1.0, significant=False, note="identical scores: nothing to test")
            out[name][metric] = entry
    return out
