"""Quantization-aware distillation: the student trains through fake-quantized Linear weights.

Each ``nn.Linear`` weight (the LM head excluded by default; embeddings and layer norms are not Linear and stay
float) is parametrized as ``w + (Q(w) - w).detach()`` — the straight-through estimator: the forward pass sees
``Q(w)``, the b-bit symmetric per-output-channel round-to-nearest grid (``2^(b-1) - 1`` levels each side, step
= row max |w| / levels), and the gradient reaches ``w`` as if Q were the identity. After training
:func:`finalize` stores ``Q(w)`` itself, so the saved student's weights lie on the grid; its packed size (b bits
per weight plus one fp32 scale per output row, other tensors at 4 bytes) is recorded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize


def rtn_per_channel(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel round-to-nearest onto ``2^(bits-1) - 1`` levels each side (dequantized)."""
    levels = 2 ** (bits - 1) - 1
    scale = weight.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / levels
    return torch.clamp(torch.round(weight / scale), -levels, levels) * scale


def fixed_grid(weight: torch.Tensor, bits: int, delta: float) -> torch.Tensor:
    """Round-to-nearest onto a fixed per-layer alphabet ``delta * [-K, K]`` (GPFQ's), dequantized."""
    levels = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(weight / delta), -levels, levels) * delta


class FakeQuant(nn.Module):
    """``delta`` None: per-channel RTN of the current weights; else the fixed per-layer grid of GPFQ's alphabet."""

    def __init__(self, bits: int, delta: float | None = None):
        super().__init__()
        self.bits, self.delta = bits, delta

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        q = rtn_per_channel(weight, self.bits) if self.delta is None else fixed_grid(weight, self.bits, self.delta)
        return weight + (q - weight).detach()


def fake_quant_layers(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in skip]


def apply_fake_quant(
    model: nn.Module,
    bits: int,
    skip: tuple[str, ...] = ("lm_head",),
    init: str = "rtn",
    calibration: list[dict] | None = None,
    scale: float = 1.16,
) -> list[str]:
    """Parametrize every Linear (but ``skip``) with :class:`FakeQuant`. ``init="gpfq"``: first quantize the weights
    with GPFQ (:mod:`llmdiet.quantize.lowbit`, on ``calibration`` batches), then train on GPFQ's per-layer grid, so
    training starts exactly from the GPFQ-quantized model."""
    if not 2 <= bits <= 8:
        raise ValueError(f"fake-quant bits must be in [2, 8], got {bits}")
    if init not in ("rtn", "gpfq"):
        raise ValueError(f"unknown fake-quant init '{init}' (rtn or gpfq)")
    names = fake_quant_layers(model, skip)
    modules = dict(model.named_modules())
    deltas: dict[str, float] = {}
    if init == "gpfq":
        from llmdiet.quantize.lowbit import quantize_linears

        kept = {n: modules[n].weight.data.clone() for n in skip if n in modules}  # skipped layers stay float
        report = quantize_linears(model, "gpfq", bits, calibration, scale)
        for n, w in kept.items():
            modules[n].weight.data = w
        deltas = {layer["name"]: layer["delta"] for layer in report.per_layer}
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", FakeQuant(bits, deltas.get(name)))
    return names


def finalize(model: nn.Module) -> dict:
    """Replace every fake-quantized weight by its quantized value; returns the packed-size record."""
    linear_weights, scales, grid = 0, 0, "rtn per channel"
    bits: int | None = None
    module: Any
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            fq = module.parametrizations.weight[0]
            bits = fq.bits
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            linear_weights += module.weight.numel()
            scales += module.weight.shape[0] if fq.delta is None else 1
            grid = "rtn per channel" if fq.delta is None else "gpfq per layer"
    if bits is None:
        return {}
    total = sum(p.numel() for p in model.parameters())
    packed = (linear_weights * bits + 7) // 8 + 4 * scales + 4 * (total - linear_weights)
    return {
        "bits": bits,
        "grid": grid,
        "quantized_weights": linear_weights,
        "packed_bytes": packed,
        "fp32_bytes": 4 * total,
        "size_note": "packed: b bits per Linear weight + one fp32 scale per output row (rtn) or per layer (gpfq) "
        "+ other tensors at 4 bytes",
    }
