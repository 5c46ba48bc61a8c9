"""What differs between the supported transformers releases (4.57 and 5.x), in one place.

llmdiet is tested at both ends of its supported range (README "Supported versions"): ``constraints.txt`` (the newest
releases) and ``constraints-onnx.txt`` (transformers 4.57, the last release optimum-onnx 0.1.0 accepts). Code that
must behave the same on both asks here instead of testing version numbers itself.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any


@cache
def transformers_major() -> int:
    """The installed transformers' major version, read from its metadata (no import: cheap for early checks)."""
    from importlib.metadata import version

    return int(version("transformers").split(".")[0])


@cache
def training_argument_names() -> frozenset[str]:
    from transformers import Seq2SeqTrainingArguments

    return frozenset(f.name for f in dataclasses.fields(Seq2SeqTrainingArguments))


def warmup_option(ratio: float) -> dict[str, Any]:
    """A linear warmup over ``ratio`` of the training steps: ``warmup_ratio`` in 4.x; 5.x folded it into
    ``warmup_steps`` (a float in [0, 1) is a ratio)."""
    if "warmup_ratio" in training_argument_names():
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}


def extended_attention_bias(attention_mask, dtype):
    """``(batch, 1, 1, src)`` additive bias: 0 where ``attention_mask`` is 1, the dtype's minimum where it is 0 (what
    ``ModuleUtilsMixin.invert_attention_mask`` returned in 4.x; 5.x removed it)."""
    import torch

    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


T5_TYPES = ("t5", "mt5", "umt5", "longt5")


def keep_t5_head_untied(model):
    """flan-T5 and mT5 have an ``lm_head`` of their own (``tie_word_embeddings: false``). transformers 5 ties it to the
    shared embedding whenever a T5 is built from a config (and writes ``tie_word_embeddings: true`` with
    ``scale_decoder_outputs: false``), which silently drops 16.4M of flan-T5-small's 77.0M parameters from random-init
    benchmark shapes and makes a saved student load *tied* (and wrong) in transformers 4.x. Called after every build
    and load: an untied T5 gets its own ``lm_head`` back (4.x's initialisation, normal(0, initializer_factor)) and a
    config that says untied on both majors. Tied T5 checkpoints (original T5) and other families are left as they are.
    Returns ``model``.
    """
    import torch

    config = getattr(model, "config", None)
    head, shared = getattr(model, "lm_head", None), getattr(model, "shared", None)
    if getattr(config, "model_type", None) not in T5_TYPES or head is None or shared is None:
        return model
    untied = getattr(config, "scale_decoder_outputs", None) is False or not getattr(config, "tie_word_embeddings", True)
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
