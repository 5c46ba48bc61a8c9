"""Quantization methods and the driver behind ``llmdiet quantize``.

The methods are rows of :mod:`.registry` (what each needs and makes, and the module function that makes it);
:mod:`.driver` runs one. One module per method family:

* :mod:`.torch_dynamic` — ``dynamic-int8`` (torch.ao dynamic int8 Linear, the reference study's method, CPU)
* :mod:`.onnx_runtime` — ``onnx-fp32``, ``onnx-dynamic-int8``, ``onnx-static-int8`` (optimum + ONNX Runtime)
* :mod:`.ctranslate2_export` — ``ct2-int8`` (CTranslate2)
* :mod:`.gpu_int8` — ``quanto-int8``, ``torchao-int8`` and the ``torch-bf16`` baseline
* :mod:`.lowbit`, :mod:`.gpfq` — 2–8-bit round-to-nearest and GPFQ weights (fake-quantized, packed sizes)
* :mod:`.calibration` — calibration sources
* :mod:`.job` — the ``llmdiet quantize`` command (configuration, presets, output)

The artifact format (``llmdiet_artifact.json``, tensors, tokenizer) lives one layer down in
:mod:`llmdiet.artifacts`, where the engines that load artifacts also reach it.

May import: the core modules and ``llmdiet.demo``. Never ``engines``, ``evaluation``, ``distill`` or ``study``.

Every method writes a directory that ``load_backend(<method>, out)`` (``llmdiet eval --backend
<method>`` or ``--backend auto``) loads back; the backend name equals the method name.
"""

from __future__ import annotations

import sys as _sys
import types as _types

from llmdiet.quantize.calibration import CalibrationSpec, load_calibration_sources
from llmdiet.quantize.driver import QuantizeJob, quantize, quantize_model, write_artifact_card
from llmdiet.quantize.registry import METHODS, Method, available_methods, get_method, missing_libraries

__all__ = [
    "METHODS",
    "Method",
    "QuantizeJob",
    "CalibrationSpec",
    "available_methods",
    "get_method",
    "missing_libraries",
    "quantize",
    "quantize_model",
    "write_artifact_card",
    "load_calibration_sources",
]


class _CallableModule(_types.ModuleType):
    """``llmdiet.quantize(model, method, out, ...)`` is :func:`quantize_model` (the public Python API)."""

    def __call__(self, *args, **kwargs):
        return quantize_model(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
