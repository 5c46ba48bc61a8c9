"""Names the whole package agrees on: the reference study's models and data, task prefixes, default eval sets.

Every default that a config, a preset, a model card or a benchmark needs is read from here, so that changing
the reference study (or adding a language pair) is one edit.
"""

from __future__ import annotations

REFERENCE_TEACHER = "google/flan-t5-large"
REFERENCE_STUDENT = "google/flan-t5-small"
REFERENCE_DATASET = "Nicolas-BZRD/Parallel_Global_Voices_English_French"
REFERENCE_SOURCE_LANG, REFERENCE_TARGET_LANG = "en", "fr"

LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ko": "Korean",
    "ja": "Japanese",
    "zh": "Chinese",
}


def t5_prefix(source: str, target: str) -> str:
    """The (flan-)T5 task prefix of a direction: ``t5_prefix("en", "fr") == "translate English to French: "``."""
    names = [LANGUAGE_NAMES.get(code, code) for code in (source, target)]
    return f"translate {names[0]} to {names[1]}: "


REFERENCE_PREFIX = t5_prefix(REFERENCE_SOURCE_LANG, REFERENCE_TARGET_LANG)

# the named eval sets of the reference study (in eval_sets/) and of the offline demo
REFERENCE_TEST_SETS = ("pgv-en-fr", "pgv-fr-en")
REFERENCE_DEV_SET = "pgv-en-fr-dev"
DEMO_TEST_SETS = ("demo-en-fr", "demo-fr-en", "demo-ko-en")
DEMO_DEV_SET = "demo-en-fr-dev"

# rows of the reference dataset: [0, 10000) train, [10000, 12000) the test set pgv-en-fr, [12000, 13000) dev
REFERENCE_TRAIN_ROWS = 10_000
REFERENCE_DEV_START = 12_000

# kd's token divergences (llmdiet.distill.losses.token_divergence implements each one)
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")

# the metrics every eval run reports, and the sacreBLEU ones the bootstrap statistics resample
SCORED_METRICS = ("bleu", "chrf", "rougeL")
BOOTSTRAP_METRICS = ("bleu", "chrf")
