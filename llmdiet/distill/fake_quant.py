"""Quantization-aware distillation: the student trains through fake-quantized Linear weights.

Each ``nn.Linear`` weight (the LM head excluded by default; embeddings and layer norms are not Linear and stay
float) is parametrized as ``w + (Q(w) - w).detach()`` — the straight-through estimator: the forward pass sees
``Q(w)``, the b-bit symmetric per-output-channel round-to-nearest grid (``2^(b-1) - 1`` levels each side, step
= row max |w| / levels), and the gradient reaches ``w`` as if Q were the identity. After training
:func:`finalize` stores ``Q(w)`` itself, so the saved student's weights lie on the grid; its packed size (b bits
per weight plus one fp32 scale per output row, other tensors at 4 bytes) is recorded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def rtn_per_channel(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel round-to-nearest onto ``2^(bits-1) - 1`` levels each side (dequantized)."""
    levels = 2 ** (bits - 1) - 1
    scale = weight.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / levels
    return torch.clamp(torch.round(weight / scale), -levels, levels) * scale


class FakeQuant(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (rtn_per_channel(weight, self.bits) - weight).detach()


def fake_quant_layers(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in skip]


def apply_fake_quant(model: nn.Module, bits: int, skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    if not 2 <= bits <= 8:
        raise ValueError(f"fake-quant bits must be in [2, 8], got {bits}")
    names = fake_quant_layers(model, skip)
    modules = dict(model.named_modules())
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", FakeQuant(bits))
    return names


def finalize(model: nn.Module) -> dict:
    """Replace every fake-quantized weight by its quantized value; returns the packed-size record."""
    linear_weights, rows, bits = 0, 0, None
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            bits = module.parametrizations.weight[0].bits
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            linear_weights += module.weight.numel()
            rows += module.weight.shape[0]
    if bits is None:
        return {}
    total = sum(p.numel() for p in model.parameters())
    packed = (linear_weights * bits + 7) // 8 + 4 * rows + 4 * (total - linear_weights)
    return {"bits": bits, "quantized_weights": linear_weights, "packed_bytes": packed, "fp32_bytes": 4 * total,
            "size_note": "packed: b bits per Linear weight + one fp32 scale per output row + other tensors at 4 bytes"}
