"""Vocabulary trimming (Abdaoui et al. 2020, "Load What You Need"): keep the tokens a corpus uses.

The kept ids are every id the tokenizer gives ``--vocab_file``'s texts (sources with the task prefix, and
targets), the special tokens, and, for BPE tokenizers, every intermediate symbol their merges build on the way
(so those merges still fire). Kept tokens keep their relative order (the special ids 0, 1, 2 stay), and the
embedding, ``lm_head``, config ids and ``tokenizer.json`` are remapped to the new ids:

- a Unigram (SentencePiece) vocabulary loses its other pieces: the best segmentation of a kept text used only
  kept pieces, so it is still the best one;
- a BPE vocabulary loses its other pieces and the merges that build them: no dropped merge fires on a kept text.

On texts of the kept corpus the tokenizer gives the same pieces and the model the same outputs wherever its
original output used kept tokens only (tested on the demo and on mT5). Other text may tokenize differently.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from llmdiet.config import ConfigError
from llmdiet.data import read_parallel_file


def _backend_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("--method vocab needs a fast (tokenizers) tokenizer with a tokenizer.json")
    return json.loads(backend.to_str())


def _bpe_symbols(word: str, ranks: dict[tuple[str, str], int]) -> set[str]:
    """Every symbol BPE builds while merging ``word`` (its characters, intermediates and final pieces)."""
    parts = list(word)
    seen = set(parts)
    while len(parts) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best = min((p for p in pairs if p[0] is not None), default=None)
        if best is None:
            break
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        seen.add(parts[i])
    return seen


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    pairs = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    return [(a, b) for a, b in pairs]


def kept_ids(tokenizer, texts: list[str]) -> list[int]:
    """Sorted ids the texts need (see the module docstring), special tokens included."""
    spec = _backend_json(tokenizer)
    ids = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 256):
        for row in tokenizer(texts[start : start + 256])["input_ids"]:
            ids.update(row)
    if spec["model"]["type"] == "BPE":
        vocab = spec["model"]["vocab"]
        ranks = {pair: rank for rank, pair in enumerate(_merge_pairs(spec["model"]))}
        backend = tokenizer.backend_tokenizer
        words: set[str] = set()
        for text in texts:
            normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
            pre = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [(normalized, None)]
            words.update(w for w, _ in pre)
        for word in words:
            ids.update(vocab[s] for s in _bpe_symbols(word, ranks) if s in vocab)
    elif spec["model"]["type"] != "Unigram":
        raise ConfigError(f"--method vocab handles Unigram and BPE tokenizers, not {spec['model']['type']}")
    return sorted(ids)


def remapped_tokenizer_json(spec: dict, kept: list[int]) -> dict:
    """``tokenizer.json`` with only the kept pieces, renumbered 0..K-1 in their old order."""
    new_id = {old: new for new, old in enumerate(kept)}
    model = spec["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][old] for old in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        pieces = {piece: i for piece, i in model["vocab"].items() if i in new_id}
        model["vocab"] = {piece: new_id[i] for piece, i in sorted(pieces.items(), key=lambda kv: kv[1])}
        merges = [(a, b) for a, b in _merge_pairs(model) if a in pieces and b in pieces and a + b in pieces]
        as_text = model.get("merges") and isinstance(model["merges"][0], str)
        model["merges"] = [f"{a} {b}" if as_text else [a, b] for a, b in merges]
    for token in spec.get("added_tokens") or []:
        token["id"] = new_id[token["id"]]
    post = spec.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():
        entry["ids"] = [new_id[i] for i in entry["ids"]]
    return spec


def _remap_config_ids(config, new_id: dict[int, int]) -> None:
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            setattr(config, key, new_id[value])
        elif isinstance(value, list):
            setattr(config, key, [new_id[v] for v in value])


def trimmed_tokenizer(tokenizer, spec: dict):
    """The tokenizer rebuilt around the remapped tokenizer.json (saved and reloaded, as a user would load it)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for stale in ("spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt", "added_tokens.json"):
            (Path(tmp) / stale).unlink(missing_ok=True)  # the full vocabulary: tokenizer.json defines it now
        config_file = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config.pop("added_tokens_decoder", None)  # rebuilt from tokenizer.json's added_tokens
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        # the generic class's default inputs include token_type_ids (transformers 4.x), which generate() refuses
        config["model_input_names"] = list(tokenizer.model_input_names)
        config_file.write_text(json.dumps(config, indent=2))
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
        return AutoTokenizer.from_pretrained(tmp)


def prune_vocab(model, tokenizer, settings, calibration):
    if not settings.vocab_file:
        raise ConfigError("--method vocab needs --vocab_file: the parallel files whose texts must keep their tokens")
    texts = [calibration.prefix + "x"]  # the task prefix's pieces
    for path in settings.vocab_file:
        rows = read_parallel_file(path, calibration.source_column, calibration.target_column)
        for row in rows[: settings.max_vocab_samples]:
            texts += [calibration.prefix + row.source, row.target]
    kept = kept_ids(tokenizer, texts)
    kept = [i for i in kept if i < model.get_input_embeddings().weight.shape[0]]
    new_id = {old: new for new, old in enumerate(kept)}
    index = torch.tensor(kept)
    old_size = model.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        shared = torch.nn.Embedding.from_pretrained(model.get_input_embeddings().weight[index].clone(), freeze=False)
        head = torch.nn.Linear(shared.weight.shape[1], len(kept), bias=False)
        head.weight.copy_(model.get_output_embeddings().weight[index])
    model.set_input_embeddings(shared)
    model.set_output_embeddings(head)
    model.config.vocab_size = len(kept)
    _remap_config_ids(model.config, new_id)
    if getattr(model, "generation_config", None) is not None:
        _remap_config_ids(model.generation_config, new_id)
    report = {
        "vocab_size": [old_size, len(kept)],
        "vocab_files": list(settings.vocab_file),
        "vocab_rows": settings.max_vocab_samples,
        "kept": "ids of the files' texts (sources with the prefix, targets), special tokens, BPE intermediates",
    }
    return model, trimmed_tokenizer(tokenizer, remapped_tokenizer_json(_backend_json(tokenizer), kept)), report
