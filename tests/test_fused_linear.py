"""q/k/v and wi_0/wi_1 fused into one GEMM each: the same outputs, the same memory, transformers' forward intact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llmdiet.engines.fused_linear import FusedPart, fuse_in_place, fuse_linears
from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
from llmdiet.modeling import module_bytes
from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8

SOURCES = [
    "translate English to French: The cat sat on the mat.",
    "translate English to French: Hello world, this is a much longer sentence with many more words in it.",
    "translate English to French: Yes.",
]


class _Three(nn.Module):
    def __init__(self, d=48, outs=(32, 40, 24), bias=False):
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v = (nn.Linear(d, o, bias=bias) for o in outs)  # different widths: slices must line up


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_fusion_is_exact(per_channel):
    owner = quantize_dynamic_int8(_Three(), per_channel=per_channel)
    x = torch.randn(5, 7, 48)
    separate = torch.cat([owner.q(x), owner.k(x), owner.v(x)], dim=-1)
    fused = fuse_linears([owner.q, owner.k, owner.v])
    assert fused is not None and fused.weight().qscheme() == torch.per_channel_affine
    # same int8 weights and scales, one activation scale: equal (bit for bit on fbgemm; other int8 kernels may
    # apply the per-channel scales in another float order, hence a float32-rounding tolerance)
    torch.testing.assert_close(fused(x), separate, rtol=1e-6, atol=1e-6)
    # the order of the parts is the order asked for (a swapped k/v would not match)
    assert not torch.allclose(fuse_linears([owner.q, owner.v, owner.k])(x)[..., 32:], separate[..., 32:])


def test_float_layers_stay_separate():
    """fp32 fusion measured slower (fused_linear.py): the float layers are left as they are."""
    owner = _Three(bias=True)
    weights = [owner.q.weight, owner.k.weight, owner.v.weight]
    assert fuse_linears([owner.q, owner.k, owner.v]) is None
    assert fuse_in_place(owner, ["q", "k", "v"]) is None
    assert [owner.q.weight, owner.k.weight, owner.v.weight] == weights and type(owner.q) is nn.Linear


def test_int8_in_place_parts_share_one_call_and_free_the_originals():
    owner = quantize_dynamic_int8(_Three())
    x = torch.randn(3, 48)
    separate = [owner.q(x), owner.k(x), owner.v(x)]
    reference = copy.deepcopy(owner)
    before = module_bytes(owner)
    fused = fuse_in_place(owner, ["q", "k", "v"])
    assert all(isinstance(getattr(owner, n), FusedPart) for n in "qkv")
    assert module_bytes(owner) == before  # the fused layer counted once, the separate packed weights gone
    calls = []
    fused.register_forward_hook(lambda *a: calls.append(1))
    for a, b in zip([owner.q(x), owner.k(x), owner.v(x)], separate):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert len(calls) == 1 and owner.q._cache == {}  # one GEMM for the three, nothing kept afterwards
    y = torch.randn(3, 48)  # a different input is recomputed, never served from the cache
    torch.testing.assert_close(owner.k(y), reference.k(y), rtol=1e-6, atol=1e-6)
    assert owner.k(y).shape[-1] == 40


def test_unfusable_layers_are_left_alone():
    owner = quantize_dynamic_int8(_Three())
    assert fuse_linears([owner.q]) is None
    assert fuse_linears([owner.q, _Three().k]) is None  # int8 next to float
    mixed = _Three()
    mixed.k = nn.Linear(48, 40, bias=True)
    mixed = quantize_dynamic_int8(mixed)
    assert fuse_linears([mixed.q, mixed.k]) is None  # bias next to no bias
    other = quantize_dynamic_int8(nn.Sequential(nn.Linear(48, 8), nn.Linear(32, 8)))
    assert fuse_linears([other[0], other[1]]) is None  # different inputs


@pytest.mark.parametrize("int8", [False, True])
def test_fused_static_decoder_and_generate_unchanged_on_the_demo_teacher(tiny_teacher, tiny_tokenizer, int8):
    model = quantize_dynamic_int8(tiny_teacher) if int8 else tiny_teacher
    reference_model = copy.deepcopy(model)
    enc = tiny_tokenizer(SOURCES, return_tensors="pt", padding=True)
    separate = StaticCacheT5Decoder(reference_model, fuse=False).generate(enc["input_ids"], enc["attention_mask"], 30)
    plain = reference_model.generate(**enc, max_new_tokens=30, num_beams=1, do_sample=False)
    bytes_before = module_bytes(model)
    decoder = StaticCacheT5Decoder(model)
    # int8: every block fused; float: none (measured slower)
    assert all((qkv is not None and wi is not None) == int8 for qkv, wi in decoder.fused) and decoder.fused
    assert torch.equal(decoder.generate(enc["input_ids"], enc["attention_mask"], 30), separate)
    assert torch.equal(separate, plain)
    # the model itself still runs transformers' generate (beam search, --decoding generate) with the same output
    assert torch.equal(model.generate(**enc, max_new_tokens=30, num_beams=1, do_sample=False), plain)
    beams = dict(max_new_tokens=12, num_beams=3, do_sample=False)
    assert torch.equal(model.generate(**enc, **beams), reference_model.generate(**enc, **beams))
    assert module_bytes(model) == bytes_before
