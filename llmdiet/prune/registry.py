"""The pruning methods: one row each. ``llmdiet prune --method``, its help and the study read this table."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from llmdiet.config import ConfigError

T5_FAMILY = ("t5", "mt5")
ALL_FAMILIES = ("t5", "mt5", "marian", "bart", "m2m_100")


@dataclass(frozen=True)
class PruneMethod:
    name: str
    kind: str  # unstructured | semi-structured | width | depth | vocab
    families: tuple[str, ...]  # the model types it handles (others are refused in one line)
    calibrated: bool  # reads calibration rows (activations)
    summary: str
    function: str  # "module:function(model, tokenizer, settings, calibration) -> (model, tokenizer, report)"

    def run(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


_P = "llmdiet.prune"
METHODS: dict[str, PruneMethod] = {
    m.name: m
    for m in (
        PruneMethod(
            "magnitude",
            "unstructured",
            ALL_FAMILIES,
            False,
            "the smallest |w| of each Linear in the encoder and decoder set to zero (--sparsity of each matrix)",
            f"{_P}.unstructured:prune_magnitude",
        ),
        PruneMethod(
            "wanda",
            "unstructured",
            ALL_FAMILIES,
            True,
            "Wanda (Sun et al. 2023): the smallest |w_ij|*||x_j||_2 of each output row set to zero (--sparsity)",
            f"{_P}.unstructured:prune_wanda",
        ),
        PruneMethod(
            "2:4",
            "semi-structured",
            ALL_FAMILIES,
            False,
            "2 of every 4 consecutive input weights kept (NVIDIA sparse tensor cores; --importance)",
            f"{_P}.unstructured:prune_2_4",
        ),
        PruneMethod(
            "4:8",
            "semi-structured",
            ALL_FAMILIES,
            False,
            "4 of every 8 consecutive input weights kept (--importance)",
            f"{_P}.unstructured:prune_4_8",
        ),
        PruneMethod(
            "width",
            "width",
            T5_FAMILY,
            True,
            "gated-FFN neurons (--ffn_sparsity) and attention heads (--head_sparsity) with the lowest mean |activation| "
            "removed, the same count in every layer: a smaller dense T5 (d_ff, num_heads)",
            f"{_P}.structured:prune_width",
        ),
        PruneMethod(
            "depth",
            "depth",
            T5_FAMILY,
            True,
            "the blocks with the lowest block influence 1 - cos(input, output) removed from each stack "
            "(--depth_sparsity; block 0 stays: it holds the relative position bias)",
            f"{_P}.structured:prune_depth",
        ),
        PruneMethod(
            "vocab",
            "vocab",
            T5_FAMILY,
            False,
            "only the tokens --vocab_file's texts (and the prefix and special tokens) use are kept: embedding, lm_head "
            "and tokenizer remapped; outputs identical on those texts",
            f"{_P}.vocab:prune_vocab",
        ),
    )
}


def get_method(name: str, model_type: str | None = None) -> PruneMethod:
    """The method ``name``; a ConfigError naming the method and the family when it does not handle the model."""
    if name not in METHODS:
        raise ConfigError(f"unknown --method '{name}' (known: {', '.join(METHODS)})")
    method = METHODS[name]
    if model_type is not None and model_type not in method.families:
        raise ConfigError(
            f"--method {name} does not handle {model_type} models (it handles {', '.join(method.families)}); "
            "the unstructured methods (magnitude, wanda, 2:4, 4:8) handle every family"
        )
    return method
