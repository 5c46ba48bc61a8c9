"""Corpus metrics for translations: BLEU and chrF (sacrebleu), ROUGE-L F1 (rouge_score).

Pure functions, no hub-fetched metric code. The numbers are exactly the reference tools':

* **BLEU** — ``sacrebleu.metrics.BLEU()`` with its defaults (tokenizer ``13a``, exponential
  smoothing, mixed case): the same number as ``sacrebleu REF -i HYP -m bleu``.
* **chrF** — ``sacrebleu.metrics.CHRF()`` with its defaults (character 6-grams, no word n-grams,
  beta 2): the same number as ``sacrebleu REF -i HYP -m chrf``.
  Both signatures are returned so that every stored score says how it was computed.
* **ROUGE-L** — ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeWordTokenizer())``.
  rouge_score's default tokenizer keeps only ``[a-z0-9]`` and so cuts French words at every
  accented letter ("château" -> "ch", "teau") and drops Korean entirely. :class:`UnicodeWordTokenizer`
  instead applies Unicode NFC, lower-cases, and keeps every run of Unicode word characters
  (``\\w+``: letters of any script, digits, underscore); no stemming (Porter is English-only).
  The corpus ROUGE-L is the **mean over sentences of the per-sentence ROUGE-L F1, times 100**
  (rouge_score scores sentence pairs only; its ``BootstrapAggregator`` estimates the same mean by
  resampling, which we do not need).

All three scores are on a 0–100 scale.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from rouge_score import rouge_scorer
from rouge_score.tokenizers import Tokenizer
from sacrebleu.metrics import BLEU, CHRF

from llmdiet.constants import BOOTSTRAP_METRICS, SCORED_METRICS


def sacrebleu_metric(name: str) -> Any:
    """sacreBLEU's scorer for ``name`` with its default settings (the ones every llmdiet score uses)."""
    if name not in BOOTSTRAP_METRICS:
        raise ValueError(f"unknown metric '{name}' (bleu or chrf)")
    return BLEU() if name == "bleu" else CHRF()


ROUGE_TOKENIZER_NAME = "unicode-words-v1 (NFC, lowercase, regex \\w+ over Unicode, no stemming)"

_WORD = re.compile(r"\w+")


class UnicodeWordTokenizer(Tokenizer):
    """rouge_score tokenizer that keeps accented and non-Latin letters (see module docstring)."""

    name = ROUGE_TOKENIZER_NAME

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(unicodedata.normalize("NFC", text).lower())


