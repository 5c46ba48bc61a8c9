"""The study's ``prune:`` section: pruned models beside the distilled and quantized ones.

    prune:
      models: [teacher]                 # what to prune: the teacher and/or trained students (labels)
      recover: [none, distill]          # each variant as pruned, and recovered (default for every variant)
      variants:                         # name -> llmdiet prune flags (+ its own recover list)
        width-50: {method: width, ffn_sparsity: 0.5}
        magnitude-50: {method: magnitude, sparsity: 0.5, recover: [none]}

Each variant of each model gives the model ``<variant>`` (``<model>.<variant>`` for a student), made by the job
``prune/<label>``, and, per recovery, ``<label>+distill`` (``llmdiet distill`` with the pruned model as the
student, the study's distill settings, from the unpruned teacher: Minitron's recipe) or ``<label>+finetune``
(the same run with alpha 0: plain fine-tuning with the original schedule from its start, learning-rate rewinding).
Every one of them is evaluated, timed and judged like the other compressions; ``quantize.students`` may name
pruned models too (prune, then quantize).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmdiet.config import ConfigError

RECOVERIES = ("none", "finetune", "distill")
VARIANT_FLAGS = ("sparsity", "importance", "ffn_sparsity", "head_sparsity", "depth_sparsity", "max_vocab_samples")


@dataclass
class PruneSettings:
    models: list[str] = field(
        default_factory=lambda: ["teacher"],
        metadata={"help": "What to prune: teacher and/or trained student labels."},
    )
    recover: list[str] = field(
        default_factory=lambda: ["none", "distill"],
        metadata={"help": "Per variant: none (as pruned), finetune (alpha 0) and/or distill (from the teacher)."},
    )
    variants: dict = field(
        default_factory=dict,
        metadata={"help": "name -> {method: NAME, its llmdiet prune flags, recover: [...] (optional)}."},
    )

    def __post_init__(self) -> None:
        from llmdiet.prune import METHODS

        _check_recover("recover", self.recover)
        for name, flags in self.variants.items():
            where = f"variants.{name}"
            if not isinstance(flags, dict) or flags.get("method") not in METHODS:
                raise ConfigError(f"{where}: needs method: one of {', '.join(METHODS)}")
            if not str(name).replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"{where}: a variant name is letters, digits, '-' and '_'")
            unknown = sorted(set(flags) - {"method", "recover", *VARIANT_FLAGS})
            if unknown:
                raise ConfigError(
                    f"{where}: unknown flag(s) {unknown} (known: method, recover, {', '.join(VARIANT_FLAGS)})"
                )
            recover = flags.get("recover", self.recover)
            _check_recover(f"{where}.recover", recover)
            if flags["method"] == "vocab" and set(recover) - {"none"}:
                raise ConfigError(
                    f"{where}: a vocabulary-trimmed model no longer shares the teacher's vocabulary, so distillation "
                    "cannot recover it; use recover: [none]"
                )

    def plan(self) -> list[tuple[str, str, dict, list[str]]]:
        """(label, base model label, llmdiet prune flags, recoveries) of every pruned model."""
        out = []
        for base in self.models:
            for name, flags in self.variants.items():
                label = name if base == "teacher" else f"{base}.{name}"
                prune_flags = {k: v for k, v in flags.items() if k != "recover"}
                out.append((label, base, prune_flags, list(flags.get("recover", self.recover))))
        return out


def _check_recover(where: str, recover) -> None:
    if not isinstance(recover, list) or not recover or set(recover) - set(RECOVERIES):
        raise ConfigError(f"{where}: expected a list of {', '.join(RECOVERIES)}, got {recover!r}")
