"""Tiny teacher/student pairs of every supported seq2seq family, each with its family's real tokenizer class.

Built locally from the shipped demo corpus (no hub): the family tests and ``llmdiet.demo`` use them to check that
distillation, every quantization method and every engine handle each architecture the way transformers does.

| family | model class | tokenizer class | built from |
|---|---|---|---|
| t5 | T5ForConditionalGeneration | T5TokenizerFast | SentencePiece unigram trained here (``spiece.model``) |
| mt5 | MT5ForConditionalGeneration | T5TokenizerFast | the same |
| marian | MarianMTModel | MarianTokenizer | ``source.spm`` / ``target.spm`` (SentencePiece trained here) + ``vocab.json`` |
| bart | BartForConditionalGeneration | BartTokenizerFast | byte-level BPE trained here (``vocab.json`` + ``merges.txt``) |
| m2m100 | M2M100ForConditionalGeneration | M2M100Tokenizer | SentencePiece trained here + ``vocab.json``; language tokens |

Each teacher is trained for a few hundred steps on English->French so that greedy decoding produces varied,
non-trivial token sequences (random weights tend to repeat one token), and so that Marian's tied ``<pad>``
embedding row is no longer zero, as in every real trained Marian model. Students are random-init and smaller.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from llmdiet.demo import DEMO_EN_FR, DEMO_TRAIN_ROWS

logger = logging.getLogger(__name__)

FAMILIES = ("t5", "mt5", "marian", "bart", "m2m100")
T5_TASK_PREFIX = "translate English to French: "
SIZES = {"teacher": dict(d=64, layers=2, heads=4), "student": dict(d=32, layers=1, heads=2)}


def _corpus(column: str | None = None, rows: int = DEMO_TRAIN_ROWS) -> list[str]:
    lines = DEMO_EN_FR.read_text(encoding="utf-8").splitlines()[:rows]
    records = [json.loads(line) for line in lines]
    return [r[c] for r in records for c in ((column,) if column else ("en", "fr"))]


def _train_spm(texts: list[str], vocab_size: int, **options) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        hard_vocab_limit=False,
        **options,
    )
    return model.getvalue()


def _spm_pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def build_tokenizer(family: str, directory: Path):
    """Train and save ``family``'s tokenizer in ``directory``; returns it loaded with its own class."""
    directory.mkdir(parents=True, exist_ok=True)
    if family in ("t5", "mt5"):
        import transformers

        # transformers 5 keeps T5TokenizerFast as an (untyped) alias of T5Tokenizer
        T5TokenizerFast: Any = getattr(transformers, "T5TokenizerFast")  # noqa: B009

        # T5's id layout: pad 0, eos 1, unk 2 (no bos); the task prefix is in the corpus so it is not <unk>
        model = _train_spm(_corpus() + [T5_TASK_PREFIX] * 50, 500, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
        (directory / "spiece.model").write_bytes(model)
        tok = T5TokenizerFast.from_pretrained(str(directory), extra_ids=0)
    elif family == "marian":
        from transformers import MarianTokenizer

        source = _train_spm(_corpus("en"), 300)
        target = _train_spm(_corpus("fr"), 300)
        (directory / "source.spm").write_bytes(source)
        (directory / "target.spm").write_bytes(target)
        pieces = ["</s>", "<unk>"] + sorted(
            {p for p in _spm_pieces(source) + _spm_pieces(target)} - {"</s>", "<unk>", "<s>", "<pad>"}
        )
        vocab = {piece: i for i, piece in enumerate(pieces + ["<pad>"])}  # Marian: pad is the last id
        (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tok = MarianTokenizer(
            str(directory / "source.spm"),
            str(directory / "target.spm"),
            str(directory / "vocab.json"),
            source_lang="en",
            target_lang="fr",
        )
    elif family == "bart":
        from tokenizers import ByteLevelBPETokenizer
        from transformers import BartTokenizerFast

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            _corpus(), vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False
        )
        bpe.save_model(str(directory))
        tok = BartTokenizerFast(str(directory / "vocab.json"), str(directory / "merges.txt"))
    elif family == "m2m100":
        from transformers import M2M100Tokenizer

        model = _train_spm(_corpus(), 500)
        (directory / "sentencepiece.bpe.model").write_bytes(model)
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        pieces = specials + [p for p in _spm_pieces(model) if p not in specials]
        vocab = {piece: i for i, piece in enumerate(pieces)}
        (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        files = (str(directory / "vocab.json"), str(directory / "sentencepiece.bpe.model"))
        languages = list(M2M100Tokenizer(*files).lang_token_to_id)
        # as in the released M2M100 tokenizers: the language tokens are additional special tokens
        tok = M2M100Tokenizer(*files, src_lang="en", tgt_lang="fr", additional_special_tokens=languages)
    else:
        raise ValueError(f"unknown family {family!r} (families: {', '.join(FAMILIES)})")
    tok.save_pretrained(directory)
    return tok


def _t5_config(family: str, vocab: int, d: int, layers: int, heads: int, tok):
    from transformers import AutoConfig

    return AutoConfig.for_model(
        family,
        vocab_size=(vocab + 7) // 8 * 8,
        d_model=d,
        d_ff=2 * d,
        d_kv=d // heads,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )


def build_config(family: str, role: str, tok):
    """A tiny config of ``family`` for ``role`` ('teacher' or 'student') that matches ``tok``'s special ids."""
    from transformers import AutoConfig

    size = SIZES[role]
    d, layers, heads = size["d"], size["layers"], size["heads"]
    vocab = len(tok)
    if family == "m2m100":  # as released: the vocabulary, then the language tokens, then 8 "madeup" words
        vocab = max(vocab, 1 + max(tok.lang_token_to_id.values())) + getattr(tok, "num_madeup_words", 8)
    if family in ("t5", "mt5"):
        return _t5_config(family, vocab, d, layers, heads, tok)
    common = dict(
        vocab_size=vocab,
        d_model=d,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=2 * d,
        decoder_ffn_dim=2 * d,
        max_position_embeddings=128,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if family == "marian":
        return AutoConfig.for_model(
            "marian",
            decoder_start_token_id=tok.pad_token_id,
            decoder_vocab_size=vocab,
            forced_eos_token_id=None,
            **common,
        )
    if family == "bart":
        return AutoConfig.for_model(
            "bart",
            bos_token_id=tok.bos_token_id,
            decoder_start_token_id=tok.eos_token_id,
            forced_bos_token_id=tok.bos_token_id,
            forced_eos_token_id=tok.eos_token_id,
            **common,
        )
    if family == "m2m100":
        return AutoConfig.for_model(
            "m2m_100", bos_token_id=tok.bos_token_id, decoder_start_token_id=tok.eos_token_id, **common
        )
    raise ValueError(f"unknown family {family!r}")


def family_prefix(family: str) -> str:
    return T5_TASK_PREFIX if family in ("t5", "mt5") else ""


def build_family_pair(family: str, root: str | Path, teacher_steps: int = 300, seed: int = 0) -> dict[str, Path]:
    """Tokenizer, a briefly trained teacher and a random-init student of ``family`` under ``root``.

    Returns ``{"teacher": path, "student": path}``; both directories hold the model and its tokenizer. M2M100
    teachers get ``forced_bos_token_id`` = the French language token in their generation config (how a user
    selects the target language).
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from llmdiet.compat import t5_as_in_4x

    root = Path(root)
    tok = build_tokenizer(family, root / "tokenizer")
    paths: dict[str, Path] = {}
    for role, role_seed in (("teacher", seed), ("student", seed + 1)):
        torch.manual_seed(role_seed)
        model = t5_as_in_4x(AutoModelForSeq2SeqLM.from_config(build_config(family, role, tok)))
        if family == "m2m100":
            model.generation_config.forced_bos_token_id = tok.get_lang_id("fr")
        if role == "teacher" and teacher_steps:
            _train_en_fr(model, tok, family, teacher_steps, role_seed)
        paths[role] = root / role
        model.save_pretrained(paths[role])
        tok.save_pretrained(paths[role])
    return paths


def _train_en_fr(model, tok, family: str, steps: int, seed: int) -> None:
    """Teach ``model`` some English->French: the demo trainer on one direction, with the family's prefix."""
    from llmdiet.data import read_parallel_file
    from llmdiet.demo.build import train_on_demo_corpus

    prefix = family_prefix(family)
    rows = [(prefix + r.source, r.target) for r in read_parallel_file(DEMO_EN_FR, "en", "fr")[:DEMO_TRAIN_ROWS]]
    train_on_demo_corpus(model, tok, steps=steps, seed=seed, name=f"{family} teacher", rows=rows)
