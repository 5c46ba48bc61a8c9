"""Shared offline fixtures: the shipped demo tokenizer and tiny T5 teacher/student.

Nothing here touches the network or trains the demo: the models ship in ``llmdiet/demo/models`` (see
``llmdiet.demo``) and the data is the small corpus shipped in ``llmdiet/demo/data``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from llmdiet.demo import DemoAssets, build_tiny_t5, shipped_demo_assets  # noqa: E402
from llmdiet.quantize.registry import METHODS, missing_libraries  # noqa: E402

# The onnx-* methods need the ONNX extra (optimum-onnx caps transformers < 4.58): installed in .ci/run's second job
# (constraints-onnx.txt), absent from the default install; their tests are skipped there, never silently passed.
ONNX_INSTALLED = not missing_libraries(METHODS["onnx-fp32"])
needs_onnx = pytest.mark.skipif(
    not ONNX_INSTALLED, reason="the ONNX extra is not installed (tested by .ci/run's constraints-onnx.txt job)"
)


def method_param(name: str):
    """A quantization method as a pytest parameter, skipped where its libraries are not installed."""
    return pytest.param(name, marks=needs_onnx) if name.startswith("onnx") else name


def usable_methods(names) -> list[str]:
    """``names`` minus the methods whose libraries are not installed (for fixtures that build several)."""
    return [n for n in names if not missing_libraries(METHODS[n])]


@pytest.fixture(scope="session")
def demo_assets() -> DemoAssets:
    """The shipped demo tokenizer, teacher and student (package data, hash-checked; nothing is trained)."""
    return shipped_demo_assets()


@pytest.fixture(scope="session")
def tiny_tokenizer(demo_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_assets.tokenizer)


@pytest.fixture
def tiny_teacher(demo_assets):
    """The demo teacher as llmdiet loads it (transformers 5: flan-T5's own lm_head, eager attention as in 4.x)."""
    from llmdiet.modeling import load_seq2seq

    return load_seq2seq(str(demo_assets.teacher))[0].eval()


@pytest.fixture
def tiny_student(tiny_tokenizer):
    return build_tiny_t5("student", len(tiny_tokenizer), seed=1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
