"""The embedded offline demo: a tokenizer, a tiny teacher and a tiny student, built locally.

Nothing here touches the network. The tokenizer is a small BPE model trained on the
shipped demo corpus (written for llmdiet, see ``demo/data/make_demo_data.py``); the models
are T5s with the flan-T5 recipe (gated-gelu, untied embeddings) at toy sizes. Like flan-T5, both
are "pretrained" on several directions before the study starts: English→French, French→English
and Korean→English (training rows [0, 1000) of each demo corpus). The teacher is larger and trained
longer; the student is smaller and trained briefly, so it starts weaker. The study then distils on
English→French only, and the Fr→En and Ko→En sets show what the student keeps or forgets out of domain.

Demo numbers show that the pipeline works. They say nothing about translation quality.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # transformers loads only when the demo models are built
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

logger = logging.getLogger(__name__)

DEMO_DATA_DIR = Path(__file__).parent / "data"
DEMO_EN_FR = DEMO_DATA_DIR / "demo_en_fr.jsonl"
DEMO_KO_EN = DEMO_DATA_DIR / "demo_ko_en.jsonl"
DEMO_TRAIN_ROWS = 1000  # rows [0, 1000) train; rows [1000, 1600) are the in-domain demo test set
DEMO_DEV_ROWS = (1800, 2000)  # the en-fr dev rows (selection), disjoint from every demo test set
DEMO_MODEL_PREFIX = "llmdiet-demo:"  # "llmdiet-demo:teacher" / "llmdiet-demo:student" name the built models
DEMO_BANNER = (
    "DEMO: tiny locally-built models on a small corpus written for llmdiet. "
    "These numbers show the pipeline works; they say nothing about translation quality."
)

DEMO_PREFIXES = ["translate English to French: ", "translate French to English: ", "translate Korean to English: "]
# (file, source column, target column, prefix): the directions both demo models are pretrained on
PRETRAINING_DIRECTIONS = [
    (DEMO_EN_FR, "en", "fr", DEMO_PREFIXES[0]),
    (DEMO_EN_FR, "fr", "en", DEMO_PREFIXES[1]),
    (DEMO_KO_EN, "ko", "en", DEMO_PREFIXES[2]),
]
# pretraining steps (batch 32, mixed directions): the teacher learns all three; the student, smaller and
# trained briefly, is a weaker starting point that distillation can improve
PRETRAINING_STEPS = {"teacher": 1800, "student": 250}
DEMO_RECIPE_VERSION = 3  # bump when the demo models' recipe changes (the cache directory is keyed by it)

TINY_SHAPES = {
    "teacher": dict(d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16),
    "student": dict(d_model=48, d_ff=96, num_layers=1, num_decoder_layers=1, num_heads=3, d_kv=16),
}


def build_demo_tokenizer(vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """A byte-level-free BPE tokenizer (SentencePiece-style ``▁`` word marks) trained on the demo corpora.

    Special ids follow T5: pad=0, eos=1, unk=2; every encoded sequence ends with ``</s>``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: I001
    from transformers import PreTrainedTokenizerFast

    texts = []
    for path in (DEMO_EN_FR, DEMO_KO_EN):
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.extend(json.loads(line).values())
    texts.extend(DEMO_PREFIXES * 50)  # so the task prefixes are not <unk>
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    assert (fast.pad_token_id, fast.eos_token_id, fast.unk_token_id) == (0, 1, 2)
    return fast


def tiny_t5_config(role: str, vocab_size: int) -> T5Config:
    """A toy T5 config with the flan-T5 recipe; ``role`` is 'teacher' or 'student'."""
    from transformers import T5Config

    vocab = (vocab_size + 7) // 8 * 8  # padded like flan-T5's 32128 for 32100 tokens
    values: dict[str, Any] = dict(  # Any: transformers 5 types each config field
        vocab_size=vocab,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **TINY_SHAPES[role],
    )
    return T5Config(**values)


