"""Metrics equal the reference tools: the sacrebleu command line and rouge_score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer
from rouge_score.tokenizers import DefaultTokenizer

from llmdiet.evaluation.metrics import (
    ROUGE_TOKENIZER_NAME,
    UnicodeWordTokenizer,
    corpus_scores,
    rouge_l,
    rouge_l_per_sentence,
)

SACREBLEU = Path(sys.executable).parent / "sacrebleu"

REFERENCES = [
    "Le château est très beau.",
    "Les élèves préparent un gâteau à la crème.",
    "Où est la bibliothèque ?",
    "Il a reçu une lettre de sa sœur en décembre.",
    "Nous achetons du pain aujourd'hui.",
]
HYPOTHESES = [
    "Le château est beau.",
    "Les eleves preparent un gâteau à la crème.",
    "Où est la bibliothèque?",
    "",
    "Nous achetons du pain aujourd'hui.",
]


def sacrebleu_cli(hypotheses: list[str], references: list[str], tmp_path: Path) -> dict:
    """BLEU and chrF (4 decimals) and signatures from the ``sacrebleu`` command line."""
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(references) + "\n", encoding="utf-8")
    hyp.write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    out = subprocess.run(
        [str(SACREBLEU), str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-w", "4", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    bleu, chrf = json.loads(out.stdout)
    return {
        "bleu": bleu["score"],
        "chrf": chrf["score"],
        "bleu_signature": bleu["signature"],
        "chrf_signature": chrf["signature"],
    }


def test_bleu_and_chrf_equal_the_sacrebleu_command_line(tmp_path):
    ours = corpus_scores(HYPOTHESES, REFERENCES)
    cli = sacrebleu_cli(HYPOTHESES, REFERENCES, tmp_path)
    assert ours["bleu"] == pytest.approx(cli["bleu"], abs=5e-5)
    assert ours["chrf"] == pytest.approx(cli["chrf"], abs=5e-5)
    assert ours["bleu_signature"] == cli["bleu_signature"] + "|unicode:NFC"  # sacreBLEU's, plus the normalisation
    assert ours["chrf_signature"] == cli["chrf_signature"] + "|unicode:NFC"
    assert "tok:13a" in ours["bleu_signature"] and "nc:6|nw:0" in ours["chrf_signature"]
    assert 0 < ours["bleu"] < 100 and 0 < ours["chrf"] < 100


def test_rouge_l_equals_rouge_score_with_the_same_tokenizer():
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeWordTokenizer())
    expected = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPOTHESES, REFERENCES)]
    assert rouge_l_per_sentence(HYPOTHESES, REFERENCES) == expected
    assert rouge_l(HYPOTHESES, REFERENCES) == pytest.approx(100 * sum(expected) / len(expected))
    assert corpus_scores(HYPOTHESES, REFERENCES)["rouge_tokenizer"] == ROUGE_TOKENIZER_NAME


def test_french_example_with_accents_scores_as_expected():
    # reference words: le château est très beau (5); hypothesis: le château est beau (4); LCS = 4
    # P = 4/4, R = 4/5, F1 = 2PR/(P+R) = 8/9
    assert rouge_l(["Le château est beau."], ["Le château est très beau."]) == pytest.approx(800 / 9)
    # identical accented text is a perfect score on every metric
    perfect = corpus_scores(REFERENCES, REFERENCES)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert perfect["rougeL"] == pytest.approx(100)
    # a missing accent is a different word: 3 of 4 words match
    assert rouge_l(["le chateau est beau"], ["le château est beau"]) == pytest.approx(75)


def test_default_rouge_tokenizer_would_mangle_french_and_ours_does_not():
    assert DefaultTokenizer().tokenize("château très") == ["ch", "teau", "tr", "s"]  # the trap (GUIDE §5)
    assert UnicodeWordTokenizer().tokenize("Château TRÈS, d'été!") == ["château", "très", "d", "été"]
    assert UnicodeWordTokenizer().tokenize("제 여동생은 빵을 삽니다.") == ["제", "여동생은", "빵을", "삽니다"]
    # NFD input (e + combining accent) is the same word as NFC input
    assert UnicodeWordTokenizer().tokenize("e\u0301te\u0301") == UnicodeWordTokenizer().tokenize("\u00e9t\u00e9")


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        corpus_scores([], [])


def test_degenerate_outputs_are_counted_and_flagged():
    from llmdiet.evaluation.metrics import degenerate_outputs

    good = ["Le chat dort.", "Les enfants lisent un livre.", "Il pleut.", "Ma sœur achète du pain."] * 5
    result = degenerate_outputs(good)
    assert (result["empty"], result["repetitive"], result["warning"]) == (0, 0, False)
    broken = good[:15] + ["", "  ", "le le le le le", "de de de la de", "un deux trois quatre"]
    result = degenerate_outputs(broken)
    assert (result["empty"], result["repetitive"]) == (2, 2) and result["share"] == 4 / 20 and result["warning"]


def test_nfd_references_score_like_nfc_output():
    """Same text, two Unicode forms: BLEU 55.54 / chrF 84.14 before; now 100 (NFC for both, in the signature)."""
    import unicodedata

    from llmdiet.evaluation.metrics import corpus_scores
    from llmdiet.evaluation.noninferiority import score_interval

    hyps = ["Ma sœur écrit une lettre à Paris.", "Le château et l'été."]
    refs = [unicodedata.normalize("NFD", h) for h in hyps]
    assert refs != hyps
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert scores["bleu_signature"].endswith("|unicode:NFC")
    assert score_interval(hyps, refs, "bleu", 200, 3)["score"] == pytest.approx(100.0)
