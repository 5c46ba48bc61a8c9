"""Pure rules of llmdiet.languages: which prefix a family gets, how language codes resolve, what is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmdiet.config import ConfigError
from llmdiet.languages import apply_languages, default_prefix, direction_languages, language_codes

T5 = "translate English to French: "


@pytest.mark.parametrize(
    "model_type,asked,expected",
    [("t5", None, T5), ("mt5", None, T5), ("marian", None, ""), ("bart", None, ""), ("m2m_100", None, "")]
    + [("t5", "", ""), ("marian", "x: ", "x: "), (None, None, "")],
)
def test_the_t5_prefix_is_for_the_t5_family_only(model_type, asked, expected):
    assert default_prefix(model_type, T5, asked) == expected


class FakeMultilingual:
    """The attributes llmdiet reads from a tokenizer with language codes (M2M100 style)."""

    def __init__(self):
        self.lang_code_to_id = {"en": 10, "fr": 11, "de": 12}
        self.src_lang, self.tgt_lang = "en", "en"

    def get_lang_id(self, code):
        return self.lang_code_to_id[code]


class FakeNllb:
    def __init__(self):
        self.src_lang, self.tgt_lang = "eng_Latn", "eng_Latn"
        self.extra_special_tokens = ["eng_Latn", "fra_Latn", "fr_XX_unused_but_matching", "<mask>"]

    def convert_tokens_to_ids(self, token):
        return {"eng_Latn": 5, "fra_Latn": 6}[token]


def test_languages_resolve_and_set_the_tokenizer():
    tok = FakeMultilingual()
    assert apply_languages(tok, "de", "fr") == 11 and (tok.src_lang, tok.tgt_lang) == ("de", "fr")
    assert apply_languages(tok, None, None) is None  # the model's own generation config decides
    nllb = FakeNllb()
    assert language_codes(nllb)[:2] == ["eng_Latn", "fra_Latn"]
    assert apply_languages(nllb, "eng_Latn", "fra_Latn") == 6 and nllb.tgt_lang == "fra_Latn"


def test_unknown_or_inapplicable_languages_are_one_line():
    with pytest.raises(ConfigError, match="--target_lang xx: not a language of FakeMultilingual .*en, fr, de"):
        apply_languages(FakeMultilingual(), None, "xx")
    with pytest.raises(ConfigError, match="--source_lang en: SimpleNamespace has no language tokens"):
        apply_languages(SimpleNamespace(), "en", None)


def test_direction_languages():
    assert direction_languages("en-fr") == ("en", "fr")
    assert direction_languages(None) == (None, None) and direction_languages("enfr") == (None, None)
