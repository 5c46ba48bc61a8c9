"""GPU-oriented int8 methods (they also run on CPU, slowly, which is how the tests run them).

* ``quanto-int8`` (optimum-quanto): int8 weights *and* int8 activations. ``quantize(model,
  weights=qint8, activations=qint8)``, then ``with Calibration(): generate(...)`` over the
  calibration sources records activation ranges, then ``freeze`` stores the int8 weights.
  Saved as ``model_quanto.safetensors`` (the frozen state dict: ``weight._data`` int8 codes,
  ``weight._scale``, ``input_scale``/``output_scale``) plus ``quanto_qmap.json``; loaded with
  ``optimum.quanto.requantize`` into a meta-device skeleton. Calibration "streamlines" the model:
  it switches off output quantization of modules whose outputs only feed float-only ops; quanto's
  state dict does not record that, so the names go to ``quanto_unquantized_outputs.json`` and are
  switched off again on load (without it the loaded model differs from the saved one).
  optimum-quanto is in maintenance mode.
* ``torchao-int8`` (torchao): ``quantize_(model, Int8DynamicActivationInt8WeightConfig())`` in
  bfloat16 (int8 weights, activations quantized per token at run time). Saved with torchao's
  safetensors support (``flatten_tensor_state_dict``; a prototype API) as ``model_torchao.safetensors``.
  On CPU it only pays off with ``torch.compile``; on GPU it is the maintained int8 path.
* ``torch-bf16``: the bfloat16 baseline (``save_pretrained`` of a bf16 copy; never float16 for T5).

In every case the quantized Linears include ``lm_head``; the embedding stays in the model dtype.
Both int8 formats are plain safetensors: no pickle is loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llmdiet.artifacts import BackendError, check_no_meta_tensors, load_tensors, save_tensors
from llmdiet.compat import t5_as_in_4x

logger = logging.getLogger(__name__)

QUANTO_WEIGHTS = "model_quanto.safetensors"
QUANTO_MAP = "quanto_qmap.json"
QUANTO_UNQUANTIZED_OUTPUTS = "quanto_unquantized_outputs.json"
TORCHAO_WEIGHTS = "model_torchao.safetensors"
TORCHAO_CONFIG = "Int8DynamicActivationInt8WeightConfig"


def check_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device '{device}' asked for, but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"device '{device}': use cpu or cuda")
    return dev


def tensor_storage_bytes(t: torch.Tensor) -> int:
    """Bytes really held by ``t``: for quantized tensor subclasses, the sum of their inner tensors."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = flatten()
        return sum(tensor_storage_bytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)
    return t.numel() * t.element_size()


def model_storage_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_storage_bytes(t)
    return total


def _skeleton(path: Path, dtype: torch.dtype):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(path)
    with init_empty_weights(include_buffers=False):
        model = t5_as_in_4x(AutoModelForSeq2SeqLM.from_config(config, dtype=dtype))
    return model


def _finish_load(model, path: Path, device: torch.device):
    from transformers import GenerationConfig

    check_no_meta_tensors(model, path)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- optimum-quanto


