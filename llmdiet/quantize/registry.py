"""The registry of quantization methods: one row per method, naming the module function that makes its artifact.

A method is a function ``make_artifact(job, model, tokenizer, sources, out) -> dict`` in one module of this
package (it writes the artifact's files into ``out`` and returns what ``llmdiet_artifact.json`` records) plus
one :class:`Method` row here, which says what it needs (libraries, devices, calibration), what it makes (a
``torch`` module that loads back into transformers' classes, or engine ``files``), the engine module that
loads it, and how to load it natively. ``llmdiet quantize --method``, ``--list_methods``, the engines
(``llmdiet.engines.load_backend``), the study and the tests all read this table, so a new method is one module
plus one row (CONTRIBUTING.md, "Add a quantization method"). Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass

from llmdiet.artifacts import BackendError
from llmdiet.config import ConfigError


@dataclass(frozen=True)
class Method:
    name: str
    libraries: tuple[str, ...]  # importable modules the method needs
    devices: tuple[str, ...]  # where the quantization itself can run
    calibrated: bool  # needs calibration sources
    summary: str
    make: str  # "module:function" that writes the artifact
    engine: str  # the llmdiet.engines module that registers its backend (the backend name is the method name)
    kind: str  # torch: a torch module (in memory and on disk); files: engine files (ONNX, CTranslate2)
    in_memory: str | None = None  # torch kind: "module:function(model, tokenizer, sources, device) -> model"
    loading: str | None = None  # a native loading snippet for the card ({out} = the directory); None: llmdiet.load
    # without ``loading``: why no maintained library loads this format (one sentence, for the card and the README)
    no_native_reason: str = ""

    @property
    def backend(self) -> str:
        return self.name

    def function(self, which: str = "make") -> Callable:
        module, name = (self.make if which == "make" else self.in_memory or "").split(":")
        return getattr(importlib.import_module(module), name)


_ONNX_LOADING = (
    "```python\nfrom optimum.onnxruntime import ORTModelForSeq2SeqLM\nfrom transformers import "
    'AutoTokenizer\nmodel = ORTModelForSeq2SeqLM.from_pretrained("{out}")\n'
    'tokenizer = AutoTokenizer.from_pretrained("{out}")\n```'
)
_ONNX = ("optimum.onnxruntime", "onnxruntime")
# loads and translates on transformers 4.57 and 5.x (5.x removed the "translation" pipeline task)
GENERATE_SNIPPET = (
    "```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
    'tokenizer = AutoTokenizer.from_pretrained("{out}")\n'
    'model = AutoModelForSeq2SeqLM.from_pretrained("{out}")\n'
    'batch = tokenizer(["{prefix}The city is beautiful."], return_tensors="pt")\n'
    "print(tokenizer.batch_decode(model.generate(**batch, max_new_tokens=64), skip_special_tokens=True))\n```"
)
_Q = "llmdiet.quantize"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "dynamic-int8",
            ("torch",),
            ("cpu",),
            False,
            "torch.ao quantize_dynamic: int8 Linear weights, activations per row at run time (the study's method); CPU",
            f"{_Q}.torch_dynamic:make_artifact",
            "llmdiet.engines.torch_dynamic",
            "torch",
            in_memory=f"{_Q}.torch_dynamic:quantize_in_memory",
            no_native_reason="transformers has no quantization config for torch.ao dynamic int8 modules "
            "(quantize_dynamic), so only llmdiet.load rebuilds them from files.",
        ),
        Method(
            "onnx-fp32",
            _ONNX,
            ("cpu",),
            False,
            "ONNX export only (optimum, unmerged decoders): the ONNX Runtime baseline",
            f"{_Q}.onnx_runtime:make_fp32_artifact",
            "llmdiet.engines.onnx",
            "files",
            loading=_ONNX_LOADING,
        ),
        Method(
            "onnx-dynamic-int8",
            _ONNX,
            ("cpu",),
            False,
            "ONNX Runtime dynamic int8 (ORTQuantizer, per-channel weights)",
            f"{_Q}.onnx_runtime:make_int8_artifact",
            "llmdiet.engines.onnx",
            "files",
            loading=_ONNX_LOADING,
        ),
        Method(
            "onnx-static-int8",
            _ONNX,
            ("cpu",),
            True,
            "ONNX Runtime static int8 (QDQ, MinMax ranges from recorded real inputs)",
            f"{_Q}.onnx_runtime:make_int8_artifact",
            "llmdiet.engines.onnx",
            "files",
            loading=_ONNX_LOADING,
        ),
        Method(
            "ct2-int8",
            ("ctranslate2",),
            ("cpu", "cuda"),
            False,
            "CTranslate2 int8 weights (int8 compute on CPU, int8_bfloat16 on GPU)",
            f"{_Q}.ctranslate2_export:make_artifact",
            "llmdiet.engines.ct2",
            "files",
            loading="```python\nimport ctranslate2\nfrom transformers import AutoTokenizer\n"
            'translator = ctranslate2.Translator("{out}")\n'
            'tokenizer = AutoTokenizer.from_pretrained("{out}/tokenizer")\n```',
        ),
        Method(
            "quanto-int8",
            ("optimum.quanto",),
            ("cpu", "cuda"),
            True,
            "optimum-quanto int8 weights + calibrated int8 activations (GPU method; runs on CPU)",
            f"{_Q}.gpu_int8:make_quanto_artifact",
            "llmdiet.engines.gpu_int8",
            "torch",
            in_memory=f"{_Q}.gpu_int8:quanto_in_memory",
            no_native_reason="transformers' QuantoConfig quantizes weights only and cannot save a quanto model "
            "(its quantizer is not serializable), while this artifact also holds calibrated int8 activation scales.",
        ),
        Method(
            "torchao-int8",
            ("torchao",),
            ("cpu", "cuda"),
            False,
            "torchao int8 dynamic activations + int8 weights in bfloat16 (GPU method; runs on CPU)",
            f"{_Q}.gpu_int8:make_torchao_artifact",
            "llmdiet.engines.gpu_int8",
            "torch",
            in_memory=f"{_Q}.gpu_int8:torchao_in_memory",
            no_native_reason="transformers' TorchAoConfig format loads a T5 back only with a float lm_head (with an "
            "int8 lm_head its tie check calls aten.equal, which torchao's Int8Tensor lacks: transformers 5.24, "
            "torchao 0.18), and this artifact quantizes lm_head too.",
        ),
        Method(
            "torch-bf16",
            ("torch",),
            ("cpu", "cuda"),
            False,
            "bfloat16 copy (the baseline for the GPU int8 methods; never float16 for T5)",
            f"{_Q}.gpu_int8:make_bf16_artifact",
            "llmdiet.engines.torch_engine",
            "torch",
            in_memory=f"{_Q}.gpu_int8:bf16_in_memory",
            loading=GENERATE_SNIPPET,
        ),
    )
}


def missing_libraries(method: Method) -> list[str]:
    return [lib for lib in method.libraries if not _module_exists(lib)]


def _module_exists(dotted: str) -> bool:
    """Whether ``dotted`` can be imported, found without importing it or its parents (which can take seconds)."""
    head, *rest = dotted.split(".")
    if head in sys.modules and sys.modules[head] is None:  # stubbed out (as tests do) = not installed
        return False
    try:
        spec = importlib.util.find_spec(head)
    except (ImportError, ValueError):
        return False
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec is not None


def available_methods() -> list[str]:
    return [name for name, m in METHODS.items() if not missing_libraries(m)]


def get_method(name: str, device: str = "cpu") -> Method:
    """The method called ``name``; clear errors for unknown names, missing libraries and wrong devices."""
    if name not in METHODS:
        raise ConfigError(
            f"unknown --method '{name}' (methods: {', '.join(METHODS)}; usable with the installed libraries: "
            f"{', '.join(available_methods()) or 'none'})"
        )
    method = METHODS[name]
    missing = missing_libraries(method)
    if missing:
        hint = (
            "; install the ONNX extra: pip install -c constraints-onnx.txt -e '.[onnx]' (optimum-onnx 0.1.0 needs "
            "transformers<4.58; docs/install.md 'Supported versions')"
            if name.startswith("onnx")
            else ""
        )
        raise BackendError(
            f"method '{name}' needs {', '.join(missing)}, which is not installed "
            f"(usable here: {', '.join(available_methods()) or 'none'}){hint}"
        )
    kind = device.split(":", 1)[0]
    if kind not in method.devices:
        raise BackendError(f"method '{name}' quantizes on {'/'.join(method.devices)} only; got --device {device}")
    import torch  # only now: checking the arguments above needs no torch

    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"--device {device} asked for, but CUDA is not available on this machine")
    return method
