"""The embedded offline demo: a tokenizer, a tiny teacher and a tiny student, built locally.

Nothing here touches the network. The tokenizer is a small BPE model trained on the
shipped demo corpus (written for llmdiet, see ``demo/data/make_demo_data.py``); the models
are T5s with the flan-T5 recipe (gated-gelu, untied embeddings) at toy sizes. The teacher
is briefly trained on the demo corpus so that it has something to teach.

Demo numbers show that the pipeline works. They say nothing about translation quality.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)

DEMO_DATA_DIR = Path(__file__).parent / "data"
DEMO_EN_FR = DEMO_DATA_DIR / "demo_en_fr.jsonl"
DEMO_KO_EN = DEMO_DATA_DIR / "demo_ko_en.jsonl"
DEMO_TRAIN_ROWS = 1000  # rows [0, 1000) train; rows [1000, 1200) are the in-domain demo eval set
DEMO_MODEL_PREFIX = "llmdiet-demo:"  # "llmdiet-demo:teacher" / "llmdiet-demo:student" name the built models
DEMO_BANNER = (
    "DEMO: tiny locally-built models on a small corpus written for llmdiet. "
    "These numbers show the pipeline works; they say nothing about translation quality."
)

DEMO_PREFIXES = ["translate English to French: ", "translate French to English: ", "translate Korean to English: "]

TINY_SHAPES = {
    "teacher": dict(d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16),
    "student": dict(d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16),
}


def build_demo_tokenizer(vocab_size: int = 600) -> "PreTrainedTokenizerFast":
    """A byte-level-free BPE tokenizer (SentencePiece-style ``▁`` word marks) trained on the demo corpora.

    Special ids follow T5: pad=0, eos=1, unk=2; every encoded sequence ends with ``</s>``.
    """
    from transformers import PreTrainedTokenizerFast

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: I001

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
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    assert (fast.pad_token_id, fast.eos_token_id, fast.unk_token_id) == (0, 1, 2)
    return fast


def tiny_t5_config(role: str, vocab_size: int) -> "T5Config":
    """A toy T5 config with the flan-T5 recipe; ``role`` is 'teacher' or 'student'."""
    from transformers import T5Config

    vocab = (vocab_size + 7) // 8 * 8  # padded like flan-T5's 32128 for 32100 tokens
    return T5Config(
        vocab_size=vocab, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **TINY_SHAPES[role],
    )


def build_tiny_t5(role: str, vocab_size: int, seed: int = 0) -> "T5ForConditionalGeneration":
    import torch
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    return T5ForConditionalGeneration(tiny_t5_config(role, vocab_size))


@dataclass
class DemoAssets:
    root: Path
    teacher: Path
    student: Path  # the untrained student initialisation
    tokenizer: Path


def ensure_demo_assets(root: str | Path, teacher_steps: int = 400, seed: int = 0) -> DemoAssets:
    """Build (once) the demo tokenizer, a trained tiny teacher and a fresh tiny student under ``root``.

    Re-running is cheap: finished pieces are detected by their ``config.json`` and reused.
    """
    from transformers import PreTrainedTokenizerFast

    root = Path(root)
    assets = DemoAssets(root, root / "teacher", root / "student_init", root / "tokenizer")
    if not (assets.tokenizer / "tokenizer.json").exists():
        build_demo_tokenizer().save_pretrained(assets.tokenizer)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(assets.tokenizer)
    if not (assets.student / "config.json").exists():
        student = build_tiny_t5("student", len(tokenizer), seed=seed + 1)
        student.save_pretrained(assets.student)
        tokenizer.save_pretrained(assets.student)
    if not (assets.teacher / "config.json").exists():
        logger.info("training the demo teacher for %d steps (once; cached in %s)", teacher_steps, assets.teacher)
        teacher = build_tiny_t5("teacher", len(tokenizer), seed=seed)
        train_on_demo_corpus(teacher, tokenizer, steps=teacher_steps, seed=seed)
        teacher.save_pretrained(assets.teacher)
        tokenizer.save_pretrained(assets.teacher)
    return assets


def train_on_demo_corpus(model, tokenizer, steps: int, seed: int = 0, lr: float = 3e-3, batch_size: int = 32) -> list[float]:
    """A minimal supervised warm-up of ``model`` on the demo training rows (used for the demo teacher only)."""
    import torch

    from llmdiet.data import read_parallel_file, tokenize_rows

    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:DEMO_TRAIN_ROWS]
    ds, _ = tokenize_rows(rows, tokenizer, "translate English to French: ", 64, 64)
    from transformers import DataCollatorForSeq2Seq

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
            logger.info("demo teacher: step %d/%d, loss %.3f, %.0f s", step, steps, losses[-1], time.perf_counter() - start)
    model.eval()
    return losses


def demo_cache_dir() -> Path:
    """Where the demo models are built: ``$LLMDIET_CACHE/demo`` (default ``~/.cache/llmdiet/demo``)."""
    return Path(os.environ.get("LLMDIET_CACHE", Path.home() / ".cache" / "llmdiet")) / "demo"
