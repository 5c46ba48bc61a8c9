"""``ct2-int8``: conversion to CTranslate2 with int8 weights (the fastest T5 engine on CPU).

``ctranslate2.converters.TransformersConverter(path).convert(out, quantization="int8")`` writes
``model.bin`` (int8 Linear weights, float32 embeddings/norms), the engine's ``config.json`` and
``shared_vocabulary.json``. CTranslate2 works on token *strings*, so the HF tokenizer is saved
in ``out/tokenizer/`` (a subfolder, because CTranslate2's ``config.json`` would shadow the HF one).

Per family, where CTranslate2's converter and transformers' ``generate`` differ, the artifact records what the
engine needs to give the same output ids:

* **Marian**: CTranslate2 starts the decoder from a zero vector (original Marian) and drops the ``<pad>`` row;
  transformers starts from the ``<pad>`` embedding, which training makes non-zero (it is tied to the output
  layer). Measured on a trained tiny Marian: 0/20 outputs equal to transformers'. The conversion here keeps the
  ``<pad>`` row and starts from it, and ``<pad>`` is never generated (``suppress_sequences``), as in
  transformers' opus-mt generation configs (``bad_words_ids``).
* **M2M100 / NLLB / mBART-50**: the target language is the first generated token (``forced_bos_token_id``);
  CTranslate2 takes it as ``target_prefix`` (recorded as ``target_prefix``; the engine strips it from the output).

The compute type is chosen when the model is loaded: ``int8`` on CPU, ``int8_bfloat16`` on GPU.
float16 compute types are refused for T5: its activations overflow to NaN in float16.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from llmdiet.artifacts import BackendError
from llmdiet.compat import t5_scales_decoder_output

TOKENIZER_DIR = "tokenizer"
QUANTIZATION = "int8"  # the weights' type (the family tests convert in float32 to compare ids exactly)
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
        with _marian_starts_from_pad(model_type):
            converter.convert(str(out), quantization=QUANTIZATION, force=True)
    except (NotImplementedError, ValueError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BackendError(f"CTranslate2 cannot convert '{model_path}' ({model_type}): {first}") from None
    tokenizer.save_pretrained(out / TOKENIZER_DIR)
    return {
        **_decoding_rules(model_path, tokenizer, model_type),
        "weights": QUANTIZATION,
        "compute_type": dict(COMPUTE_TYPES),
        "tokenizer_dir": TOKENIZER_DIR,
        "ctranslate2_version": ctranslate2.__version__,
    }


@contextmanager
def _marian_starts_from_pad(model_type: str | None):
    """During the conversion, CTranslate2's Marian loader keeps ``<pad>`` and starts the decoder from its embedding
    (see the module docstring), and BART configs without ``normalize_before`` convert as post-norm (BART's own
    layout); T5s convert with the output scaling transformers applies; other families convert unchanged."""
    from ctranslate2.converters import transformers as ct2_transformers

    name = {"mt5": "MT5Config", "t5": "T5Config", "bart": "BartConfig", "marian": "MarianConfig"}.get(str(model_type))
    stock = ct2_transformers._MODEL_LOADERS.get(name) if name else None
    if stock is None:
        yield
        return
    patch = _t5_loader if model_type in T5_FAMILY else _bart_loader if model_type == "bart" else _marian_loader
    ct2_transformers._MODEL_LOADERS[name] = patch(type(stock))()
    try:
        yield
    finally:
        ct2_transformers._MODEL_LOADERS[name] = stock


def _t5_loader(stock: type) -> type:
    class ScaleAsTransformers(stock):
        def get_model_spec(self, model):  # CTranslate2 reads tie_word_embeddings, which transformers 5 sets to true
            model.config.tie_word_embeddings = t5_scales_decoder_output(model.config)
            return super().get_model_spec(model)

    return ScaleAsTransformers


def _bart_loader(stock: type) -> type:
    class PostNorm(stock):
        def get_model_spec(self, model):  # fairseq BART configs say normalize_before: false; BartConfig may not
            model.config.normalize_before = getattr(model.config, "normalize_before", False)
            return super().get_model_spec(model)

    return PostNorm


def _marian_loader(stock: type) -> type:
    from ctranslate2.converters import transformers as ct2_transformers

    class StartFromPad(stock):
        def get_model_spec(self, model):
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return ct2_transformers.BartLoader.get_model_spec(self, model)

        def set_config(self, config, model, tokenizer):
            super().set_config(config, model, tokenizer)
            config.decoder_start_token = tokenizer.convert_ids_to_tokens(model.config.decoder_start_token_id)

        def set_decoder(self, spec, decoder):
            ct2_transformers.BartLoader.set_decoder(self, spec, decoder)
            spec.start_from_zero_embedding = False

        def get_vocabulary(self, model, tokenizer):
            return ct2_transformers.BartLoader.get_vocabulary(self, model, tokenizer)

    return StartFromPad


def _decoding_rules(model_path: str, tokenizer, model_type: str | None) -> dict:
    """What ``generate`` does from the model's generation config that CTranslate2 needs as translate options."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(str(model_path))
    except (OSError, ValueError):
        generation = None
    rules: dict = {}
    forced = getattr(generation, "forced_bos_token_id", None)
    if forced is not None:
        rules["target_prefix"] = tokenizer.convert_ids_to_tokens(int(forced))
    suppressed = [tokenizer.convert_ids_to_tokens(ids) for ids in (getattr(generation, "bad_words_ids", None) or [])]
    if model_type == "marian" and tokenizer.pad_token:
        suppressed.append([tokenizer.pad_token])
    if suppressed:
        rules["suppress_sequences"] = suppressed
    return rules


def make_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    """``ct2-int8`` (see :mod:`llmdiet.quantize.registry`): the converter reads the checkpoint by path."""
    return {"device": job.device, **convert_ct2_int8(job.model, out, tokenizer, model_type)}
