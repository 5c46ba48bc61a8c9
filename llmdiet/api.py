"""llmdiet's Python API: the CLI's jobs as functions (``llmdiet.distill``, ``llmdiet.quantize``,
``llmdiet.load``, ``llmdiet.evaluate``). Each takes the same options as its command, with the same checks.

    import llmdiet

    summary = llmdiet.distill(preset="demo", output_dir="runs/api-student", num_train_epochs=1)
    artifact = llmdiet.quantize("runs/api-student", "dynamic-int8", "runs/api-student-int8")
    translator = llmdiet.load("runs/api-student-int8")
    translator.translate(["translate English to French: The children read a book."])
    results = llmdiet.evaluate("runs/api-student-int8", ["demo-en-fr"], "runs/api-eval")
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmdiet.config import ArgumentTypeError, check_python_types


@contextlib.contextmanager
def quiet_libraries():
    """Other libraries' warnings and INFO chatter hidden while the API loads and runs a model (torch.ao's
    deprecation notices, transformers' load reports); ``LLMDIET_LOG_LEVEL=INFO`` or ``DEBUG`` shows them."""
    import logging
    import os
    import warnings

    if os.environ.get("LLMDIET_LOG_LEVEL", "").upper() in ("INFO", "DEBUG"):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("transformers", "optimum", "onnxruntime", "torchao", "torch")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"^(?!llmdiet)")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as hf_logging

            hf_level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover
            hf_logging = None
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            if hf_logging is not None:
                hf_logging.set_verbosity(hf_level)


if TYPE_CHECKING:  # the engines (and torch) load with the first model
    from llmdiet.engines import TranslationBackend


