"""Quantization methods and the driver behind ``llmdiet quantize``.

One module per method family:

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

import importlib.util
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llmdiet.artifacts import BackendError
from llmdiet.config import ConfigError
from llmdiet.quantize.calibration import CalibrationSpec, load_calibration_sources

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    name: str
    libraries: tuple[str, ...]  # importable modules the method needs
    devices: tuple[str, ...]  # where the quantization itself can run
    calibrated: bool  # needs calibration sources
    summary: str

    @property
    def backend(self) -> str:
        return self.name


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dynamic-int8", ("torch",), ("cpu",), False,
           "torch.ao quantize_dynamic: int8 Linear weights, activations per batch (the study's method); CPU"),
    Method("onnx-fp32", ("optimum.onnxruntime", "onnxruntime"), ("cpu",), False,
           "ONNX export only (optimum, unmerged decoders): the ONNX Runtime baseline"),
    Method("onnx-dynamic-int8", ("optimum.onnxruntime", "onnxruntime"), ("cpu",), False,
           "ONNX Runtime dynamic int8 (ORTQuantizer, per-channel weights)"),
    Method("onnx-static-int8", ("optimum.onnxruntime", "onnxruntime"), ("cpu",), True,
           "ONNX Runtime static int8 (QDQ, MinMax ranges from recorded real inputs)"),
    Method("ct2-int8", ("ctranslate2",), ("cpu", "cuda"), False,
           "CTranslate2 int8 weights (int8 compute on CPU, int8_bfloat16 on GPU)"),
    Method("quanto-int8", ("optimum.quanto",), ("cpu", "cuda"), True,
           "optimum-quanto int8 weights + calibrated int8 activations (GPU method; runs on CPU)"),
    Method("torchao-int8", ("torchao",), ("cpu", "cuda"), False,
           "torchao int8 dynamic activations + int8 weights in bfloat16 (GPU method; runs on CPU)"),
    Method("torch-bf16", ("torch",), ("cpu", "cuda"), False,
           "bfloat16 copy (the baseline for the GPU int8 methods; never float16 for T5)"),
)}


def missing_libraries(method: Method) -> list[str]:
    missing = []
    for lib in method.libraries:
        if not _module_exists(lib):
            missing.append(lib)
    return missing


def _module_exists(dotted: str) -> bool:
    """Whether ``dotted`` can be imported, found without importing it or its parents (which can take seconds)."""
    import importlib.machinery
    import sys

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
        raise BackendError(
            f"method '{name}' needs {', '.join(missing)}, which is not installed "
            f"(usable here: {', '.join(available_methods()) or 'none'})"
        )
    kind = device.split(":", 1)[0]
    if kind not in method.devices:
        raise BackendError(f"method '{name}' quantizes on {'/'.join(method.devices)} only; got --device {device}")
    import torch  # only now: checking the arguments above needs no torch

    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"--device {device} asked for, but CUDA is not available on this machine")
    return method


@dataclass
class QuantizeJob:
    model: str  # hub id or local directory (float weights)
    method: str
    out: Path
    device: str = "cpu"
    per_channel: bool | None = None  # None: the method's default (dynamic-int8: per-tensor as in the study; ONNX: per-channel)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    calibration_batch_size: int = 16
    calibration_max_new_tokens: int = 64
    seed: int = 0
    overwrite: bool = False
    command: list[str] | None = None  # recorded in the artifact's provenance
    tokenizer: str | None = None  # tokenizer directory or hub id when the model directory has none
    static_keep_float: tuple[str, ...] = ("wo",)  # onnx-static-int8: layers kept float32 (T5-safe)


def quantize(job: QuantizeJob) -> dict:
    """Run ``job``: load, quantize, save to ``job.out``, write ``llmdiet_artifact.json``; returns the artifact dict."""
    import torch

    from llmdiet.locking import file_lock

    method = get_method(job.method, job.device)
    torch.manual_seed(job.seed)
    sources = load_calibration_sources(job.calibration) if method.calibrated else None
    out = Path(job.out)
    # one run per --out at a time (two used to both "succeed", the later one silently replacing the other): the
    # lock is a file beside --out, since --out itself is replaced by a rename
    with file_lock(out.parent / f".{out.name}.lock", "llmdiet quantize", shown=out, remove=True):
        return _quantize_locked(job, method, sources)


def _quantize_locked(job: QuantizeJob, method, sources) -> dict:
    import torch

    from llmdiet.artifacts import (
        check_output_dir, fp32_disk_bytes, publish_partial_dir, start_partial_dir, temporary_files_under, write_artifact,
    )
    from llmdiet.modeling import load_seq2seq

    out = check_output_dir(job.out, job.overwrite)  # before anything is loaded
    model, tokenizer = load_seq2seq(job.model, dtype=torch.float32, tokenizer_path=job.tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    fp32_bytes = fp32_disk_bytes(job.model, model.config)
    model_type = model.config.model_type
    if method.name.startswith("onnx-") or method.name == "ct2-int8":
        model = None  # these exporters load the checkpoint again by path; free the float copy first
    # Everything is written into a hidden directory beside --out and renamed into place when complete:
    # a failed run leaves nothing behind, a killed one only a stale ``.NAME.partial-PID`` that the next run removes.
    partial = start_partial_dir(out)
    try:
        with temporary_files_under(partial / ".tmp"):  # never in /tmp: a killed run's leftovers stay in partial/
            extra = _run_method(method, job, model, tokenizer, sources, partial, model_type)
        if method.calibrated:
            extra["calibration"] = {**job.calibration.describe(), "rows_used": len(sources),
                                    "batch_size": job.calibration_batch_size,
                                    "max_new_tokens": job.calibration_max_new_tokens}
        meta = write_artifact(partial, method=method.name, backend=method.backend, source_model=job.model,
                              parameters=parameters, fp32_bytes=fp32_bytes, seed=job.seed, command=job.command,
                              model_type=model_type, **extra)
        write_artifact_card(partial, meta)
        publish_partial_dir(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("%s: %s -> %s (%.1f MB on disk%s)", method.name, job.model, out, meta["disk_bytes"] / 1e6,
                f", {meta['size_ratio']:.3f} x fp32" if meta["size_ratio"] else "")
    return meta


NATIVE_LOADING = {
    "onnx": "```python\nfrom optimum.onnxruntime import ORTModelForSeq2SeqLM\nfrom transformers import AutoTokenizer\n"
            "model = ORTModelForSeq2SeqLM.from_pretrained(\"{out}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{out}\")\n```",
    "ct2-int8": "```python\nimport ctranslate2\nfrom transformers import AutoTokenizer\n"
                "translator = ctranslate2.Translator(\"{out}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{out}/tokenizer\")\n```",
    "torch-bf16": "```python\nfrom transformers import pipeline\ntranslate = pipeline(\"translation_en_to_fr\", model=\"{out}\")\n```",
}
LLMDIET_LOADING = ("```python\nimport llmdiet\ntranslator = llmdiet.load(\"{out}\")\n"
                   "translator.translate([\"translate English to French: Hello.\"])\n```\n"
                   "(This format is llmdiet's: transformers cannot load it by itself.)")


def write_artifact_card(directory: Path, meta: dict) -> Path:
    """The artifact's model card: method, command, size vs fp32, how to load it, provenance."""
    from llmdiet.demo import DEMO_MODEL_PREFIX, demo_cache_dir
    from llmdiet.model_card import write_model_card

    method = meta["method"]
    key = "onnx" if method.startswith("onnx-") else method
    loading = (NATIVE_LOADING.get(key) or LLMDIET_LOADING).replace("{out}", "<this directory>")
    if key in NATIVE_LOADING:
        loading += "\n\nor, with llmdiet's harness settings:\n\n" + LLMDIET_LOADING.split("\n(This")[0].replace("{out}", "<this directory>")
    source = meta["source_model"]
    demo = str(source).startswith(str(demo_cache_dir())) or str(source).startswith(DEMO_MODEL_PREFIX)
    size = {"parameters": f"{meta['parameters']:,}", "disk (MB)": f"{meta['disk_bytes'] / 1e6:.1f}",
            "fp32 checkpoint (MB)": f"{meta['fp32_disk_bytes'] / 1e6:.1f}" if meta.get("fp32_disk_bytes") else None,
            "size vs fp32": f"{meta['size_ratio']:.3f}x" if meta.get("size_ratio") else None}
    return write_model_card(
        directory, title=f"{Path(source).name or source}, {method} (llmdiet)", kind="quantization",
        base_model=source, tags=[method], demo=demo,
        how=f"`{source}` quantized by llmdiet with `{method}`: {METHODS[method].summary}.",
        command=meta["provenance"]["command"] if isinstance(meta["provenance"]["command"], str)
        else " ".join(meta["provenance"]["command"]),
        size=size, provenance=meta["provenance"], loading=loading,
    )


