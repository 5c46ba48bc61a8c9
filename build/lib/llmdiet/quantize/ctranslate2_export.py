"""``ct2-int8``: conversion to CTranslate2 with int8 weights (the fastest T5 engine on CPU).

``ctranslate2.converters.TransformersConverter(path).convert(out, quantization="int8")`` writes
``model.bin`` (int8 Linear weights, float32 embeddings/norms), the engine's ``config.json`` and
``shared_vocabulary.json``. CTranslate2 works on token *strings*, so the HF tokenizer is saved
in ``out/tokenizer/`` (a subfolder, because CTranslate2's ``config.json`` would shadow the HF one).

The compute type is chosen when the model is loaded: ``int8`` on CPU, ``int8_bfloat16`` on GPU.
float16 compute types are refused for T5: its activations overflow to NaN in float16.
"""

from __future__ import annotations

from pathlib import Path

from llmdiet.artifacts import BackendError

TOKENIZER_DIR = "tokenizer"
COMPUTE_TYPES = {"cpu": "int8", "cuda": "int8_bfloat16"}
T5_FAMILY = ("t5", "mt5", "umt5", "longt5")


def check_compute_type(compute_type: str, model_type: str | None) -> None:
    if "float16" in compute_type and "bfloat16" not in compute_type and (model_type or "t5") in T5_FAMILY:
        raise BackendError(
            f"compute type '{compute_type}' is refused for {model_type or 'T5'} models: T5 overflows to NaN in float16 "
            "(use int8 on CPU, int8_bfloat16 on GPU)"
        )


def convert_ct2_int8(model_path: str, out: str | Path, tokenizer, model_type: str | None = None) -> dict:
    """Convert ``model_path`` into ``out``; returns artifact fields (compute types per device)."""
    import ctranslate2

    check_compute_type(COMPUTE_TYPES["cuda"], model_type)  # documents the rule; int8_bfloat16 passes
    out = Path(out)
    converter = ctranslate2.converters.TransformersConverter(str(model_path))
    try:
        converter.convert(str(out), quantization="int8", force=True)
    except NotImplementedError as err:
        raise BackendError(f"CTranslate2 cannot convert '{model_path}': {err}") from None
    tokenizer.save_pretrained(out / TOKENIZER_DIR)
    return {
        "weights": "int8",
        "compute_type": dict(COMPUTE_TYPES),
        "tokenizer_dir": TOKENIZER_DIR,
        "ctranslate2_version": ctranslate2.__version__,
    }


def make_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    """``ct2-int8`` (see :mod:`llmdiet.quantize.registry`): the converter reads the checkpoint by path."""
    return {"device": job.device, **convert_ct2_int8(job.model, out, tokenizer, model_type)}
