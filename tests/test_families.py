"""Every supported seq2seq family, with its real tokenizer class (``llmdiet.demo.families``): T5, mT5, Marian, BART
and M2M100 teacher/student pairs built locally. For each family, every engine's greedy output ids equal
transformers' ``generate`` on the same weights, a kd run lowers the loss, and the T5 prefix is used only for T5.
One non-T5 family (BART) also trains with every registered distillation method."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from test_distill import parse, small_run_argv

from llmdiet.config import ConfigError
from llmdiet.demo.families import FAMILIES, build_family_pair, family_prefix
from llmdiet.distill.methods import methods
from llmdiet.engines import GenerationSettings, load_backend

SOURCES = [
    "The children like the city.",
    "My brother buys bread at the market every morning.",
    "The doctor writes a letter.",
    "We prepare coffee this evening.",
    "The new school is beautiful.",
    "I like music.",
]
GREEDY = GenerationSettings(max_new_tokens=24)


@pytest.fixture(scope="session")
def family_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    built: dict[str, dict] = {}

    def get(family: str) -> dict:
        if family not in built:
            built[family] = build_family_pair(family, root / family, teacher_steps=120)
        return built[family]

    return get


def _reference_ids(path, family: str) -> list[list[int]]:
    """transformers' own greedy ``generate`` on the saved model (the model's generation config applies)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    return _generate_ids(model, tok, family)


@torch.inference_mode()
def _generate_ids(model, tok, family: str) -> list[list[int]]:
    enc = tok([family_prefix(family) + s for s in SOURCES], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=GREEDY.max_new_tokens, num_beams=1, do_sample=False)
    return [_strip(row, tok) for row in out.tolist()]


def _strip(ids: list[int], tok) -> list[int]:
    """Generated ids without the decoder start token and the padding after EOS."""
    ids = ids[1:]
    if tok.eos_token_id in ids:
        ids = ids[: ids.index(tok.eos_token_id) + 1]
    return ids


def _engine_output(backend, family: str, settings: GenerationSettings = GREEDY) -> list[tuple[str, int]]:
    """(text, generated token count) per source from an llmdiet engine."""
    out = backend.translate([family_prefix(family) + s for s in SOURCES], settings)
    return [(t.hypothesis, t.generated_tokens) for t in out]


def _expected(tok, ids: list[list[int]]) -> list[tuple[str, int]]:
    """The same from generate's ids: equal texts and equal counts mean equal output ids (up to special tokens)."""
    return [(t.strip(), len(i)) for t, i in zip(tok.batch_decode(ids, skip_special_tokens=True), ids)]


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_translates_and_the_reference_output_is_not_trivial(family, family_pairs):
    from transformers import AutoTokenizer

    path = family_pairs(family)["teacher"]
    ids = _reference_ids(path, family)
    texts = [t for t, _ in _expected(AutoTokenizer.from_pretrained(path), ids)]
    assert len(set(texts)) >= 3 and all(len(i) >= 3 for i in ids), texts  # varied, non-empty: a real check below


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("decoding", ["static", "generate"])
def test_torch_engine_equals_generate(family, decoding, family_pairs):
    from transformers import AutoTokenizer

    path = family_pairs(family)["teacher"]
    expected = _expected(AutoTokenizer.from_pretrained(path), _reference_ids(path, family))
    backend = load_backend("torch-fp32", str(path), decoding=decoding)
    assert _engine_output(backend, family) == expected
    described = backend.describe()["decoding"]
    if decoding == "static" and family not in ("t5", "mt5"):  # the fallback is said, with the reason
        assert described.startswith("transformers generate (not a T5 model"), described
    elif decoding == "static":
        assert described.startswith("llmdiet static KV cache"), described


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_int8_artifact_loads_and_equals_generate_of_the_quantized_model(family, family_pairs, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8

    from quantize_helpers import build_artifact

    path = family_pairs(family)["teacher"]
    build_artifact(path, "dynamic-int8", tmp_path / "q")
    tok = AutoTokenizer.from_pretrained(path)
    quantized = quantize_dynamic_int8(AutoModelForSeq2SeqLM.from_pretrained(path))
    expected = _expected(tok, _generate_ids(quantized, tok, family))
    assert _engine_output(load_backend("auto", str(tmp_path / "q"), decoding="generate"), family) == expected


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(
            f,
            marks=pytest.mark.xfail(
                strict=True,
                reason="CTranslate2's M2M100 converter builds its vocabulary from the tokenizer's "
                "additional_special_tokens, which the locally built M2M100Tokenizer leaves empty (issue 21, open)",
            ),
        )
        if f == "m2m100"
        else f
        for f in FAMILIES
    ],
)
def test_ctranslate2_equals_generate_per_family(family, family_pairs, tmp_path, monkeypatch):
    """float32 conversion (the same code path as ct2-int8, without int8 noise): the same outputs as transformers.
    Before: Marian 0/6 equal (the decoder started from a zero vector, not the trained <pad> row); M2M100 ignored the
    target language (no target_prefix)."""
    from transformers import AutoTokenizer

    import llmdiet.quantize.ctranslate2_export as export

    from quantize_helpers import build_artifact

    path = family_pairs(family)["teacher"]
    expected = _expected(AutoTokenizer.from_pretrained(path), _reference_ids(path, family))
    monkeypatch.setattr(export, "QUANTIZATION", "float32")
    build_artifact(path, "ct2-int8", tmp_path / "ct2")
    backend = load_backend("ct2-int8", str(tmp_path / "ct2"), compute_type="float32")
    got = _engine_output(backend, family)
    assert got == expected, sum(a == b for a, b in zip(got, expected))