def _run_method(method: Method, job: QuantizeJob, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    import torch

    from llmdiet.artifacts import save_tokenizer_and_config

    name = method.name
    if name == "dynamic-int8":
        from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8, quantized_linears, save_dynamic_int8

        per_channel = bool(job.per_channel)
        model = quantize_dynamic_int8(model, per_channel=per_channel)
        save_dynamic_int8(model, out)
        save_tokenizer_and_config(model, tokenizer, out)
        return {"device": "cpu", "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'} affine",
                "activations": "dynamic int8 per batch (reduce_range)", "quantized_linears": len(quantized_linears(model)),
                "kept_float": "token embedding (shared), relative attention bias, layer norms",
                "quantized_engine": torch.backends.quantized.engine}
    if name.startswith("onnx-"):
        from llmdiet.quantize import onnx_runtime

        if name == "onnx-fp32":
            return {"device": "cpu", **onnx_runtime.export_onnx_fp32(job.model, out, tokenizer)}
        return {"device": "cpu", **onnx_runtime.quantize_onnx(
            job.model, out, tokenizer, static=name == "onnx-static-int8",
            per_channel=True if job.per_channel is None else job.per_channel, calibration_sources=sources,
            calibration_batch_size=job.calibration_batch_size, calibration_max_new_tokens=job.calibration_max_new_tokens,
            seed=job.seed, keep_float=tuple(job.static_keep_float),
        )}
    if name == "ct2-int8":
        from llmdiet.quantize.ctranslate2_export import convert_ct2_int8

        return {"device": job.device, **convert_ct2_int8(job.model, out, tokenizer, model_type)}
    from llmdiet.quantize import gpu_int8

    if name == "quanto-int8":
        dtype = torch.bfloat16 if torch.device(job.device).type == "cuda" else torch.float32
        model = gpu_int8.quantize_quanto_int8(model, tokenizer, sources, job.device, dtype,
                                              job.calibration_batch_size, job.calibration_max_new_tokens)
        gpu_int8.save_quanto(model, out)
        save_tokenizer_and_config(model, tokenizer, out)
        return {"device": job.device, "dtype": str(dtype).replace("torch.", ""), "weights": "int8 per-channel (quanto qint8)",
                "activations": "int8 static, calibrated (quanto Calibration, streamline)"}
    if name == "torchao-int8":
        model = gpu_int8.quantize_torchao_int8(model, job.device)
        gpu_int8.save_torchao(model, out)
        save_tokenizer_and_config(model, tokenizer, out)
        return {"device": job.device, "dtype": "bfloat16", "weights": "int8 per-channel (torchao)",
                "activations": "int8 dynamic per token", "torchao_config": gpu_int8.TORCHAO_CONFIG}
    if name == "torch-bf16":
        gpu_int8.save_bf16_copy(model, tokenizer, out)
        return {"device": job.device, "dtype": "bfloat16"}
    raise BackendError(f"method '{name}' has no implementation")  # pragma: no cover - METHODS and this table agree



def quantize_model(model: str, method: str, out: str | Path, *, calibration_file: str | None = None,
                   calibration_source_column: str = "en", calibration_prefix: str = "translate English to French: ",
                   calibration_count: int = 128, device: str = "cpu", per_channel: bool | None = None,
                   overwrite: bool = False, tokenizer: str | None = None, seed: int = 0) -> dict:
    """``llmdiet quantize`` from Python; returns the artifact record (``llmdiet_artifact.json``)."""
    from llmdiet.modeling import resolve_model
    from llmdiet.quantize.job import STUDY_DATASET

    get_method(method, device)
    calibration = CalibrationSpec(file=calibration_file, dataset=None if calibration_file else STUDY_DATASET,
                                  source_column=calibration_source_column, prefix=calibration_prefix,
                                  count=calibration_count)
    return quantize(QuantizeJob(resolve_model(str(model)), method, Path(out), device=device, per_channel=per_channel,
                                calibration=calibration, seed=seed, overwrite=overwrite, tokenizer=tokenizer,
                                command=["llmdiet.quantize", str(model), method, str(out)]))


class _CallableModule(__import__("types").ModuleType):
    def __call__(self, *args, **kwargs):
        return quantize_model(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