@torch.no_grad()  # not inference_mode: quanto's calibration dispatch fails on inference tensors
def quantize_quanto_int8(
    model,
    tokenizer,
    calibration_sources: list[str],
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 16,
    max_new_tokens: int = 64,
):
    """int8 weights + int8 activations calibrated by translating ``calibration_sources``; returns the model."""
    from optimum.quanto import Calibration, freeze, qint8, quantize

    if not calibration_sources:
        raise BackendError("quanto-int8 needs calibration sources (zero usable rows given)")
    model = model.to(check_device(device), dtype).eval()
    quantize(model, weights=qint8, activations=qint8)
    model.eval()  # quantize() swaps in new QLinear modules, which start in training mode
    with Calibration(momentum=0.9):
        for i in range(0, len(calibration_sources), batch_size):
            enc = tokenizer(calibration_sources[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
            model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    freeze(model)
    return model.eval()


def unquantized_outputs(model) -> list[str]:
    """Quantized modules whose output quantization calibration switched off (streamline mode)."""
    from optimum.quanto.nn import QModuleMixin

    names = []
    for name, mod in model.named_modules():
        hook = getattr(mod, "_quantize_hooks", {}).get("output") if isinstance(mod, QModuleMixin) else None
        if hook is not None and hook.id not in mod._forward_hooks:
            names.append(name)
    return names


def save_quanto(model, out: str | Path) -> None:
    from optimum.quanto import quantization_map

    out = Path(out)
    state = {k: v.to("cpu") for k, v in model.state_dict().items()}
    save_tensors(state, out / QUANTO_WEIGHTS, {"format": "llmdiet-quanto/1"})
    (out / QUANTO_MAP).write_text(json.dumps(quantization_map(model), indent=1) + "\n")
    (out / QUANTO_UNQUANTIZED_OUTPUTS).write_text(json.dumps(unquantized_outputs(model), indent=1) + "\n")


def load_quanto(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from optimum.quanto import requantize

    path = Path(path)
    if not (path / QUANTO_MAP).is_file():
        raise BackendError(f"{path}: {QUANTO_MAP} not found; not a quanto-int8 artifact")
    state, _ = load_tensors(path / QUANTO_WEIGHTS)
    qmap = json.loads((path / QUANTO_MAP).read_text())
    model = _skeleton(path, dtype)
    requantize(model, state, qmap, device=torch.device("cpu"))  # loads with strict=False: check coverage
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise BackendError(f"{path / QUANTO_WEIGHTS}: lacks {len(missing)} tensors, e.g. {missing[:3]}")
    if (path / QUANTO_UNQUANTIZED_OUTPUTS).is_file():
        for name in json.loads((path / QUANTO_UNQUANTIZED_OUTPUTS).read_text()):
            model.get_submodule(name).disable_output_quantization()
    return _finish_load(model, path, check_device(device))


# ----------------------------------------------------------------------------- torchao


def quantize_torchao_int8(model, device: str = "cpu"):
    """torchao int8 dynamic-activation / int8-weight quantization of every Linear, in bfloat16."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = model.to(check_device(device), torch.bfloat16).eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


TOP_LEVEL = "llmdiet_top_level."


def save_torchao(model, out: str | Path) -> None:
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    # torchao's (un)flattening splits every name at its last dot: top-level tensors (BART/Marian's
    # final_logits_bias) travel under a module-like prefix
    state = {(k if "." in k else TOP_LEVEL + k): v.to("cpu") for k, v in model.state_dict().items()}
    tensors, metadata = flatten_tensor_state_dict(state)
    save_tensors(tensors, Path(out) / TORCHAO_WEIGHTS, {**metadata, "format": "llmdiet-torchao/1"})


def load_torchao(path: str | Path, device: str = "cpu"):
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    path = Path(path)
    tensors, metadata = load_tensors(path / TORCHAO_WEIGHTS)
    metadata.pop("format", None)
    state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    state = {k.removeprefix(TOP_LEVEL): v for k, v in state.items()}
    if leftover:
        raise BackendError(f"{path / TORCHAO_WEIGHTS}: unexpected tensors {sorted(leftover)[:3]}")
    model = _skeleton(path, torch.bfloat16)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise BackendError(f"{path / TORCHAO_WEIGHTS}: tensors the model does not have: {result.unexpected_keys[:5]}")
    return _finish_load(model, path, check_device(device))


# ----------------------------------------------------------------------------- bf16 baseline


def save_bf16_copy(model, tokenizer, out: str | Path) -> None:
    """``torch-bf16``: a bfloat16 ``save_pretrained`` copy (loaded by the ``torch-bf16`` backend)."""
    model.to(torch.bfloat16).save_pretrained(out)  # safetensors (the default in 4.57 and 5.x)
    tokenizer.save_pretrained(out)


# ----------------------------------------------------------------------------- the registry's entry points


def quanto_in_memory(model, tokenizer, sources, device: str = "cpu", batch_size: int = 16, max_new_tokens: int = 64):
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return quantize_quanto_int8(model, tokenizer, sources, device, dtype, batch_size, max_new_tokens)


def torchao_in_memory(model, tokenizer=None, sources=None, device: str = "cpu"):
    return quantize_torchao_int8(model, device)


def bf16_in_memory(model, tokenizer=None, sources=None, device: str = "cpu"):
    return model.to(torch.bfloat16)


def make_quanto_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    from llmdiet.artifacts import save_tokenizer_and_config

    model = quanto_in_memory(
        model, tokenizer, sources, job.device, job.calibration_batch_size, job.calibration_max_new_tokens
    )
    save_quanto(model, out)
    save_tokenizer_and_config(model, tokenizer, out)
    dtype = "bfloat16" if torch.device(job.device).type == "cuda" else "float32"
    return {
        "device": job.device,
        "dtype": dtype,
        "weights": "int8 per-channel (quanto qint8)",
        "activations": "int8 static, calibrated (quanto Calibration, streamline)",
    }


def make_torchao_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    from llmdiet.artifacts import save_tokenizer_and_config

    model = quantize_torchao_int8(model, job.device)
    save_torchao(model, out)
    save_tokenizer_and_config(model, tokenizer, out)
    return {
        "device": job.device,
        "dtype": "bfloat16",
        "weights": "int8 per-channel (torchao)",
        "activations": "int8 dynamic per token",
        "torchao_config": TORCHAO_CONFIG,
    }


def make_bf16_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    save_bf16_copy(model, tokenizer, out)
    return {"device": job.device, "dtype": "bfloat16"}
