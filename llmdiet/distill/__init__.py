"""Distillation: teach a student seq2seq model from a teacher.

- ``methods/``: the registry; one module per method (``kd``, ``dkd``, ``gkd``, ``dml``) and per student modifier
  (``shrink``, ``quant_aware``), each with its config dataclass, loss step, needs and model-card text.
- ``losses.py``: the distillation losses as pure float32 functions (masked, T²-scaled, token-normalised).
- ``trainer.py``: ``DistillationTrainer``, a ``Seq2SeqTrainer`` subclass with a frozen teacher; it dispatches
  through the registry.
- ``settings.py``: the configuration dataclasses and their checks; ``presets.py``: ``reference`` and ``demo``.
- ``run.py``: one run in steps (models, data, trainer, train, save); ``card.py``: model card and loss plot.
- ``job.py``: ``llmdiet distill`` / ``recipes/distill.py`` and the Python API ``llmdiet.distill(...)``.
- ``student_init.py``, ``fake_quant.py``, ``mutual.py``: the mechanics of layer copying, fake quantization and
  the pair of dml students.
- ``teacher_cache.py``: the teacher's top-k log-probs computed once (KD without a teacher forward).
- ``pseudo_labels.py``: sequence-level KD targets (the teacher's beam translations), cached.

May import: the core modules, ``llmdiet.demo``, ``llmdiet.engines`` and ``llmdiet.evaluation``
(in-training BLEU and teacher translations go through the eval harness's code). Never ``study``.

The package is also the public function ``llmdiet.distill(**options)`` (see :func:`llmdiet.distill.job.distill`):
calling the module runs the job, so ``import llmdiet.distill.losses`` and ``llmdiet.distill(...)`` both work.
"""

import sys as _sys
import types as _types
from typing import Any


class _CallableModule(_types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from llmdiet.distill.job import distill

        return distill(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