def test_target_language_option_changes_the_forced_token(family_pairs):
    """M2M100: --target_lang is the first generated token, in every engine (here torch); a one-direction model
    refuses a language in one line."""
    backend = load_backend("torch-fp32", str(family_pairs("m2m100")["teacher"]))
    settings = GenerationSettings(max_new_tokens=4, target_lang="de")
    tok = backend.tokenizer
    enc = tok(SOURCES[:1], return_tensors="pt")
    out = backend.model.generate(**enc, max_new_tokens=4, forced_bos_token_id=tok.get_lang_id("de"))
    assert out[0, 1].item() == tok.get_lang_id("de")
    assert backend.translate(SOURCES[:1], settings)[0].hypothesis == tok.decode(out[0], skip_special_tokens=True)
    marian = load_backend("torch-fp32", str(family_pairs("marian")["teacher"]))
    with pytest.raises(ConfigError, match="--target_lang fr: MarianTokenizer has no language tokens"):
        marian.translate(SOURCES[:1], GenerationSettings(target_lang="fr"))


def _family_argv(pair, out, *extra):
    models = SimpleNamespace(teacher=pair["teacher"], student=pair["student"])
    return small_run_argv(models, out, "--max_steps", "6", *extra)


@pytest.mark.parametrize("family", FAMILIES)
def test_kd_lowers_the_loss_and_the_prefix_is_t5_only(family, family_pairs, tmp_path):
    from llmdiet.distill.job import run

    summary = run(*parse(_family_argv(family_pairs(family), tmp_path / family, "--alpha", "0.5")))
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    card = (tmp_path / family / "README.md").read_text()
    assert f"prefix `{family_prefix(family)}`" in card


@pytest.mark.parametrize("method", list(methods()))
def test_every_method_trains_a_bart_student(method, family_pairs, tmp_path):
    from llmdiet.distill.job import run

    extra = ["--method", method] + (["--lmbda", "1", "--gkd_max_new_tokens", "8"] if method == "gkd" else [])
    summary = run(*parse(_family_argv(family_pairs("bart"), tmp_path / method, *extra)))
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses  # six steps from random init lower the method's objective
    assert summary["global_step"] == 6


@pytest.mark.parametrize("family", ["m2m100", "marian"])
@pytest.mark.parametrize("extra", [["--teacher_cache", "CACHE"], ["--sequence_kd", "replace"], ["--method", "gkd"]])
def test_teacher_cache_sequence_kd_and_gkd_run_on_other_families(family, extra, family_pairs, tmp_path):
    from llmdiet.distill.job import run

    extra = [str(tmp_path / "cache") if e == "CACHE" else e for e in extra]
    if "gkd" in extra:
        extra += ["--lmbda", "1", "--gkd_max_new_tokens", "8"]
    summary = run(*parse(_family_argv(family_pairs(family), tmp_path / "run", *extra)))
    assert summary["global_step"] == 6


def test_copy_layers_refuses_a_non_t5_teacher_in_one_line(family_pairs, tmp_path):
    from llmdiet.distill.job import run

    argv = _family_argv(
        family_pairs("bart"),
        tmp_path / "shrink",
        "--student_init",
        "copy_layers",
        "--student_encoder_layers",
        "1",
        "--student_decoder_layers",
        "1",
    )
    with pytest.raises(ConfigError, match="copy_layers supports the T5 family .* the teacher is a bart model"):
        run(*parse(argv))