def _check_pairs(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("cannot score an empty list of translations")


UNICODE_FORM: Literal["NFC"] = "NFC"
SIGNATURE_SUFFIX = f"|unicode:{UNICODE_FORM}"


def normalize(texts: list[str]) -> list[str]:
    """Unicode NFC for hypotheses and references alike: "é" typed as e + combining accent (NFD, as some corpora
    and macOS file names store it) and as one code point (NFC, as models emit it) are the same text, but
    sacreBLEU compares code points (an NFD reference against NFC output scored BLEU 55.5 instead of 100)."""
    return [unicodedata.normalize(UNICODE_FORM, t) for t in texts]


def bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU (0–100) and its signature (sacreBLEU's, plus ``|unicode:NFC``); one reference per hypothesis."""
    _check_pairs(hypotheses, references)
    metric = BLEU()
    score = metric.corpus_score(normalize(hypotheses), [normalize(references)]).score
    return score, str(metric.get_signature()) + SIGNATURE_SUFFIX


def chrf(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus chrF (0–100) and its signature (sacreBLEU's, plus ``|unicode:NFC``); one reference per hypothesis."""
    _check_pairs(hypotheses, references)
    metric = CHRF()
    score = metric.corpus_score(normalize(hypotheses), [normalize(references)]).score
    return score, str(metric.get_signature()) + SIGNATURE_SUFFIX


def rouge_l_per_sentence(hypotheses: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F1 (0–1) of each hypothesis against its reference, with :class:`UnicodeWordTokenizer`."""
    _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeWordTokenizer())
    # rouge_score's argument order is (target, prediction)
    return [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]


def rouge_l(hypotheses: list[str], references: list[str]) -> float:
    """Corpus ROUGE-L: mean per-sentence F1 × 100."""
    scores = rouge_l_per_sentence(hypotheses, references)
    return 100.0 * sum(scores) / len(scores)


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """``{"bleu", "chrf", "rougeL"}`` (0–100) plus ``bleu_signature``, ``chrf_signature``, ``rouge_tokenizer``."""
    bleu_score, bleu_sig = bleu(hypotheses, references)
    chrf_score, chrf_sig = chrf(hypotheses, references)
    return {
        "bleu": bleu_score,
        "chrf": chrf_score,
        "rougeL": rouge_l(hypotheses, references),
        "bleu_signature": bleu_sig,
        "chrf_signature": chrf_sig,
        "rouge_tokenizer": ROUGE_TOKENIZER_NAME,
        "rouge_aggregation": "mean of per-sentence ROUGE-L F1 x 100",
        "num_sentences": len(hypotheses),
    }


# ----------------------------------------------------------------------------- evaluate modules

METRIC_MODULES = {"bleu": "llmdiet_bleu", "chrf": "llmdiet_chrf", "rougeL": "llmdiet_rouge_l"}


def metric_module_path(name: str) -> str:
    """Path of llmdiet's ``evaluate`` metric module ``name`` (bleu, chrf, rougeL), for ``evaluate.load(path)``:
    the modules ship inside the package and load without a network."""
    from pathlib import Path

    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric '{name}' (use one of {sorted(METRIC_MODULES)})")
    return str(Path(__file__).parent / "metric_modules" / METRIC_MODULES[name])


def evaluate_metric_class(key: str, class_name: str, description: str):
    """The ``evaluate.Metric`` subclass of one of llmdiet's metrics (each module file under ``metric_modules``
    is one line calling this: ``evaluate.load`` needs a script per metric, the code lives here)."""
    import datasets
    import evaluate

    inputs = (
        f"Args:\n    predictions: list of hypothesis strings.\n    references: list of reference strings, or of "
        f"one-element lists.\nReturns:\n    {{'{key}': score on a 0-100 scale, plus how it was computed}}"
    )

    def _info(self):
        string = datasets.Value("string")
        return evaluate.MetricInfo(
            description=description,
            citation="",
            inputs_description=inputs,
            features=[
                datasets.Features({"predictions": string, "references": string}),
                datasets.Features({"predictions": string, "references": datasets.Sequence(string)}),
            ],
        )

    def _compute(self, predictions, references):
        refs = [r[0] if isinstance(r, (list, tuple)) else r for r in references]
        return metric_for_evaluate(key, list(predictions), refs)

    return type(class_name, (evaluate.Metric,), {"_info": _info, "_compute": _compute, "__doc__": description})


def metric_for_evaluate(key: str, hypotheses: list[str], references: list[str]) -> dict:
    """What the ``evaluate`` modules return: the score and how it was computed."""
    if key == "bleu":
        score, signature = bleu(hypotheses, references)
        return {"bleu": score, "signature": signature}
    if key == "chrf":
        score, signature = chrf(hypotheses, references)
        return {"chrf": score, "signature": signature}
    return {"rougeL": rouge_l(hypotheses, references), "tokenizer": ROUGE_TOKENIZER_NAME}


def generated_ids(predictions, pad_token_id: int) -> list[list[int]]:
    """A Seq2SeqTrainer's generated ids (an array, or a tuple whose first item is one, as transformers 5 may give)
    as lists of ints, with the -100 padding replaced by the pad id."""
    import numpy as np

    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        first = np.asarray(predictions[0])
        predictions = first if first.ndim == 2 else predictions
    array = np.asarray(predictions)
    return np.where(array < 0, pad_token_id, array).astype(np.int64).tolist()


def seq2seq_compute_metrics(tokenizer, metric_names=SCORED_METRICS):
    """A ``compute_metrics`` for a user's own ``Seq2SeqTrainer(predict_with_generate=True)`` built on the
    ``evaluate`` modules above (references decoded from the labels: pass raw strings where you have them)."""
    import evaluate

    modules = {name: evaluate.load(metric_module_path(name)) for name in metric_names}

    def compute_metrics(prediction) -> dict:
        preds = generated_ids(prediction.predictions, tokenizer.pad_token_id)
        labels = generated_ids(prediction.label_ids, tokenizer.pad_token_id)
        hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        return {name: module.compute(predictions=hyps, references=refs)[name] for name, module in modules.items()}

    return compute_metrics


# ----------------------------------------------------------------------------- degenerate output

DEGENERATE_WARN_SHARE = 0.10
REPEAT_TIMES = 3  # an n-gram repeated this many times in a row is a runaway loop
REPEAT_MAX_N = 8


def repeats_ngram(words: list[str], times: int = REPEAT_TIMES, max_n: int = REPEAT_MAX_N) -> bool:
    """Whether some n-gram (n <= max_n words) occurs ``times`` times in a row ("le rapport le rapport le rapport")."""
    for n in range(1, max_n + 1):
        for start in range(0, len(words) - n * times + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, times)):
                return True
    return False


def degenerate_outputs(
    hypotheses: list[str],
    min_tokens: int = 4,
    max_token_share: float = 0.5,
    generated_tokens: list[int] | None = None,
    max_new_tokens: int | None = None,
) -> dict:
    """Counts of degenerate hypotheses, the usual sign of a runaway decoder or a broken quantized model: empty
    ones; ones that hit ``max_new_tokens`` (cut off mid-loop); ones that repeat an n-gram 3+ times in a row; and
    ones where one word is over ``max_token_share`` of at least ``min_tokens`` words. A hypothesis is counted
    once (``share``); ``warning`` is set above ``DEGENERATE_WARN_SHARE`` of the set."""
    from collections import Counter

    empty = hit_cap = looping = dominant = flagged = 0
    for i, h in enumerate(hypotheses):
        words = h.split()
        is_empty = not words
        capped = bool(max_new_tokens and generated_tokens is not None and generated_tokens[i] >= max_new_tokens)
        loop = repeats_ngram(words)
        one_word = len(words) >= min_tokens and Counter(words).most_common(1)[0][1] > max_token_share * len(words)
        empty, hit_cap, looping, dominant = empty + is_empty, hit_cap + capped, looping + loop, dominant + one_word
        flagged += is_empty or capped or loop or one_word
    share = flagged / len(hypotheses) if hypotheses else 0.0
    return {
        "empty": empty,
        "hit_max_new_tokens": hit_cap if generated_tokens is not None else None,
        "repeated_ngram": looping,
        "repetitive": dominant,
        "flagged": flagged,
        "share": share,
        "warning": share > DEGENERATE_WARN_SHARE,
        "rule": f"empty; or reached max_new_tokens ({max_new_tokens}); or an n-gram of <= {REPEAT_MAX_N} words "
        f"{REPEAT_TIMES}+ times in a row; or >= {min_tokens} words with one word over "
        f"{max_token_share:.0%} of them; warning above {DEGENERATE_WARN_SHARE:.0%} of the set",
    }
