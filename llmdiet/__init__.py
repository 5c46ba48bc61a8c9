"""llmdiet: knowledge distillation, quantization and pruning of Hugging Face seq2seq translation models.

The Python API mirrors the command line (``llmdiet distill|quantize|prune|eval``)::

    import llmdiet
    llmdiet.distill(preset="demo", output_dir="runs/student")          # -> training summary (dict)
    llmdiet.quantize("runs/student", "dynamic-int8", "runs/student-q")   # -> artifact record (dict)
    llmdiet.prune("llmdiet-demo:teacher", "magnitude", "runs/pruned", sparsity=0.5)  # -> prune report (dict)
    translator = llmdiet.load("runs/student-q")                          # -> Translator, any artifact kind
    translator.translate(["translate English to French: Hello."])
    llmdiet.evaluate("runs/student-q", ["demo-en-fr"], "runs/eval")      # -> results.json content (dict)

Everything loads lazily: ``import llmdiet`` costs no torch import.
"""

import logging as _logging

__version__ = "0.1.0"

# transformers imports torchao when it is installed; on a CPU-only machine torchao then logs that
# its CUDA kernels cannot load and torch logs pytree deprecations, at every start. Neither matters
# for llmdiet (the GPU int8 backend checks for CUDA itself), so keep them out of users' consoles.
# transformers also reports tensor-parallel sharding plans on every single-process load (nothing is sharded).
for _name in (
    "torchao",
    "torch.utils._pytree",
    "transformers.distributed",
    "transformers.integrations.tensor_parallel",
):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

__all__ = ["distill", "quantize", "prune", "load", "evaluate", "Translator"]


def __getattr__(name: str):
    import importlib

    if name in ("distill", "quantize", "prune"):  # callable subpackages (see their docstrings)
        return importlib.import_module(f"llmdiet.{name}")
    if name in ("load", "evaluate", "Translator"):
        return getattr(importlib.import_module("llmdiet.api"), name)
    raise AttributeError(f"module 'llmdiet' has no attribute '{name}'")
