"""What every benchmark runs on: the tokenizer, the source sentences and the random-init models.

* **Tokenizer.** There is no flan-T5 tokenizer offline, so the benchmarks use the demo BPE
  tokenizer (``llmdiet.demo.build_demo_tokenizer``, 600 tokens). Its ids are valid for every
  flan-T5 shape (vocabulary 32128); speed does not depend on which ids are fed.
* **Sources.** ``fixed_length_sources(n, 40)`` builds ``n`` prefixed English sources of exactly
  40 tokens each (``</s>`` included) from the demo corpus, so every backend and batch sees the same
  work. ``varied_length_sources(n)`` spreads the lengths over 10 to 60 tokens, for the
  harness-overhead benchmark where length sorting matters.
* **Models.** ``save_random_model(shape, dir)`` writes an architecture-exact random-init flan-T5
  (``llmdiet.shapes.random_flan_t5``) with the tokenizer, as a normal ``save_pretrained``
  directory that every backend and ``llmdiet quantize`` can load. Random weights give random
  tokens and never stop early because the benchmarks force ``min_new_tokens = max_new_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmdiet.constants import REFERENCE_PREFIX
from llmdiet.demo import DEMO_EN_FR, DEMO_TRAIN_ROWS

PREFIX = REFERENCE_PREFIX
# Rows after the demo training data: the eval rows [1000, 1200) and the spare rows [1200, 1344).
SOURCE_ROWS = slice(DEMO_TRAIN_ROWS, None)


def load_tokenizer(path: str | Path | None = None):
    """The demo tokenizer: loaded from ``path`` when it holds one, else built (about a second) and saved there."""
    from transformers import AutoTokenizer

    from llmdiet.demo import build_demo_tokenizer

    if path is not None and (Path(path) / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(path))
    tokenizer = build_demo_tokenizer()
    if path is not None:
        tokenizer.save_pretrained(str(path))
    return tokenizer


def demo_english(rows: slice = SOURCE_ROWS) -> list[str]:
    lines = DEMO_EN_FR.read_text(encoding="utf-8").splitlines()[rows]
    return [json.loads(line)["en"] for line in lines]


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


DISTINCT_SOURCES = 256  # beyond this, sources repeat (building them costs tokenizer calls, not worth more)


def fixed_length_sources(tokenizer, n: int, tokens: int = 40) -> list[str]:
    """``n`` prefixed sources of exactly ``tokens`` tokens (``</s>`` included); distinct up to 256, then cycled."""
    distinct = sources_of_lengths(tokenizer, [tokens] * min(n, DISTINCT_SOURCES))
    return [distinct[i % len(distinct)] for i in range(n)]


def varied_length_sources(tokenizer, n: int, low: int = 10, high: int = 60) -> list[str]:
    """``n`` prefixed sources whose lengths spread evenly over ``[low, high]`` tokens, in a mixed order."""
    span = high - low + 1
    step = 37 if span % 37 else 1  # a stride coprime with the span visits every length in a mixed order
    return sources_of_lengths(tokenizer, [low + (i * step) % span for i in range(n)])


def sources_of_lengths(tokenizer, lengths: list[int]) -> list[str]:
    """One prefixed source of exactly ``lengths[i]`` tokens (``</s>`` included) per entry.

    Each source is the prefix followed by consecutive demo sentences, words appended until the
    count is reached; the last word is cut to single characters when a whole word overshoots.
    """
    sentences = demo_english()
    words = " ".join(sentences).split()
    out: list[str] = []
    start = 0
    for tokens in lengths:
        if tokens < token_count(tokenizer, PREFIX.rstrip()) + 1:
            raise ValueError(
                f"a source needs more than the prefix's {token_count(tokenizer, PREFIX.rstrip())} tokens, got {tokens}"
            )
        text = PREFIX.rstrip()
        i = start
        while token_count(tokenizer, text) < tokens:
            word = words[i % len(words)]
            candidate = f"{text} {word}"
            if token_count(tokenizer, candidate) <= tokens:
                text = candidate
            else:  # add the word character by character until the count is exact
                piece = ""
                for ch in word:
                    if token_count(tokenizer, f"{text} {piece + ch}") > tokens:
                        break
                    piece += ch
                text = f"{text} {piece}" if piece else text + " ."
            i += 1
        if token_count(tokenizer, text) != tokens:
            raise RuntimeError(
                f"could not build a source of exactly {tokens} tokens (got {token_count(tokenizer, text)})"
            )
        out.append(text)
        start = i + 7  # the next source starts elsewhere in the corpus, so sources differ
    return out


# The demo's toy sizes, for the smoke test of the runner (tests/test_bench.py); not benchmark shapes.
TINY_SHAPES = {"tiny-teacher": "teacher", "tiny-student": "student"}


def known_shapes() -> list[str]:
    from llmdiet.shapes import FLAN_T5_SHAPES

    return list(FLAN_T5_SHAPES) + list(TINY_SHAPES)


def shape_parameters(shape: str, tokenizer=None) -> int:
    from llmdiet.shapes import FLAN_T5_PARAMS

    if shape in FLAN_T5_PARAMS:
        return FLAN_T5_PARAMS[shape]
    return sum(p.numel() for p in build_model(shape, tokenizer).parameters())


def build_model(shape: str, tokenizer, seed: int = 0):
    """A random-init model: an architecture-exact flan-T5 shape, or a demo toy size (``tiny-*``)."""
    from llmdiet.demo import build_tiny_t5
    from llmdiet.shapes import random_flan_t5

    if shape in TINY_SHAPES:
        return build_tiny_t5(TINY_SHAPES[shape], len(tokenizer), seed=seed).eval()
    if shape not in known_shapes():
        raise ValueError(f"unknown shape '{shape}' (known: {', '.join(known_shapes())})")
    return random_flan_t5(shape, seed=seed)


def save_random_model(shape: str, out: str | Path, tokenizer, seed: int = 0) -> Path:
    """Write random-init ``shape`` (e.g. ``flan-t5-large``) plus the tokenizer to ``out``; reused if present."""
    import gc

    out = Path(out)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    model = build_model(shape, tokenizer, seed=seed)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del model
    gc.collect()
    return out


# The natural-length workload's distribution (bench/rounds.py, batch "16-natural"). ASSUMED, not fitted: no corpus
# of the study's language pair with a T5 tokenizer is available offline. Sentence lengths of news-like corpora are
# roughly log-normal; these parameters put the median English source at 28 tokens (10th-90th percentile about
# 15-53) and the French output at 1.15x its source (x/÷ 1.17), clipped to [6, 120].
NATURAL_SOURCE_MEDIAN, NATURAL_SOURCE_SIGMA = 28.0, 0.5
NATURAL_RATIO_MEDIAN, NATURAL_RATIO_SIGMA = 1.15, 0.15
NATURAL_MIN, NATURAL_MAX = 6, 120


def natural_lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """``n`` (source tokens, output tokens) pairs drawn from the distribution above (seeded: every run the same)."""
    import math
    import random

    rng = random.Random(seed)
    sources, outputs = [], []
    for _ in range(n):
        source = rng.lognormvariate(math.log(NATURAL_SOURCE_MEDIAN), NATURAL_SOURCE_SIGMA)
        ratio = rng.lognormvariate(math.log(NATURAL_RATIO_MEDIAN), NATURAL_RATIO_SIGMA)
        sources.append(int(min(NATURAL_MAX, max(NATURAL_MIN, round(source)))))
        outputs.append(int(min(NATURAL_MAX, max(NATURAL_MIN, round(source * ratio)))))
    return sources, outputs
