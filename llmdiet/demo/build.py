"""Build the demo tokenizer and the two tiny T5s that ship with llmdiet (``llmdiet/demo/models/``).

Users never run this: the built models ship as package data, with their sha256 in ``models/manifest.json``, so every
machine loads the same bytes and gets the same demo answer (training thousands of steps differs from CPU to CPU and
from one library version to the next: GUIDE §18). Maintainers regenerate them after a recipe change::

    python -m llmdiet.demo.build --output_dir /tmp/demo-models     # build and compare with the shipped hashes
    python -m llmdiet.demo.build --install                          # build and replace the shipped models

The comparison reports each file as identical or different; the weights usually differ on another CPU or stack
(that is why they ship), while the tokenizer, built by a deterministic BPE trainer, matches.

Recipe. The tokenizer is a BPE (SentencePiece-style word marks) trained on the *training* rows only. Both models
are T5s with the flan-T5 recipe (gated-GELU, untied embeddings), "pretrained" like flan-T5 on several directions
(En->Fr, Fr->En, Ko->En; training rows [0, 1000) of each demo corpus). The teacher is wide, deep and trained to
convergence, so it behaves like flan-T5-large next to flan-T5-small: near the corpus's best achievable BLEU and
no degenerate output; the student is small and trained briefly, a weaker starting point.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmdiet.demo import (
    DEMO_PREFIXES,
    DEMO_TRAIN_ROWS,
    PRETRAINING_DIRECTIONS,
    SHIPPED_MODELS_DIR,
    DemoAssets,
    file_sha256,
    read_manifest,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

logger = logging.getLogger(__name__)

TINY_SHAPES = {
    "teacher": dict(d_model=128, d_ff=512, num_layers=3, num_decoder_layers=3, num_heads=4, d_kv=32),
    "student": dict(d_model=48, d_ff=96, num_layers=1, num_decoder_layers=1, num_heads=3, d_kv=16),
}
# pretraining (batch 32, mixed directions, AdamW, linear decay): the teacher to convergence, regularised (dropout
# 0.2, weight decay 0.1) so that it writes the most frequent variant instead of recalling the variant of a similar
# training row (unregularised, 6,000 steps: BLEU 83.3 on demo-en-fr against the 87.6 of the most frequent variants);
# the student briefly (BLEU about 34: the weak starting point distillation improves). The saved configs say
# dropout 0: the models are used frozen or as initialisations whose blocks must equal the teacher's (copy_layers).
PRETRAINING: dict[str, dict[str, Any]] = {
    "teacher": dict(steps=3000, lr=2e-3, seed=0, weight_decay=0.1, dropout=0.2),
    "student": dict(steps=250, lr=3e-3, seed=1, weight_decay=0.01, dropout=0.0),
}
RECIPE_VERSION = 4  # 4: content-disjoint corpus v4, tokenizer on training rows, a converged 3+3-layer teacher


def training_texts() -> list[str]:
    """Every text of the training rows [0, DEMO_TRAIN_ROWS) of both demo corpora (what the tokenizer learns from)."""
    texts = []
    for path in sorted({p for p, *_ in PRETRAINING_DIRECTIONS}):
        for line in path.read_text(encoding="utf-8").splitlines()[:DEMO_TRAIN_ROWS]:
            texts.extend(json.loads(line).values())
    return texts


def build_demo_tokenizer(vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """A BPE tokenizer (SentencePiece-style ``▁`` word marks) trained on the demo corpora's training rows.

    Special ids follow T5: pad=0, eos=1, unk=2; every encoded sequence ends with ``</s>``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: I001
    from transformers import PreTrainedTokenizerFast

    texts = training_texts() + DEMO_PREFIXES * 50  # so the task prefixes are not <unk>
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


