"""Apply b-bit RTN or GPFQ weight quantization to every ``nn.Linear`` of a seq2seq model.

The result is "fake-quantized": each Linear's weight is replaced by its dequantized codes
(``codes * delta``) in the model's float dtype, so the model runs with the ordinary kernels and its
quality is exactly that of the b-bit weights. The size reported is the **packed** size: b bits
per Linear weight plus one float32 step per layer, plus every other tensor (embeddings, layer norms)
at its float size — what a dense b-bit storage format would take, not what this in-memory model takes.

GPFQ needs calibration batches (encoder inputs with teacher-forced targets, as the Trainer's
collator makes them). Layers are processed in forward order; consecutive layers that read the same
input (q/k/v, the two halves of gated-GELU) are calibrated together. For each group, every batch
runs through the float model (inputs ``X``) and the partly quantized model (inputs ``X~``), and
``H = X~^T X~``, ``G = X~^T X`` are accumulated over the valid (non-padding) positions.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llmdiet.quantize.gpfq import gpfq_from_covariances, make_alphabet, packed_bytes, rtn_quantize

logger = logging.getLogger(__name__)

METHODS = ("rtn", "gpfq")


@dataclass
class LowBitReport:
    method: str
    bits: int
    linear_weights: int = 0
    layers: int = 0
    float_bytes: int = 0  # every tensor that stays float (embeddings, norms, biases)
    fp32_bytes: int = 0  # the whole model at float32, for the ratio
    per_layer: list[dict] = field(default_factory=list)

    @property
    def packed_bytes(self) -> int:
        return packed_bytes(self.linear_weights, self.bits, self.layers) + self.float_bytes

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "bits": self.bits,
            "linear_weights": self.linear_weights,
            "layers": self.layers,
            "packed_bytes": self.packed_bytes,
            "fp32_bytes": self.fp32_bytes,
            "size_ratio_vs_fp32": self.packed_bytes / self.fp32_bytes,
            "size_note": "packed: b bits per Linear weight + one fp32 step per layer + float tensors at 4 bytes",
        }


def _linear_order(model: nn.Module, batch: dict) -> list[list[str]]:
    """Linear layer names in forward order, grouped when consecutive layers read the same input tensor.

    "The same input" is object identity with the previous call's input, which is kept alive until the next
    call: comparing ``data_ptr()`` alone is not enough, because a freed input's memory can be handed to the
    next layer's (different) input, which would group layers by accident of the allocator (and so make the
    GPFQ result depend on what ran before).
    """
    calls: list[tuple[str, bool]] = []
    previous: list[torch.Tensor | None] = [None]

    def record(mod, args, name):
        calls.append((name, args[0] is previous[0]))
        previous[0] = args[0]

    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: record(mod, args, name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(**batch, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        previous[0] = None
    groups: list[list[str]] = []
    seen = set()
    for i, (name, same_input) in enumerate(calls):
        if name in seen:
            continue
        seen.add(name)
        if groups and i > 0 and same_input and calls[i - 1][0] in groups[-1]:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def _row_mask(name: str, batch: dict) -> torch.Tensor:
    """Which positions of a layer's input are real tokens: encoder side or decoder side."""
    if name.startswith("encoder.") or ".EncDecAttention.k" in name or ".EncDecAttention.v" in name:
        return batch["attention_mask"].bool()
    return batch["labels"] != -100


def _capture_inputs(model: nn.Module, names: list[str], batch: dict) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def hook(mod, args, name):
        if name not in captured:
            captured[name] = args[0].detach()

    handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: hook(m, a, n)) for n in names]
    try:
        with torch.no_grad():
            model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: captured[n][_row_mask(n, batch)].double() for n in names}


@torch.no_grad()
def quantize_linears(
    model: nn.Module, method: str, bits: int, calibration: list[dict] | None = None, scale: float = 1.16
) -> LowBitReport:
    """Quantize ``model`` in place (see module docstring); returns the size/bit report."""
    if method not in METHODS:
        raise ValueError(f"unknown low-bit method '{method}' (use one of {METHODS})")
    if method == "gpfq" and not calibration:
        raise ValueError("GPFQ needs calibration batches (input_ids, attention_mask, decoder_input_ids, labels)")
    model.eval()
    report = LowBitReport(method, bits)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    linear_params = {id(m.weight) for m in linears.values()}
    report.float_bytes = sum(p.numel() * 4 for p in model.parameters() if id(p) not in linear_params)
    report.fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    float_model = copy.deepcopy(model) if method == "gpfq" else None
    groups = _linear_order(model, calibration[0]) if method == "gpfq" and calibration else [[n] for n in linears]
    for group in groups:
        covariances: dict[str, Any] = {}
        if method == "gpfq" and calibration and float_model is not None:
            for batch in calibration:
                x = _capture_inputs(float_model, group, batch)
                xt = _capture_inputs(model, group, batch)
                for n in group:
                    H, G = covariances.get(n, (0, 0))
                    covariances[n] = (H + xt[n].T @ xt[n], G + xt[n].T @ x[n])
        for name in group:
            layer = linears[name]
            weight = layer.weight.data
            alphabet = make_alphabet(weight, bits, scale)
            if method == "rtn":
                codes = rtn_quantize(weight, alphabet)
            else:
                H, G = covariances[name]
                codes = gpfq_from_covariances(weight.double(), H, G, alphabet)
            layer.weight.data = (codes.double() * alphabet.delta).to(weight.dtype)
            report.linear_weights += weight.numel()
            report.layers += 1
            report.per_layer.append(
                {"name": name, "delta": alphabet.delta, "mean_abs_code": codes.abs().float().mean().item()}
            )
    return report
