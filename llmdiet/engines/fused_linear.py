"""Exact fusion of Linear layers that read the same input into one GEMM (T5's q/k/v and gated wi_0/wi_1).

``fuse_linears([q, k, v])`` returns one layer whose output is ``cat([q(x), k(x), v(x)], -1)``:

* ``torch.ao`` dynamic int8 Linear (``llmdiet quantize --method dynamic-int8``): the int8 weights are
  concatenated **unchanged** into one per-channel quantized weight whose channel scales are the source layers'
  scales (per-tensor scales repeated per channel). The activation is quantized once with the same scale as
  each separate call would choose (it is the same tensor), int8 products accumulate exactly in int32 and each
  channel is rescaled by ``activation_scale * its own weight scale`` as before: the outputs are the same.

Anything else gives ``None`` and the caller keeps the separate layers: float ``nn.Linear`` layers too, since one
concatenated fp32 GEMM measured slower than three on flan-T5-large (0.90x at batch 1, 0.97x at batch 16, 2-core
AMD EPYC, 2026-12-02), and torchao tensor subclasses, weights with zero points, a layer with a bias next to one
without, different input sizes.

``fuse_in_place(owner, names)`` also keeps the model's memory as it was: the int8 layers become
:class:`FusedPart` slices of the fused layer (their packed weights are freed), so ``transformers``' own forward
(``generate``, beam search) computes the same values as before.
"""

from __future__ import annotations

import torch
from torch import nn


def _dynamic_int8_linear_type():
    try:
        from torch.ao.nn.quantized.dynamic import Linear
    except ImportError:  # pragma: no cover - torch builds without quantization
        return None
    return Linear


def _fuse_dynamic_int8(layers) -> nn.Module | None:
    ints, scales = [], []
    for layer in layers:
        if getattr(layer, "_packed_params", None) is None or layer._packed_params.dtype != torch.qint8:
            return None
        weight = layer.weight()
        scheme = weight.qscheme()
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            if weight.q_zero_point() != 0:
                return None
            scales.append(torch.full((weight.shape[0],), weight.q_scale(), dtype=torch.float64))
        elif scheme in (torch.per_channel_affine, torch.per_channel_symmetric) and weight.q_per_channel_axis() == 0:
            if bool(weight.q_per_channel_zero_points().ne(0).any()):
                return None
            scales.append(weight.q_per_channel_scales().to(torch.float64))
        else:
            return None
        ints.append(weight.int_repr())
    biases = [layer.bias() for layer in layers]
    if any(b is not None for b in biases) and not all(b is not None for b in biases):
        return None
    int_weight = torch.cat(ints, dim=0)
    scale = torch.cat(scales)
    qweight = torch._make_per_channel_quantized_tensor(int_weight, scale, torch.zeros(scale.shape, dtype=torch.long), 0)
    # the parts' own class: per-row activation scales (llmdiet.quantize.per_row_int8) stay per row once fused
    fused = type(layers[0])(int_weight.shape[1], int_weight.shape[0], bias_=False, dtype=torch.qint8)
    fused.set_weight_bias(qweight, torch.cat(biases) if biases[0] is not None else None)
    return fused


def fuse_linears(layers: list) -> nn.Module | None:
    """One layer computing ``cat([layer(x) for layer in layers], -1)`` exactly, or None where that is not possible."""
    if len(layers) < 2:
        return None
    dynamic_linear = _dynamic_int8_linear_type()
    if not all(hasattr(layer, "in_features") and hasattr(layer, "out_features") for layer in layers):
        return None
    if len({layer.in_features for layer in layers}) != 1:
        return None  # different inputs: not one GEMM
    if dynamic_linear is None or not all(isinstance(layer, dynamic_linear) for layer in layers):
        return None
    if len({type(layer) for layer in layers}) != 1:
        return None  # per-row and per-batch activation scales are not one GEMM
    return _fuse_dynamic_int8(layers)


class FusedPart(nn.Module):
    """Columns ``[start, end)`` of a fused layer's output; the parts of one group share one call per input tensor.

    T5 calls ``q(x)``, ``k(x)``, ``v(x)`` (and ``wi_0(x)``, ``wi_1(x)``) on the same tensor one after the other:
    the first part computes the fused GEMM, the others slice the kept result, the last part drops it.
    """

    def __init__(self, fused: nn.Module, cache: dict, start: int, end: int, last: bool):
        super().__init__()
        self.fused = fused  # shared by the group's parts (counted once by Module.modules())
        self._cache, self.start, self.end, self.last = cache, start, end, last
        self.in_features, self.out_features = fused.in_features, end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cache = self._cache
        if cache.get("input") is not x:
            cache["input"], cache["output"] = x, self.fused(x)
        out = cache["output"][..., self.start : self.end]
        if self.last:
            cache.clear()
        return out


def fuse_in_place(owner: nn.Module, names: list[str]) -> nn.Module | None:
    """The fused layer of ``owner``'s ``names`` (cached on ``owner``), with the originals made to share its memory."""
    key = "_llmdiet_fused_" + "_".join(names)
    existing = owner.__dict__.get(key)
    if existing is not None:
        return existing
    layers = [getattr(owner, name) for name in names]
    fused = fuse_linears(layers)
    if fused is None:
        return None
    # int8 packed weights cannot be views: the originals become slices of the fused output
    cache: dict[str, torch.Tensor] = {}
    start = 0
    for index, (name, layer) in enumerate(zip(names, layers)):
        end = start + layer.out_features
        setattr(owner, name, FusedPart(fused, cache, start, end, last=index == len(names) - 1))
        start = end
    object.__setattr__(owner, key, fused)  # not a registered submodule: not in state_dict or modules()
    return fused
