"""Shared offline fixtures: a locally built tokenizer and tiny T5 teacher/student.

Nothing here touches the network: the models are built from ``T5Config`` at toy sizes
(see ``llmdiet.demo``) and the data is the small corpus shipped in ``llmdiet/demo/data``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from llmdiet.demo import DemoAssets, build_tiny_t5, ensure_demo_assets  # noqa: E402


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory) -> DemoAssets:
    """Tokenizer, trained tiny teacher and untrained tiny student, built once per test session."""
    return ensure_demo_assets(tmp_path_factory.mktemp("demo_assets"))


@pytest.fixture(scope="session")
def tiny_tokenizer(demo_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_assets.tokenizer)


@pytest.fixture
def tiny_teacher(demo_assets):
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher).eval()


@pytest.fixture
def tiny_student(tiny_tokenizer):
    return build_tiny_t5("student", len(tiny_tokenizer), seed=1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
