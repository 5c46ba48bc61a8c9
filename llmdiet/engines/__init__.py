"""Engines: one interface (a "backend") for every way llmdiet runs a model.

A backend turns a batch of source strings into hypotheses. The eval harness
(``llmdiet eval``), the benchmarks and the quantizers all go through this
interface, so every method is timed and scored by the same code.

Backends register themselves by name with :func:`register_backend`; modules that
provide them are imported lazily by :func:`load_backend` (see ``_BACKEND_MODULES``, which reads each
quantization method's engine module from :mod:`llmdiet.quantize.registry`)
so that optional engines (ONNX Runtime, CTranslate2, ...) cost nothing unless used.

A quantized artifact directory carries ``llmdiet_artifact.json`` with at least
``{"method": ..., "backend": ...}``; :func:`detect_backend` reads it so that
``--backend auto`` picks the right loader.

May import: the core modules and ``llmdiet.quantize`` (the loaders of each artifact format).
Never ``evaluation``, ``distill`` or ``study``.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from llmdiet.artifacts import ARTIFACT_FILE, BackendError  # noqa: F401  (re-exported; the artifact format lives below the engines)
from llmdiet.quantize.registry import METHODS as QUANTIZATION_METHODS


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # set equal to max_new_tokens for fixed-length timing runs
    num_beams: int = 1
    max_source_length: int | None = (
        512  # sources are truncated to this many tokens (None: never; T5 was trained on 512)
    )
    # multilingual models (M2M100, NLLB, mBART-50): the tokenizer's language codes (llmdiet.languages);
    # None: the tokenizer's and the model's generation config's own
    source_lang: str | None = None
    target_lang: str | None = None

    def tokenizer_options(self) -> dict:
        """Keyword arguments for the tokenizer call that encodes a batch of sources."""
        if self.max_source_length is None:
            return {}
        return {"truncation": True, "max_length": self.max_source_length}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Translation:
    hypothesis: str
    generated_tokens: int  # tokens produced by the decoder, excluding padding and the start token


class TranslationBackend(ABC):
    """Loads one model artifact and translates batches of already-prefixed sources."""

    name: str = "abstract"

    @abstractmethod
    def translate(self, sources: list[str], settings: GenerationSettings, on_first_token=None) -> list[Translation]:
        """Translate one batch; ``sources`` already carry the task prefix.

        ``on_first_token()``, when given, is called as soon as the first generated token of the batch is known
        (the benchmarks measure time-to-first-token with it); backends that cannot tell never call it.
        """

    @abstractmethod
    def size_info(self) -> dict:
        """``{"parameters": int, "disk_bytes": int, "memory_bytes": int, ...}`` for the loaded artifact."""

    def describe(self) -> dict:
        """Backend name, device, dtype and anything else that identifies how the model runs."""
        return {"backend": self.name}


BackendFactory = Callable[..., TranslationBackend]
_REGISTRY: dict[str, BackendFactory] = {}

# backend name -> module that registers it (imported on first use): the float engines, then one per quantization
# method as its llmdiet.quantize.registry row declares (the backend name is the method name)
_BACKEND_MODULES: dict[str, str] = {
    "torch-fp32": "llmdiet.engines.torch_engine",
    **{name: method.engine for name, method in QUANTIZATION_METHODS.items()},
}


# backends that run a torch module through TorchSeq2SeqBackend (static decoder, speculative decoding)
def _torch_backends() -> tuple[str, ...]:
    """The backends that run a torch module (static decoder, drafts, dropped rows): torch-fp32 and every quantization
    method the registry declares ``kind == "torch"`` (a new torch-kind method joins without an edit here)."""
    from llmdiet.quantize.registry import METHODS

    return ("torch-fp32", *(name for name, m in METHODS.items() if m.kind == "torch"))


TORCH_BACKENDS = _torch_backends()


def register_backend(name: str, module: str | None = None):
    """Class/function decorator: ``@register_backend("torch-fp32")``."""

    def wrap(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        if module:
            _BACKEND_MODULES[name] = module
        return factory

    return wrap


def known_backends() -> list[str]:
    return sorted(set(_BACKEND_MODULES) | set(_REGISTRY))


def detect_backend(model_path: str | Path) -> str:
    """The backend named in an artifact's ``llmdiet_artifact.json``, else ``torch-fp32``."""
    meta = Path(model_path) / ARTIFACT_FILE
    if meta.is_file():
        try:
            return json.loads(meta.read_text())["backend"]
        except (json.JSONDecodeError, KeyError) as err:
            raise BackendError(f"{meta}: not a valid llmdiet artifact description ({err})") from None
    return "torch-fp32"


def load_backend(name: str, model_path: str, device: str = "cpu", **options) -> TranslationBackend:
    """Instantiate backend ``name`` ('auto' reads the artifact) for ``model_path``."""
    if name == "auto":
        name = detect_backend(model_path)
    if name not in _REGISTRY:
        module = _BACKEND_MODULES.get(name)
        if module is None:
            raise BackendError(f"unknown backend '{name}' (known: {', '.join(known_backends())})")
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise BackendError(f"backend '{name}' needs a library that is not installed: {err}") from None
    return _REGISTRY[name](model_path, device=device, **options)
