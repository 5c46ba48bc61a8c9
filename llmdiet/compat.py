"""What differs between the supported transformers releases (4.57 and 5.x), in one place.

llmdiet is tested at both ends of its supported range (docs/install.md "Supported versions"): ``constraints.txt`` (the newest
releases) and ``constraints-onnx.txt`` (transformers 4.57, the last release optimum-onnx 0.1.0 accepts). Code that
must behave the same on both asks here instead of testing version numbers itself.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def transformers_major() -> int:
    """The installed transformers' major version, read from its metadata (no import: cheap for early checks)."""
    from importlib.metadata import version

    return int(version("transformers").split(".")[0])


def warmup_option(ratio: float) -> dict[str, Any]:
    """A linear warmup over ``ratio`` of the training steps: ``warmup_ratio`` in 4.x; 5.x folded it into
    ``warmup_steps`` (a float in [0, 1) is a ratio)."""
    if transformers_major() < 5:  # read from metadata: presets are built before transformers loads
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}


def extended_attention_bias(attention_mask, dtype):
    """``(batch, 1, 1, src)`` additive bias: 0 where ``attention_mask`` is 1, the dtype's minimum where it is 0 (what
    ``ModuleUtilsMixin.invert_attention_mask`` returned in 4.x; 5.x removed it)."""
    import torch

    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


T5_TYPES = ("t5", "mt5", "umt5", "longt5")


def t5_scales_decoder_output(config) -> bool:
    """Whether a T5 multiplies the last decoder state by d_model**-0.5 before ``lm_head`` (original T5, tied; not
    T5 v1.1 / flan-T5). 5.x says it in ``scale_decoder_outputs`` and always reports ``tie_word_embeddings: true``;
    4.x reads ``tie_word_embeddings``."""
    scaled = getattr(config, "scale_decoder_outputs", None)
    if scaled is not None:
        return bool(scaled)
    if getattr(config, "model_type", None) == "mt5" and transformers_major() >= 5:
        return False  # 5.x's mT5 never scales (and always reports tie_word_embeddings: true)
    return bool(getattr(config, "tie_word_embeddings", True))


def use_eager_attention(model) -> None:
    """Run ``model`` with eager attention (matmul, + position bias, + mask, softmax), T5's only implementation in 4.x.
    transformers 5 picks SDPA for T5, whose kernels round differently: llmdiet's static decoder computes the eager
    arithmetic, and its ids equal ``generate``'s only when the model runs eager too."""
    if getattr(model.config, "_attn_implementation", "eager") in (None, "eager"):
        return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:  # pragma: no cover - a transformers without the setter
        model.config._attn_implementation = "eager"


def t5_as_in_4x(model):
    """flan-T5 and mT5 have an ``lm_head`` of their own (``tie_word_embeddings: false``). transformers 5 ties it to the
    shared embedding whenever a T5 is built from a config (and writes ``tie_word_embeddings: true`` with
    ``scale_decoder_outputs: false``), which silently drops 16.4M of flan-T5-small's 77.0M parameters from random-init
    benchmark shapes and makes a saved student load *tied* (and wrong) in transformers 4.x. Called after every build
    and load: an untied T5 gets its own ``lm_head`` back (4.x's initialisation, normal(0, initializer_factor)) and a
    config that says untied on both majors. Tied T5 checkpoints (original T5) and other families are left as they are.
    T5s also run eager attention, as in 4.x (see :func:`use_eager_attention`). Returns ``model``.
    """
    import torch

    config = getattr(model, "config", None)
    head, shared = getattr(model, "lm_head", None), getattr(model, "shared", None)
    if getattr(config, "model_type", None) not in T5_TYPES or head is None or shared is None:
        return model
    use_eager_attention(model)
    untied = not t5_scales_decoder_output(config)  # flan-T5 and mT5: their own lm_head, no output scaling
    if not untied:
        return model
    if head.weight is shared.weight:  # built from a config by transformers 5
        weight = torch.empty_like(shared.weight)
        if weight.device.type != "meta":
            weight.normal_(0.0, getattr(config, "initializer_factor", 1.0))
        head.weight = torch.nn.Parameter(weight, requires_grad=shared.weight.requires_grad)
    config.tie_word_embeddings = False  # so the saved config.json loads untied in 4.x and 5.x
    return model


def decoder_inputs_from_labels(model, labels):
    """Teacher-forcing decoder inputs for ``labels`` (-100 = ignored): the model's own
    ``prepare_decoder_input_ids_from_labels`` where it has one (T5, Marian, BART), else the generic right shift with
    ``decoder_start_token_id`` that M2M100/NLLB's forward applies (they have no such method)."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if prepare is not None:
        return prepare(labels=labels)
    config = model.config
    start, pad = config.decoder_start_token_id, config.pad_token_id
    if start is None or pad is None:
        raise ValueError(f"{config.model_type}: decoder_start_token_id and pad_token_id must be set in config.json")
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = start
    return shifted.masked_fill(shifted == -100, pad)
