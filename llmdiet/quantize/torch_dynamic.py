"""``dynamic-int8``: PyTorch dynamic int8 quantization of every ``nn.Linear`` (the reference study's method).

``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`` replaces each Linear
with a dynamically quantized one: int8 weights (per-tensor affine by default, as in the study;
per-channel on request), activations quantized on the fly, CPU only (fbgemm/x86 kernels): torch.ao quantizes a
Linear's whole input with one scale; llmdiet's loader gives each row its own scale by default
(:mod:`llmdiet.quantize.per_row_int8`), so a sentence's output does not depend on its batch.
What stays float32: the token embedding (``shared``, tied to the encoder/decoder ``embed_tokens``),
the relative-attention bias tables and the layer norms. T5's ``lm_head`` is an ``nn.Linear``
and is quantized.

On-disk format (``save_pretrained`` cannot store these modules): ``model_int8.safetensors`` holds

* for each quantized Linear ``NAME``: ``NAME.weight_int8`` (the int8 codes), ``NAME.weight_scale``
  (float64) and ``NAME.weight_zero_point`` (int64) — one value each for per-tensor weights, one per
  output channel for per-channel weights — and ``NAME.bias`` when present;
* every other parameter and buffer as float;
* metadata ``quantized_linears`` (JSON: shapes, qscheme, axis) and ``format``.

Loading builds the model skeleton from ``config.json`` on the meta device (no float weights are
materialised), puts dynamic quantized Linears in place, packs the stored int8 codes with
``set_weight_bias`` and assigns the float tensors, so the loaded model is bit-identical to the one
that was saved. No pickle is involved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmdiet.artifacts import BackendError, TensorFile, check_no_meta_tensors, save_tensors, trim_heap
from llmdiet.compat import t5_as_in_4x

WEIGHTS_FILE = "model_int8.safetensors"
FORMAT = "llmdiet-dynamic-int8/1"


def _dynamic_linear_class():
    import torch.ao.nn.quantized.dynamic as nnqd

    return nnqd.Linear


def quantize_dynamic_int8(model: nn.Module, per_channel: bool = False, activation_scales: str = "per_row") -> nn.Module:
    """Quantize ``model``'s ``nn.Linear`` layers to dynamic int8 in place (CPU) and return it, with the activation
    scales :func:`load_dynamic_int8` gives the saved artifact ("per_row" by default; "per_batch": torch.ao's)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    from llmdiet.quantize.per_row_int8 import use_activation_scales

    engines = torch.backends.quantized.supported_engines
    if not {"x86", "fbgemm", "qnnpack"} & set(engines):  # pragma: no cover - exotic builds
        raise BackendError(
            f"dynamic-int8 needs a quantized CPU engine (x86/fbgemm/qnnpack); this torch build has {engines}"
        )
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    model = model.float().cpu().eval()
    quantized = quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    return use_activation_scales(quantized, activation_scales)


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    cls = _dynamic_linear_class()
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, cls)}


