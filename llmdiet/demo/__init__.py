"""The embedded offline demo: a tokenizer, a tiny teacher and a tiny student, shipped with llmdiet.

Nothing here touches the network, and nothing is trained at first use: the models are package data
(``demo/models/``, sha256 in its ``manifest.json``), the same bytes on every machine, built once by
:mod:`llmdiet.demo.build`. The tokenizer is a small BPE model trained on the training rows of the demo
corpus (written for llmdiet, see ``demo/data/make_demo_data.py``); the models are T5s with the flan-T5 recipe
(gated-gelu, untied embeddings) at toy sizes. Like flan-T5, both are "pretrained" on several directions:
English→French, French→English and Korean→English (training rows [0, 1000) of each demo corpus). The teacher
is larger and trained to convergence; the student is smaller and trained briefly, so it starts weaker. The
study then distils on English→French only, and the Fr→En and Ko→En sets show what the student keeps or forgets
out of domain.

Demo numbers show that the pipeline works. They say nothing about translation quality.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DEMO_DATA_DIR = Path(__file__).parent / "data"
DEMO_EN_FR = DEMO_DATA_DIR / "demo_en_fr.jsonl"
DEMO_KO_EN = DEMO_DATA_DIR / "demo_ko_en.jsonl"
DEMO_TRAIN_ROWS = 1000  # rows [0, 1000) train (every direction); [1000, 1600) the in-domain test set
DEMO_DEV_ROWS = (1800, 2000)  # the en-fr dev rows (selection), disjoint from every demo test set
DEMO_MODEL_PREFIX = "llmdiet-demo:"  # "llmdiet-demo:teacher" / "llmdiet-demo:student" name the shipped models
DEMO_BANNER = (
    "DEMO: tiny shipped models on a small corpus written for llmdiet. "
    "These numbers show the pipeline works; they say nothing about translation quality."
)

DEMO_PREFIXES = ["translate English to French: ", "translate French to English: ", "translate Korean to English: "]
# (file, source column, target column, prefix): the directions both demo models are pretrained on
PRETRAINING_DIRECTIONS = [
    (DEMO_EN_FR, "en", "fr", DEMO_PREFIXES[0]),
    (DEMO_EN_FR, "fr", "en", DEMO_PREFIXES[1]),
    (DEMO_KO_EN, "ko", "en", DEMO_PREFIXES[2]),
]
SHIPPED_MODELS_DIR = Path(__file__).parent / "models"  # built by llmdiet.demo.build, shipped as package data


@dataclass
class DemoAssets:
    root: Path
    teacher: Path
    student: Path  # the student before distillation (pretrained, weaker than the teacher)
    tokenizer: Path

    @classmethod
    def under(cls, root: Path) -> DemoAssets:
        return cls(root, root / "teacher", root / "student_init", root / "tokenizer")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(root: Path = SHIPPED_MODELS_DIR) -> dict:
    path = root / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: the shipped demo models are missing (reinstall llmdiet, or rebuild them with "
            "`python -m llmdiet.demo.build --install`)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def verify_demo_models(root: Path, manifest: dict) -> DemoAssets:
    """``root``'s files against the sha256 recorded in ``manifest``: one clear error for a missing or changed file."""
    for name, digest in manifest["files"].items():
        path = root / name
        if not path.exists() or file_sha256(path) != digest:
            state = "missing" if not path.exists() else "changed (its sha256 differs from models/manifest.json)"
            raise RuntimeError(
                f"{path}: the shipped demo model file is {state}; reinstall llmdiet (or `git checkout "
                "llmdiet/demo/models`), or rebuild the models with `python -m llmdiet.demo.build --install`"
            )
    return DemoAssets.under(root)


@functools.cache
def shipped_demo_assets() -> DemoAssets:
    """The demo tokenizer, teacher and student as shipped: the same bytes on every machine, each file checked
    against its sha256 in ``models/manifest.json`` (once per process; a few MB). Nothing is trained here."""
    return verify_demo_models(SHIPPED_MODELS_DIR, read_manifest())


def build_tiny_t5(role, vocab_size: int, seed: int = 0):
    """A random-init tiny T5 of the demo's shapes (see :mod:`llmdiet.demo.build`)."""
    from llmdiet.demo.build import build_tiny_t5 as build

    return build(role, vocab_size, seed=seed)


def build_demo_tokenizer(vocab_size: int = 800):
    from llmdiet.demo.build import build_demo_tokenizer as build

    return build(vocab_size)
