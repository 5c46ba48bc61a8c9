"""Pruning: the third diet (``llmdiet prune``), beside distillation and quantization.

- ``registry.py``: one row per method (what it removes, which model families, whether it reads calibration rows).
- ``unstructured.py``: ``magnitude`` and ``wanda`` (a share of each weight matrix set to zero) and the ``2:4`` /
  ``4:8`` semi-structured patterns; ``sparse_format.py`` packs those zeros (bitmask + values) and loads them back.
- ``structured.py``: ``width`` (gated-FFN neurons and attention heads by activation importance) and ``depth``
  (whole blocks by block influence): a smaller *dense* config that every engine loads.
- ``vocab.py``: ``vocab`` keeps the tokens a corpus uses and remaps the embedding, ``lm_head`` and tokenizer.
- ``calibration.py``: the activation statistics the calibrated methods read; ``job.py``: the command.

May import: the core modules and ``llmdiet.demo``. Never ``engines``, ``evaluation``, ``distill`` or ``study``.
"""

import sys as _sys
import types as _types

from llmdiet.prune.registry import METHODS, PruneMethod, get_method

__all__ = ["METHODS", "PruneMethod", "get_method", "prune_model"]


def prune_model(*args, **kwargs):
    """``llmdiet.prune(model, method, output_dir, **flags)``: see :func:`llmdiet.prune.job.prune_model`."""
    from llmdiet.prune.job import prune_model as run

    return run(*args, **kwargs)


class _CallableModule(_types.ModuleType):
    """``llmdiet.prune(model, method, output_dir, ...)`` is :func:`prune_model` (the public Python API)."""

    def __call__(self, *args, **kwargs):
        return prune_model(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
