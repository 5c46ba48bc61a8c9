"""The non-inferiority statistics against sacreBLEU itself (the independent reference) and textbook Holm."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from llmdiet.evaluation import noninferiority as ni

WORDS = "le la les un une chat chien maison rapport lit voit aime ce soir matin journal ville".split()


def _corpus(n: int, seed: int, noise: float) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + "." for _ in range(n)]
    hyps = [" ".join(w if rng.random() > noise else rng.choice(WORDS) for w in r[:-1].split()) + "." for r in refs]
    return hyps, refs


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_resampled_scores_equal_sacrebleu_on_the_same_resamples(metric):
    hyps, refs = _corpus(60, 1, 0.3)
    scorer = BLEU() if metric == "bleu" else CHRF()
    stats = ni.sentence_statistics(hyps, refs, metric)
    # the full-corpus score is sacreBLEU's corpus score
    assert ni.scores_from_statistics(stats.sum(0), metric) == pytest.approx(
        scorer.corpus_score(hyps, [refs]).score, abs=1e-9
    )
    idx = ni.bootstrap_indices(len(hyps), 200, 7)
    # the draw is sacreBLEU's paired-bootstrap draw for that seed
    assert np.array_equal(idx, np.random.default_rng(7).choice(len(hyps), size=(200, len(hyps)), replace=True))
    mine = ni.resampled_scores(stats, idx, metric, chunk=64)
    ref_stats = np.array(scorer._extract_corpus_statistics(hyps, [refs]), dtype="float32")
    theirs = np.array([scorer._compute_score_from_stats(s.sum(0)).score for s in ref_stats[idx]])
    assert np.allclose(mine, theirs, atol=1e-6)


def test_bleu_edge_cases_match_sacrebleu():
    for hyps, refs in [
        (["x y"], ["a b c d"]),
        (["a b"], ["a b c d e"]),
        (["a"], ["a"]),
        ([""], ["a b"]),
        (["a b c d e", "q"], ["a b c d e", "r s"]),
    ]:
        stats = ni.sentence_statistics(hyps, refs, "bleu")
        assert ni.scores_from_statistics(stats.sum(0), "bleu") == pytest.approx(
            BLEU().corpus_score(hyps, [refs]).score, abs=1e-9
        )


def test_paired_deltas_equal_sacrebleu_paired_bootstrap_internals():
    base, refs = _corpus(80, 2, 0.2)
    system, _ = _corpus(80, 2, 0.35)
    idx = ni.bootstrap_indices(80, 300, 12345)
    observed, deltas = ni.paired_deltas(base, system, refs, "bleu", idx)
    bleu = BLEU()
    b = np.array(bleu._extract_corpus_statistics(base, [refs]), dtype="float32")
    s = np.array(bleu._extract_corpus_statistics(system, [refs]), dtype="float32")
    theirs = np.array([bleu._compute_score_from_stats(x.sum(0)).score for x in s[idx]]) - np.array(
        [bleu._compute_score_from_stats(x.sum(0)).score for x in b[idx]]
    )
    assert np.allclose(deltas, theirs, atol=1e-6)
    assert observed == pytest.approx(bleu.corpus_score(system, [refs]).score - bleu.corpus_score(base, [refs]).score)


def test_holm_matches_the_textbook_example():
    # Holm (1979)-style worked example: p = .01, .04, .03, .005 at alpha .05 -> thresholds .0125, .0167, .025, .05
    rejected, adjusted = ni.holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert rejected == [True, False, False, True]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # step-down stops at the first failure even if a later p would pass its own threshold
    assert ni.holm([0.02, 0.026], 0.05)[0] == [True, True] and ni.holm([0.03, 0.026], 0.05)[0] == [False, False]


def test_seed_zero_is_refused():
    with pytest.raises(ValueError, match="0 as 'unseeded'"):
        ni.bootstrap_indices(10, 10, 0)


def test_score_interval_is_a_percentile_interval_inside_0_100():
    refs = ["a b c d e f"] * 30
    hyps = refs[:27] + ["a b c x e f"] * 3
    ci = ni.score_interval(hyps, refs, "bleu", 2000, 5)
    assert 0 <= ci["low"] <= ci["score"] <= ci["high"] <= 100
    assert ci["high"] == pytest.approx(100.0)  # a resample of perfect rows; mean +- half-width would pass 100


def test_noninferiority_labels_follow_the_margin_not_significance():
    """An identical model is non-inferior; a slightly worse one on a small set is inconclusive (not "as good");
    a much worse one is inferior. The old rule (not significantly worse = accepted) got the second wrong."""
    teacher, refs = _corpus(40, 3, 0.1)
    rng = random.Random(4)
    slightly = [
        h if rng.random() > 0.15 else refs[i].replace(refs[i].split()[0], "chien", 1) + " x"
        for i, h in enumerate(teacher)
    ]
    broken = ["chat chat chat." for _ in teacher]
    res = ni.noninferiority(
        {"s": teacher},
        {"same": {"s": list(teacher)}, "slightly": {"s": slightly}, "broken": {"s": broken}},
        {"s": refs},
        {"bleu": 1.0, "chrf": 0.5},
        alpha=0.05,
        n_resamples=2000,
        seed=11,
    )
    labels = {k: v["label"] for k, v in res["models"].items()}
    assert labels == {"same": "non-inferior", "slightly": "inconclusive", "broken": "inferior"}
    slight = res["models"]["slightly"]
    assert slight["tests"]["s/bleu"]["low"] < -1.0 < slight["tests"]["s/bleu"]["high"]
    assert slight["sentences_needed"] is None or slight["sentences_needed"] > 40
    assert res["rule"]["candidates"] == 3 and res["rule"]["interval_level"] == pytest.approx(1 - 0.1 / 3)
    for t in slight["tests"].values():
        assert t["p_noninferior_mc_error"] == pytest.approx(
            (t["p_noninferior"] * (1 - t["p_noninferior"]) / 2000) ** 0.5
        )
