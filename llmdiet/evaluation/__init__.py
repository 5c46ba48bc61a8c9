"""Evaluation: score any model or artifact on eval sets, and compare runs.

- ``harness.py``: ``llmdiet eval`` — translate eval sets in timed batches, resumable, write ``results.json``;
  ``run_dir.py`` (what a run directory was made with, its samples) and ``set_runner.py`` (one set) serve it.
- ``generation.py``: batching, timing and memory sampling around an engine's ``translate``.
- ``metrics.py``: BLEU/chrF (sacrebleu) and ROUGE-L (rouge_score, Unicode tokenizer), pure functions.
- ``eval_sets.py``: the versioned eval set declarations (the top-level ``eval_sets/*.yaml``; ``llmdiet/eval_sets/``
  in a wheel) and local files.
- ``reports.py``, ``compare.py``: ``summary.md`` and ``llmdiet compare`` tables and plots.

May import: the core modules (``llmdiet.config``, ``data``, ``modeling``, ``provenance``, ``artifacts``),
``llmdiet.demo`` and ``llmdiet.engines``. Never ``distill`` or ``study``.
"""