def save_dynamic_int8(model: nn.Module, out: str | Path) -> Path:
    """Write ``model_int8.safetensors`` (see module docstring) for a model from :func:`quantize_dynamic_int8`."""
    out = Path(out)
    qlinears = quantized_linears(model)
    if not qlinears:
        raise BackendError("model has no dynamically quantized Linear layers; run quantize_dynamic_int8 first")
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    mod: Any
    for name, mod in qlinears.items():
        weight, bias = mod._packed_params._weight_bias()
        scheme = weight.qscheme()
        entry: dict[str, Any] = {
            "in_features": mod.in_features,
            "out_features": mod.out_features,
            "bias": bias is not None,
        }
        tensors[f"{name}.weight_int8"] = weight.int_repr()
        if scheme == torch.per_tensor_affine:
            entry["qscheme"] = "per_tensor_affine"
            tensors[f"{name}.weight_scale"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
            tensors[f"{name}.weight_zero_point"] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
        elif scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
            entry["qscheme"] = "per_channel_affine"
            entry["axis"] = weight.q_per_channel_axis()
            tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales().to(torch.float64)
            tensors[f"{name}.weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int64)
        else:  # pragma: no cover - quantize_dynamic only produces the two schemes above
            raise BackendError(f"{name}: unsupported weight qscheme {scheme}")
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach()
        layout[name] = entry
    prefixes = tuple(f"{n}." for n in qlinears)
    for name, tensor in model.state_dict(keep_vars=False).items():
        if isinstance(tensor, torch.Tensor) and not name.startswith(prefixes):
            tensors[name] = tensor
    save_tensors(tensors, out / WEIGHTS_FILE, {"format": FORMAT, "quantized_linears": json.dumps(layout)})
    return out / WEIGHTS_FILE


def _rebuild_qweight(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, entry: dict) -> torch.Tensor:
    if entry["qscheme"] == "per_tensor_affine":
        return torch._make_per_tensor_quantized_tensor(codes, float(scale.item()), int(zero_point.item()))
    return torch._make_per_channel_quantized_tensor(codes, scale, zero_point, int(entry["axis"]))


def _retie_input_embeddings(model: nn.Module) -> None:
    """``load_state_dict(assign=True)`` gives the encoder/decoder token embeddings their own tensors; make them the
    shared embedding again (one copy in memory, as the checkpoint was; transformers 4.x did not need this)."""
    shared = model.get_input_embeddings()  # type: ignore[operator]
    for part in (model.get_encoder(), model.get_decoder()):  # type: ignore[operator]
        embed = getattr(part, "embed_tokens", None)
        if embed is not None and embed is not shared and embed.weight.shape == shared.weight.shape:
            embed.weight = shared.weight


TRIM_EVERY_LAYERS = 16


def load_dynamic_int8(path: str | Path, activation_scales: str = "per_row") -> nn.Module:
    """Load a directory written by :func:`save_dynamic_int8` (plus ``config.json``) back into a model.

    ``activation_scales``: "per_row" (default: each row of a Linear's input quantized with its own scale, so an
    output never depends on the rest of the batch; :mod:`llmdiet.quantize.per_row_int8`) or "per_batch" (torch.ao's
    own: one scale from the whole input tensor, as ``quantize_dynamic`` leaves the model in memory)."""
    from llmdiet.quantize.per_row_int8 import ACTIVATION_SCALES, use_activation_scales

    if activation_scales not in ACTIVATION_SCALES:
        raise BackendError(f"activation scales '{activation_scales}': use one of {', '.join(ACTIVATION_SCALES)}")
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    path = Path(path)
    weights = TensorFile(path / WEIGHTS_FILE)
    metadata = weights.metadata
    if metadata.get("format") != FORMAT:
        raise BackendError(f"{path / WEIGHTS_FILE}: format '{metadata.get('format')}' is not {FORMAT}")
    layout = json.loads(metadata["quantized_linears"])
    config = AutoConfig.from_pretrained(path)
    # buffers are built for real: the non-persistent ones (M2M100's sinusoidal position table) are not in the file
    with init_empty_weights(include_buffers=False):
        model = t5_as_in_4x(AutoModelForSeq2SeqLM.from_config(config))
    parts = ("weight_int8", "weight_scale", "weight_zero_point", "bias")
    quantized = {f"{name}.{part}" for name in layout for part in parts}
    # float tensors first: the skeleton's float Linears that get replaced below stay on meta meanwhile
    result = model.load_state_dict(
        weights.read_all(n for n in weights.names() if n not in quantized), strict=False, assign=True
    )
    if result.unexpected_keys:
        raise BackendError(f"{path / WEIGHTS_FILE}: tensors the model does not have: {result.unexpected_keys[:5]}")
    _retie_input_embeddings(model)
    linear_cls = _dynamic_linear_class()
    for index, (name, entry) in enumerate(layout.items()):
        # one layer's int8 codes read, packed and dropped at a time: the file is never all in memory
        if index % TRIM_EVERY_LAYERS == TRIM_EVERY_LAYERS - 1:
            trim_heap(collect=False)  # glibc keeps the freed codes' pages otherwise: the peak grew by ~320 MB
        codes, scale, zero_point = (weights.read(f"{name}.{part}") for part in parts[:3])
        bias = weights.read(f"{name}.bias") if f"{name}.bias" in weights else None
        qlinear = linear_cls(entry["in_features"], entry["out_features"], bias_=entry["bias"], dtype=torch.qint8)
        qlinear.set_weight_bias(_rebuild_qweight(codes, scale, zero_point, entry), bias)
        del codes
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, qlinear)
    check_no_meta_tensors(model, path)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    trim_heap()  # the int8 codes were re-packed into fbgemm/onednn weights: release their transient copies
    return use_activation_scales(model, activation_scales).eval()


# ----------------------------------------------------------------------------- the registry's entry points


def quantize_in_memory(
    model: nn.Module, tokenizer=None, sources=None, device: str = "cpu", per_channel: bool = False
) -> nn.Module:
    return quantize_dynamic_int8(model, per_channel=per_channel)


def make_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    """``dynamic-int8`` (see :mod:`llmdiet.quantize.registry`): int8 codes, scales and float tensors in ``out``."""
    from llmdiet.artifacts import save_tokenizer_and_config

    per_channel = bool(job.per_channel)
    model = quantize_dynamic_int8(model, per_channel=per_channel)
    save_dynamic_int8(model, out)
    save_tokenizer_and_config(model, tokenizer, out)
    return {
        "device": "cpu",
        "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'} affine",
        "activations": "dynamic int8 at run time (reduce_range): per row by default, per batch on request",
        "quantized_linears": len(quantized_linears(model)),
        "kept_float": "token embedding (shared), relative attention bias, layer norms",
        "quantized_engine": torch.backends.quantized.engine,
    }