@dataclass
class Translator:
    """A loaded model or artifact of any kind (fp32/bf16, dynamic-int8, ONNX, CTranslate2, quanto, torchao),
    translating with the same engine code as ``llmdiet eval``."""

    backend: TranslationBackend
    path: str

    @property
    def name(self) -> str:
        return self.backend.name

    def translate(
        self,
        sources: list[str],
        batch_size: int = 16,
        max_new_tokens: int = 128,
        num_beams: int = 1,
        max_source_length: int = 512,
    ) -> list[str]:
        """Hypotheses for ``sources`` (give them with their task prefix), in input order; batched by length."""
        from llmdiet.engines import GenerationSettings
        from llmdiet.evaluation.generation import generate_all

        if isinstance(sources, str):
            raise ArgumentTypeError("translate() takes a list of strings; wrap a single sentence in a list")
        sources = list(sources)
        bad = [(i, type(s).__name__) for i, s in enumerate(sources) if not isinstance(s, str)]
        if bad:
            raise ArgumentTypeError(f"translate(): sources[{bad[0][0]}] is a {bad[0][1]}, not a string; pass text only")
        for name, value in (
            ("batch_size", batch_size),
            ("max_new_tokens", max_new_tokens),
            ("num_beams", num_beams),
            ("max_source_length", max_source_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentTypeError(f"translate(): {name} must be an integer >= 1, got {value!r}")
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens, num_beams=num_beams, max_source_length=max_source_length
        )
        from llmdiet.evaluation.generation import source_lengths

        lengths, unit = source_lengths(self.backend, sources)
        long = sum(n > max_source_length for n in lengths) if unit == "tokens" else 0
        if long:
            import logging

            logging.getLogger("llmdiet").warning(
                "translate(): %d of %d sources are longer than max_source_length=%d tokens and are truncated (only "
                "their first %d tokens are translated); split long inputs into sentences",
                long,
                len(sources),
                max_source_length,
                max_source_length,
            )
        # an empty source has no translation: it comes back empty (a model would invent text from nothing)
        todo = [i for i, s in enumerate(sources) if s.strip()]
        out = [""] * len(sources)
        if todo:
            with quiet_libraries():
                result = generate_all(
                    self.backend, [sources[i] for i in todo], settings, batch_size, warmup_batches=0, progress=False
                )
            for i, t in zip(todo, result.translations):
                out[i] = t.hypothesis
        return out

    def size_info(self) -> dict:
        return self.backend.size_info()


def load(
    path_or_hub_id: str,
    backend: str = "auto",
    device: str = "cpu",
    tokenizer: str | None = None,
    draft: str | None = None,
    draft_lookahead: int = 4,
    drop_finished: bool = False,
    int8_activation_scales: str = "per_row",
) -> Translator:
    """Load any model llmdiet can run: a hub id, a ``save_pretrained`` directory, an ``llmdiet quantize`` artifact
    (its ``llmdiet_artifact.json`` picks the engine), or ``llmdiet-demo:teacher|student``.

    ``draft``: speculative decoding (``llmdiet eval --draft_model``): a small model with the same vocabulary (the
    distilled student) proposes tokens this model verifies; greedy output is unchanged for float models.
    ``drop_finished``: finished rows leave the batch (``llmdiet eval --drop_finished``).
    ``int8_activation_scales``: dynamic-int8 artifacts, "per_row" (each sentence's output independent of its batch)
    or "per_batch" (torch.ao's own), as ``llmdiet eval --int8_activation_scales``."""
    if not isinstance(path_or_hub_id, (str, Path)):
        raise ArgumentTypeError(
            f"load(): path_or_hub_id must be a path or hub id (str or Path), got {path_or_hub_id!r}"
        )
    for name, value in (("backend", backend), ("device", device)):
        if not isinstance(value, str):
            raise ArgumentTypeError(f"load(): {name} must be a string, got {value!r}")
    from llmdiet.engines import TORCH_BACKENDS, BackendError, detect_backend, load_backend
    from llmdiet.modeling import resolve_model

    path = resolve_model(str(path_or_hub_id))
    options: dict = {"tokenizer_path": tokenizer} if tokenizer else {}
    if draft is not None:
        name = detect_backend(path) if backend == "auto" else backend
        if name not in TORCH_BACKENDS:
            raise BackendError(f"draft=: backend {name} cannot verify drafts (torch backends only)")
        options.update(draft=resolve_model(str(draft)), draft_lookahead=draft_lookahead)
    if drop_finished:
        name = detect_backend(path) if backend == "auto" else backend
        if name not in TORCH_BACKENDS:
            raise BackendError(f"drop_finished=: backend {name} has no static decoder (torch backends only)")
        options["drop_finished"] = True
    if int8_activation_scales not in ("per_row", "per_batch"):
        raise ArgumentTypeError(
            f"load(): int8_activation_scales must be per_row or per_batch, got {int8_activation_scales!r}"
        )
    if (detect_backend(path) if backend == "auto" else backend) == "dynamic-int8":
        options["activation_scales"] = int8_activation_scales
    with quiet_libraries():
        return Translator(load_backend(backend, path, device=device, **options), path)


def evaluate(
    model: str, eval_set: list[str] | str | None = None, output_dir: str | Path | None = None, **options
) -> dict:
    """``llmdiet eval``: score ``model`` on ``eval_set`` (one name or file, or a list) into ``output_dir``; returns
    the ``results.json`` content. ``options`` are ``llmdiet eval``'s flags by the same names (``batch_size``,
    ``max_eval_samples``, ``backend``, ``max_new_tokens``, ...). Old names (``eval_sets``, ``out``, ``limit``,
    ``prefix``, ``reference_column``) still work, with a FutureWarning."""
    from dataclasses import fields

    from llmdiet.config import rename_deprecated_kwargs
    from llmdiet.evaluation.harness import EvalArguments, run_eval

    known = {f.name for f in fields(EvalArguments)}
    options = rename_deprecated_kwargs("llmdiet.evaluate()", options, known)
    eval_set = options.pop("eval_set", eval_set)
    output_dir = options.pop("output_dir", output_dir)
    if not isinstance(model, (str, Path)):
        raise ArgumentTypeError(f"evaluate(): model must be a path or hub id (str or Path), got {model!r}")
    if not isinstance(output_dir, (str, Path)):
        raise ArgumentTypeError(f"evaluate(): output_dir must be a directory path (str or Path), got {output_dir!r}")
    if isinstance(eval_set, (str, Path)):
        eval_set = [str(eval_set)]
    if not isinstance(eval_set, (list, tuple)) or not all(isinstance(s, (str, Path)) for s in eval_set):
        raise ArgumentTypeError(f"evaluate(): eval_set must be a set name or file, or a list of them, got {eval_set!r}")
    sets = [str(s) for s in eval_set]
    check_python_types("evaluate()", [EvalArguments], options)
    args = EvalArguments(
        model=str(model), eval_set=sets, output_dir=str(output_dir), progress=options.pop("progress", False), **options
    )
    return run_eval(args, command=["llmdiet.evaluate", str(model), *sets, str(output_dir)])