def build_tiny_t5(role: str, vocab_size: int, seed: int = 0) -> T5ForConditionalGeneration:
    import torch
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    from llmdiet.compat import t5_as_in_4x

    return t5_as_in_4x(T5ForConditionalGeneration(tiny_t5_config(role, vocab_size)))


@dataclass
class DemoAssets:
    root: Path
    teacher: Path
    student: Path  # the student before distillation (pretrained, weaker than the teacher)
    tokenizer: Path


def ensure_demo_assets(root: str | Path, steps: dict | None = None, seed: int = 0) -> DemoAssets:
    """Build (once) the demo tokenizer, the pretrained tiny teacher and the pretrained tiny student under ``root``.

    Re-running is cheap: finished pieces are detected by their ``config.json`` and reused (a model is saved
    only once its training finished). The first build takes about a minute on 2 CPU cores, with progress logged.
    """
    from transformers import PreTrainedTokenizerFast

    steps = {**PRETRAINING_STEPS, **(steps or {})}
    root = Path(root)
    assets = DemoAssets(root, root / "teacher", root / "student_init", root / "tokenizer")
    if not (assets.tokenizer / "tokenizer.json").exists():
        build_demo_tokenizer().save_pretrained(assets.tokenizer)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(assets.tokenizer)
    for role, path, role_seed in (("teacher", assets.teacher, seed), ("student", assets.student, seed + 1)):
        if (path / "config.json").exists():
            continue
        logger.info(
            "building the demo %s: %d pretraining steps on En->Fr, Fr->En, Ko->En (once; cached in %s)",
            role,
            steps[role],
            path,
        )
        model = build_tiny_t5(role, len(tokenizer), seed=role_seed)
        train_on_demo_corpus(model, tokenizer, steps=steps[role], seed=role_seed, name=role)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return assets


def pretraining_rows() -> list[tuple[str, str]]:
    """(prefixed source, target) rows of every pretraining direction: training rows [0, 1000) of each corpus."""
    from llmdiet.data import read_parallel_file

    rows = []
    for path, src, tgt, prefix in PRETRAINING_DIRECTIONS:
        rows += [(prefix + r.source, r.target) for r in read_parallel_file(path, src, tgt)[:DEMO_TRAIN_ROWS]]
    return rows


def train_on_demo_corpus(
    model,
    tokenizer,
    steps: int,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 32,
    name: str = "model",
    rows: list[tuple[str, str]] | None = None,
) -> list[float]:
    """A minimal supervised "pretraining" of ``model`` on ``rows`` ((source, target) pairs; default: the mixed demo
    directions, :func:`pretraining_rows`). For the demo and family-test models only."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq

    rows = rows if rows is not None else pretraining_rows()
    enc = tokenizer([s for s, _ in rows], max_length=64, truncation=True)
    labels = tokenizer(text_target=[t for _, t in rows], max_length=64, truncation=True)["input_ids"]
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, padding=True)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(ds), (batch_size,), generator=g).tolist()
        batch = collate([ds[i] for i in idx])
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps:
            logger.info(
                "demo %s: step %d/%d, loss %.3f, %.0f s", name, step, steps, losses[-1], time.perf_counter() - start
            )
    model.eval()
    return losses


def demo_recipe_key() -> str:
    """Short hash of everything that decides the demo models: recipe version, shapes, steps, corpora bytes."""
    import hashlib

    digest = hashlib.sha256(
        json.dumps(
            [DEMO_RECIPE_VERSION, TINY_SHAPES, PRETRAINING_STEPS, DEMO_TRAIN_ROWS, DEMO_PREFIXES], sort_keys=True
        ).encode()
    )
    for path in (DEMO_EN_FR, DEMO_KO_EN):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def demo_cache_dir() -> Path:
    """Where the demo models are built: ``$LLMDIET_CACHE/demo-<recipe key>`` (default ``~/.cache/llmdiet/...``).

    The directory is keyed by the recipe (:func:`demo_recipe_key`), so a changed recipe or corpus never reuses
    models built by an older one."""
    return Path(os.environ.get("LLMDIET_CACHE", Path.home() / ".cache" / "llmdiet")) / f"demo-{demo_recipe_key()}"
