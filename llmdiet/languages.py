"""Source/target languages and task prefixes across model families, decided in one place.

* **T5 family** (t5, mt5, umt5, longt5): the direction is a text prefix (``translate English to French: ``); no
  language tokens. Only these models get a task prefix by default; every other family gets none unless one is
  asked for, and ``""`` always means none.
* **Multilingual tokenizers** (M2M100, NLLB, mBART-50): the source language is the tokenizer's ``src_lang`` (a
  language token the tokenizer adds to every source), the target language is the first decoder token, forced at
  generation (``forced_bos_token_id``; CTranslate2: ``target_prefix``). Language codes are the tokenizer's own
  (``fr`` for M2M100, ``fra_Latn`` for NLLB, ``fr_XX`` for mBART-50); a two-letter code also finds ``__fr__`` and
  ``fr_XX``.
* **One-direction models** (Marian opus-mt, BART): no language option applies; asking for one is refused.
"""

from __future__ import annotations

from llmdiet.compat import T5_TYPES
from llmdiet.config import ConfigError


def uses_task_prefix(model_type: str | None) -> bool:
    """Whether ``model_type`` selects its task with a text prefix (the T5 family)."""
    return (model_type or "") in T5_TYPES


def default_prefix(model_type: str | None, set_prefix: str, asked: str | None = None) -> str:
    """The prefix to put before each source: ``asked`` when given (``""`` = none), else ``set_prefix`` (an eval
    set's or a preset's T5 prefix) for the T5 family and nothing for other families."""
    if asked is not None:
        return asked
    return set_prefix if uses_task_prefix(model_type) else ""


def language_codes(tokenizer) -> list[str]:
    """The language codes ``tokenizer`` knows (empty: not a multilingual tokenizer)."""
    for attribute in ("lang_code_to_id", "lang_code_to_token"):
        table = getattr(tokenizer, attribute, None)
        if isinstance(table, dict) and table:
            return list(table)
    if hasattr(tokenizer, "src_lang"):  # NLLB / mBART fast tokenizers: codes are special tokens
        # additional_special_tokens (transformers 4.x) or extra_special_tokens (5.x)
        for attribute in ("additional_special_tokens", "extra_special_tokens"):
            tokens = getattr(tokenizer, attribute, None) or []
            codes = [t for t in tokens if isinstance(t, str) and "_" in t]
            if codes:
                return codes
    return []


def _resolve(tokenizer, code: str, flag: str) -> str:
    codes = language_codes(tokenizer)
    if not codes:
        raise ConfigError(
            f"{flag} {code}: {type(tokenizer).__name__} has no language tokens (one-direction model; T5 models take "
            "the direction from --source_prefix / the eval set's prefix)"
        )
    if code in codes:
        return code
    matches = [c for c in codes if c.startswith(f"{code}_") or c == f"__{code}__"]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(codes[:12]) + (" ..." if len(codes) > 12 else "")
    raise ConfigError(f"{flag} {code}: not a language of {type(tokenizer).__name__} (its codes: {shown})")


def language_token_id(tokenizer, code: str) -> int:
    if hasattr(tokenizer, "get_lang_id"):  # M2M100
        return int(tokenizer.get_lang_id(code))
    return int(tokenizer.convert_tokens_to_ids(code))


def apply_languages(tokenizer, source_lang: str | None, target_lang: str | None) -> int | None:
    """Set ``tokenizer``'s source/target languages; returns the id to force as the first generated token (None when
    no target language is asked for: the model's own generation config decides)."""
    if source_lang:
        tokenizer.src_lang = _resolve(tokenizer, source_lang, "--source_lang")
    if not target_lang:
        return None
    code = _resolve(tokenizer, target_lang, "--target_lang")
    if hasattr(tokenizer, "tgt_lang"):
        tokenizer.tgt_lang = code
    return language_token_id(tokenizer, code)


def direction_languages(direction: str | None) -> tuple[str | None, str | None]:
    """``"en-fr"`` -> ``("en", "fr")``; anything else -> ``(None, None)``."""
    parts = (direction or "").split("-")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else (None, None)