def save_tokenizer(tokenizer, directory: Path) -> None:
    """Save so that both supported transformers majors load it: 5.x writes ``tokenizer_class: TokenizersBackend``,
    a class 4.57 does not have; ``PreTrainedTokenizerFast`` names the same tokenizer.json loader on both."""
    tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def tiny_t5_config(role: str | dict, vocab_size: int) -> T5Config:
    """A toy T5 config with the flan-T5 recipe; ``role`` is 'teacher', 'student' or a shape dict."""
    from transformers import T5Config

    vocab = (vocab_size + 7) // 8 * 8  # padded like flan-T5's 32128 for 32100 tokens
    shape = TINY_SHAPES[role] if isinstance(role, str) else role
    values: dict[str, Any] = dict(  # Any: transformers 5 types each config field
        vocab_size=vocab,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    values.update(shape)
    return T5Config(**values)


def build_tiny_t5(role: str | dict, vocab_size: int, seed: int = 0) -> T5ForConditionalGeneration:
    import torch
    from transformers import T5ForConditionalGeneration

    from llmdiet.compat import t5_as_in_4x

    torch.manual_seed(seed)
    return t5_as_in_4x(T5ForConditionalGeneration(tiny_t5_config(role, vocab_size)))


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
    decay: bool = False,
    weight_decay: float = 0.01,
) -> list[float]:
    """A minimal supervised "pretraining" of ``model`` on ``rows`` ((source, target) pairs; default: the mixed demo
    directions, :func:`pretraining_rows`), with a linear learning-rate decay to 0 when ``decay``. For the demo and
    family-test models only."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq

    rows = rows if rows is not None else pretraining_rows()
    enc = tokenizer([s for s, _ in rows], max_length=64, truncation=True)
    labels = tokenizer(text_target=[t for _, t in rows], max_length=64, truncation=True)["input_ids"]
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, padding=True)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps if decay else 1.0)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(ds), (batch_size,), generator=g).tolist()
        batch = collate([ds[i] for i in idx])
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        schedule.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step % 500 == 0 or step == steps:
            logger.info(
                "demo %s: step %d/%d, loss %.3f, %.0f s", name, step, steps, losses[-1], time.perf_counter() - start
            )
    model.eval()
    return losses


def build_demo_models(root: Path) -> DemoAssets:
    """Build the tokenizer, the teacher and the student under ``root`` (minutes on 2 cores) and write the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    assets = DemoAssets.under(root)
    tokenizer = build_demo_tokenizer()
    save_tokenizer(tokenizer, assets.tokenizer)
    for role, path in (("teacher", assets.teacher), ("student", assets.student)):
        recipe = PRETRAINING[role]
        logger.info("building the demo %s: %d pretraining steps on En->Fr, Fr->En, Ko->En", role, recipe["steps"])
        model = build_tiny_t5({**TINY_SHAPES[role], "dropout_rate": recipe["dropout"]}, len(tokenizer), recipe["seed"])
        train_on_demo_corpus(
            model,
            tokenizer,
            steps=recipe["steps"],
            seed=recipe["seed"],
            lr=recipe["lr"],
            weight_decay=recipe["weight_decay"],
            name=role,
            decay=True,
        )
        model.config.dropout_rate = 0.0
        model.save_pretrained(path)
        save_tokenizer(tokenizer, path)
    write_manifest(root)
    return assets


def write_manifest(root: Path) -> dict:
    from llmdiet.provenance import provenance as collect_provenance

    files = {
        str(p.relative_to(root)): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    provenance = collect_provenance(seed=0, command=["python", "-m", "llmdiet.demo.build", *sys.argv[1:]])
    manifest = {
        "recipe_version": RECIPE_VERSION,
        "shapes": TINY_SHAPES,
        "pretraining": PRETRAINING,
        "files": files,
        "built_with": provenance,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def compare_with_shipped(root: Path) -> list[str]:
    """One line per shipped file: identical or different (sha256) in ``root``."""
    shipped = read_manifest()["files"]
    lines = []
    for name, digest in sorted(shipped.items()):
        built = root / name
        state = "missing" if not built.exists() else "identical" if file_sha256(built) == digest else "different"
        lines.append(f"{state:9s} {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmdiet.demo.build", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output_dir", help="Build into this directory and compare with the shipped hashes.")
    where.add_argument(
        "--install", action="store_true", help=f"Build and replace the shipped models ({SHIPPED_MODELS_DIR})."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.install:
        with tempfile.TemporaryDirectory() as tmp:
            build_demo_models(Path(tmp) / "models")
            shutil.rmtree(SHIPPED_MODELS_DIR, ignore_errors=True)
            shutil.copytree(Path(tmp) / "models", SHIPPED_MODELS_DIR)
        print(f"installed the demo models into {SHIPPED_MODELS_DIR}")
        return 0
    root = Path(args.output_dir)
    build_demo_models(root)
    print("\n".join(compare_with_shipped(root)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
