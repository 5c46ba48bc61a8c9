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

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Translator:
    """A loaded model or artifact of any kind (fp32/bf16, dynamic-int8, ONNX, CTranslate2, quanto, torchao),
    translating with the same engine code as ``llmdiet eval``."""

    backend: object  # llmdiet.engines.TranslationBackend
    path: str

    @property
    def name(self) -> str:
        return self.backend.name

    def translate(self, sources: list[str], batch_size: int = 16, max_new_tokens: int = 128, num_beams: int = 1,
                  max_source_length: int = 512) -> list[str]:
        """Hypotheses for ``sources`` (give them with their task prefix), in input order; batched by length."""
        from llmdiet.engines import GenerationSettings
        from llmdiet.evaluation.generation import generate_all

        if isinstance(sources, str):
            raise TypeError("translate() takes a list of strings; wrap a single sentence in a list")
        settings = GenerationSettings(max_new_tokens=max_new_tokens, num_beams=num_beams,
                                      max_source_length=max_source_length)
        result = generate_all(self.backend, list(sources), settings, batch_size, warmup_batches=0, progress=False)
        return [t.hypothesis for t in result.translations]

    def size_info(self) -> dict:
        return self.backend.size_info()


def load(path_or_hub_id: str, backend: str = "auto", device: str = "cpu", tokenizer: str | None = None) -> Translator:
    """Load any model llmdiet can run: a hub id, a ``save_pretrained`` directory, an ``llmdiet quantize`` artifact
    (its ``llmdiet_artifact.json`` picks the engine), or ``llmdiet-demo:teacher|student``."""
    from llmdiet.engines import load_backend
    from llmdiet.modeling import resolve_model

    path = resolve_model(str(path_or_hub_id))
    options = {"tokenizer_path": tokenizer} if tokenizer else {}
    return Translator(load_backend(backend, path, device=device, **options), path)


def evaluate(model: str, eval_sets: list[str] | str, out: str | Path, **options) -> dict:
    """``llmdiet eval``: score ``model`` on ``eval_sets`` into ``out``; returns the ``results.json`` content.
    ``options`` are ``llmdiet eval``'s (``batch_size``, ``limit``, ``backend``, ``max_new_tokens``, ...)."""
    from llmdiet.evaluation.harness import EvalArguments, run_eval

    sets = [eval_sets] if isinstance(eval_sets, str) else list(eval_sets)
    args = EvalArguments(model=str(model), eval_set=sets, out=str(out), progress=options.pop("progress", False),
                         **options)
    return run_eval(args, command=["llmdiet.evaluate", str(model), *sets, str(out)])
