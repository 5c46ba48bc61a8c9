"""The registry of distillation methods: one module per method, each declaring everything about it.

A method module (``kd.py``, ``dkd.py``, ``gkd.py``, ``dml.py``) defines

- its **config dataclass**: its own flags with help text and range checks (``__post_init__``);
- its **loss step**: ``loss(step: LossStep) -> (DistillationLoss, student outputs)`` for one batch, using the
  pure functions of :mod:`llmdiet.distill.losses`;
- what it **needs**: a live teacher (``needs_teacher(alpha, config)``), whether it can train from the top-k
  teacher cache (``teacher_cache``), optional trainer hooks (``sample_batches`` for on-policy targets,
  ``build_model`` for a pair of students);
- its **model-card text** (``card(args)``: one sentence on the objective, from the run's own settings)

and registers one :class:`DistillationMethod` with :func:`register`. Modules are found by name in this folder
(``pkgutil``), so a new method is one new file plus its tests (CONTRIBUTING.md, "Add a distillation method").
``llmdiet distill --method``, its flags, the Python API, the study and the model cards all read this registry.

Student modifiers that combine with any method (``shrink``: a layer-copied student with an optional hidden-state
loss; ``fake_quant``: quantization-aware training) declare their config and card text the same way
(:class:`StudentModifier`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Optional

from llmdiet.config import ConfigError

if TYPE_CHECKING:
    import torch

    from llmdiet.distill.losses import DistillationLoss


@dataclass
class LossStep:
    """One batch as a method's loss sees it."""

    trainer: Any  # the DistillationTrainer (its teacher, args, accelerator)
    model: Any  # the (possibly wrapped) student
    inputs: dict  # model inputs: input_ids, attention_mask, decoder_input_ids
    labels: torch.Tensor
    num_items: Any  # valid target tokens of the whole accumulated batch (None: this batch's)
    config: Any  # the method's config dataclass
    cached: Optional[dict] = None  # teacher_topk_ids / teacher_topk_logprobs when training from the teacher cache
    sampled: bool = False  # gkd: this batch's targets were sampled

    @property
    def alpha(self) -> float:
        return self.trainer.alpha

    @property
    def temperature(self) -> float:
        return self.trainer.temperature

    @property
    def label_smoothing(self) -> float:
        return self.trainer.args.label_smoothing_factor

    def student(self, **extra: Any) -> Any:
        return self.model(**self.inputs, use_cache=False, **extra)

    def teacher_logits(self) -> torch.Tensor:
        import torch

        if self.trainer.teacher is None:
            raise ValueError("this loss needs a teacher_model or cached teacher log-probs in the batch")
        with torch.no_grad():
            return self.trainer.teacher(**self.inputs, use_cache=False).logits


@dataclass(frozen=True)
class DistillationMethod:
    name: str
    help: str  # one line for --method's help
    config: type  # its flags: a dataclass with help text and range checks
    loss: Callable[[LossStep], tuple[DistillationLoss, Any]]
    needs_teacher: Callable[[float, Any], bool]  # (alpha, config) -> a live teacher (or its cache) is used
    card: Callable[[Any], str]  # (the run's DistillationArguments) -> the objective, for the model card
    teacher_cache: bool = True  # can train from the cached top-k teacher log-probs
    no_cache_reason: str = ""  # why not, when teacher_cache is False (for --teacher_cache's refusal)
    setup: Optional[Callable[[Any], None]] = None  # (trainer) -> None: per-run state (gkd's sampling RNG)
    sample_batches: Optional[Callable[[Any, list], bool]] = None  # (trainer, batches) -> targets replaced
    build_model: Optional[Callable[[Any, Any, int], Any]] = None  # (student, args, seed) -> the trained module
    students: tuple[str, ...] = ()  # sub-folders of the output that hold the saved students (dml); () = the output
    modifiers: tuple[str, ...] = ("shrink", "fake_quant")  # student modifiers it combines with


@dataclass(frozen=True)
class StudentModifier:
    """An option that changes the student (its initialisation, its weights' grid) under any method."""

    name: str
    config: type
    active: Callable[[Any], bool]  # (args) -> the modifier is on
    card: Callable[[Any], str]  # (args) -> a clause for the model card, when active
    teacher_cache: Callable[[Any], bool] = lambda args: True  # (args) -> can still train from the teacher cache


_METHODS: dict[str, DistillationMethod] = {}
_MODIFIERS: dict[str, StudentModifier] = {}
_LOADED = False


def register(entry: Any) -> Any:
    """Add a method (or student modifier) to the registry; called once by its module."""
    table = _METHODS if isinstance(entry, DistillationMethod) else _MODIFIERS
    if entry.name in table and table[entry.name] is not entry:
        raise ValueError(f"distillation method '{entry.name}' is registered twice")
    table[entry.name] = entry
    return entry


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            importlib.import_module(f"{__name__}.{module}")


def methods() -> dict[str, DistillationMethod]:
    _load()
    return dict(sorted(_METHODS.items(), key=lambda kv: (kv[0] != "kd", kv[0])))  # kd (the default) first


def modifiers() -> dict[str, StudentModifier]:
    _load()
    return dict(sorted(_MODIFIERS.items()))


def get_method(name: str) -> DistillationMethod:
    known = methods()
    if name not in known:
        raise ConfigError(f"--method {name}: unknown distillation method (known: {', '.join(known)})")
    return known[name]


def config_types() -> list[type]:
    """Every method's and modifier's config dataclass, each once, subclasses before their bases (an MRO order)."""
    found: list[type] = []
    entries: list[DistillationMethod | StudentModifier] = [*methods().values(), *modifiers().values()]
    for entry in entries:
        if entry.config not in found:
            found.append(entry.config)
    return [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]


def method_config(name: str, values: Any) -> Any:
    """The method's config dataclass built from ``values`` (an object with those attributes, or a dict)."""
    cls = get_method(name).config
    get = values.get if isinstance(values, dict) else lambda key, default: getattr(values, key, default)
    return cls(**{f.name: get(f.name, f.default) for f in fields(cls)})


def foreign_options(name: str, values: Any) -> list[str]:
    """Flags set away from their defaults that only other methods read (``--lmbda`` with ``--method kd``)."""
    own = {f.name for f in fields(get_method(name).config)}
    owners: dict[str, list[str]] = {}
    for other, entry in methods().items():
        for f in fields(entry.config):
            if f.name not in own and getattr(values, f.name, f.default) != f.default:
                owners.setdefault(f.name, []).append(other)
    return [f"--{flag} belongs to --method {' or '.join(names)}" for flag, names in sorted(owners.items())]


def check_given_flags(method: str, given: Any) -> None:
    """Refuse flags that were *given* (command line, YAML, Python options: the names in ``given``) but belong only
    to other methods, even at their default value (``--lmbda 0.5 --method kd`` trained before, silently)."""
    own = {f.name for f in fields(get_method(method).config)}
    owners: dict[str, list[str]] = {}
    for other, entry in methods().items():
        for f in fields(entry.config):
            if f.name in given and f.name not in own:
                owners.setdefault(f.name, []).append(other)
    if owners:
        from llmdiet.config import ConfigError

        foreign = "; ".join(f"--{flag} belongs to --method {' or '.join(n)}" for flag, n in sorted(owners.items()))
        raise ConfigError(f"{foreign}, not to --method {method}: drop it or choose that method")


def method_help() -> str:
    return "; ".join(f"{name}: {entry.help}" for name, entry in methods().items())
