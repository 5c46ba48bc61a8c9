"""Per-row activation scales for the dynamic int8 Linear: outputs that do not depend on the other rows of the batch.

``torch.ao``'s dynamic int8 Linear (fbgemm/x86) quantizes its input with **one** scale and zero point taken from
the min and max of the whole input tensor: a row's int8 codes, and so its output, change with whatever else is in
the batch. Speculative verification (the teacher reads k+1 drafted tokens at once instead of one) and dropping
finished rows (the batch shrinks) then change the int8 teacher's outputs: 192 of 200 demo outputs identical to its
own greedy output with the distilled draft (issue 33).

:class:`PerRowDynamicLinear` keeps the same packed int8 weights and the same fbgemm kernel, and makes the kernel's
per-tensor scale a per-row one (per token, as torchao's ``Int8DynamicActivationInt8WeightConfig`` quantizes
activations on its path):

1. each row ``x_r`` is divided by its own absolute maximum ``a_r`` (so its largest element is exactly +-1);
2. the kernel quantizes every row with one **constant** scale and zero point, those torch.ao's dynamic Linear
   would choose for the range [-1, +1] (reduce_range, 7-bit), passed to fbgemm's
   ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` (the same packed weights, int8 multiply with exact
   int32 accumulation, element-wise dequantization; no min/max pass over the input);
3. each output row is multiplied back by ``a_r`` (with a bias: ``(y_r - b) * a_r + b``).

Where the packed weights are not fbgemm's (the oneDNN engine has no such op), the same constant range is pinned
by appending one anchor row ``[-1, 0, ..., 0, +1]`` to the input of ``quantized::linear_dynamic``, whose min/max
then always give those scale and zero point (bit-identical outputs, one extra row and a copy per call: the first
version of this module, kept as the fallback).

Each row's output is then a function of that row alone, bit for bit (``tests/test_per_row_int8.py``), and the row
uses the kernel's whole int8 range for its own values (the symmetric per-token scheme; per-batch scales give a row
with small activations the resolution left over by the batch's largest). Cost: one element-wise pass before and
one after the GEMM; measured in ``bench/per_row_int8.py``.
"""

from __future__ import annotations

import torch
import torch.ao.nn.quantized.dynamic as nnqd

ACTIVATION_SCALES = ("per_row", "per_batch")
_TINY = torch.finfo(torch.float32).tiny


def _anchor(width: int) -> torch.Tensor:
    """The row ``[-1, 0, ..., 0, +1]`` that pins the kernel's input range to [-1, 1]."""
    anchor = torch.zeros(1, width)
    anchor[0, 0], anchor[0, -1] = -1.0, 1.0
    return anchor


def _pinned_qparams() -> tuple[float, int]:
    """The scale and zero point torch.ao's dynamic Linear chooses for inputs spanning exactly [-1, +1]."""
    return torch._choose_qparams_per_tensor(torch.tensor([-1.0, 1.0]), True)


_SCALE, _ZERO_POINT = _pinned_qparams()


class PerRowDynamicLinear(nnqd.Linear):
    """``torch.ao.nn.quantized.dynamic.Linear`` with per-row activation scales (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # every operation here runs once per Linear call (145 per decoded token on flan-T5-large): kept few
        state = self.__dict__
        rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if rows.dtype != torch.float32:
            rows = rows.float()
        scale = rows.abs().amax(-1, keepdim=True).clamp_(min=_TINY)  # an all-zero row stays zero
        packed = self._packed_params._packed_params
        if not state.get("_anchored"):
            try:
                out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                    rows / scale, _SCALE, _ZERO_POINT, packed
                )
            except RuntimeError:  # not fbgemm's packed weights (oneDNN): the anchor row pins the same range
                state["_anchored"] = True
        if state.get("_anchored"):
            anchor = state.get("_anchor_row")
            if anchor is None or anchor.shape[-1] != rows.shape[-1]:
                anchor = state["_anchor_row"] = _anchor(rows.shape[-1])
            # reduce_range=True as torch.ao's Linear passes it, but positionally: as a keyword, the op's dispatch
            # took 0.9 ms instead of 0.04 ms per call (512x1024, 5 rows; torch 2.15)
            out = torch.ops.quantized.linear_dynamic(torch.cat((rows / scale, anchor)), packed, True)[:-1]
        out = out.mul_(scale)
        bias = self._bias_cache()
        if bias is not None:  # the kernel added the bias to the normalized row: (y - b) * a + b
            out.sub_(bias * scale).add_(bias)
        if x.dim() != 2:
            out = out.reshape(*x.shape[:-1], out.shape[-1])
        return out if x.dtype == torch.float32 else out.to(x.dtype)

    def _bias_cache(self) -> torch.Tensor | None:
        """The bias, read once: ``self.bias()`` unpacks the whole int8 weight on every call."""
        packed, cached = self._packed_params, self.__dict__.get("_bias_cached")
        if cached is None or cached[0] is not packed:
            cached = self.__dict__["_bias_cached"] = (packed, self.bias())
        return cached[1]

    def _get_name(self) -> str:
        return "PerRowDynamicQuantizedLinear"

    @classmethod
    def from_dynamic(cls, layer: nnqd.Linear) -> PerRowDynamicLinear:
        """The same packed weights (shared, not copied) with per-row activation scales."""
        out = cls(layer.in_features, layer.out_features, bias_=False, dtype=torch.qint8)
        out._packed_params = layer._packed_params
        return out


def use_activation_scales(model: torch.nn.Module, scales: str) -> torch.nn.Module:
    """Make every dynamic int8 Linear of ``model`` use ``scales`` ("per_row" or "per_batch") in place (before a
    decoder fuses its layers: :mod:`llmdiet.engines.fused_linear` keeps the parts' class)."""
    if scales not in ACTIVATION_SCALES:
        raise ValueError(f"activation scales '{scales}': use one of {', '.join(ACTIVATION_SCALES)}")
    swaps: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if type(module) is nnqd.Linear and scales == "per_row":
            swaps.append((name, PerRowDynamicLinear.from_dynamic(module)))
        elif type(module) is PerRowDynamicLinear and scales == "per_batch":
            plain = nnqd.Linear(module.in_features, module.out_features, bias_=False, dtype=torch.qint8)
            plain._packed_params = module._packed_params
            swaps.append((name, plain))
    for name, layer in swaps:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    return model
