"""The public Python API, artifacts loaded by their own libraries, model cards, and the `evaluate` modules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

import llmdiet
from llmdiet.demo import DEMO_EN_FR
from llmdiet.quantize import METHODS

from conftest import needs_onnx, usable_methods
from quantize_helpers import EVAL_ROWS, build_artifact, demo_rows

REPO = Path(__file__).resolve().parents[1]
SOURCES, REFERENCES = demo_rows(EVAL_ROWS[0], EVAL_ROWS[0] + 8)


def test_all_lists_exactly_the_api():
    assert sorted(llmdiet.__all__) == ["Translator", "distill", "evaluate", "load", "prune", "quantize"]
    for name in llmdiet.__all__:
        assert callable(getattr(llmdiet, name))
    import importlib

    losses = importlib.import_module("llmdiet.distill.losses")  # the callable packages still import as packages
    assert callable(llmdiet.distill) and llmdiet.distill.losses is losses
    assert callable(llmdiet.quantize) and importlib.import_module("llmdiet.quantize.gpfq")


def test_import_llmdiet_does_not_import_torch():
    code = "import sys, llmdiet; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.fixture(scope="module")
def artifacts(demo_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("api-artifacts")
    return {
        m: (root / m, build_artifact(demo_assets.teacher, m, root / m))
        for m in usable_methods(
            ("dynamic-int8", "onnx-dynamic-int8", "ct2-int8", "torch-bf16", "quanto-int8", "torchao-int8")
        )
    }


def test_load_translates_every_artifact_kind(demo_assets, artifacts):
    reference = llmdiet.load(str(demo_assets.teacher)).translate(SOURCES, max_new_tokens=48)
    # the demo teacher knows its domain (the demo references are ambiguous, so not every row is exact; its training
    # differs a little from CPU to CPU: 43.6 on these 8 rows on an AVX-512 AMD EPYC with transformers 5.24, where an
    # untrained model scores about 0)
    assert sacrebleu.corpus_bleu(reference, [REFERENCES]).score > 30
    for method, (path, _) in artifacts.items():
        translator = llmdiet.load(str(path))
        assert translator.name == method
        hyps = translator.translate(SOURCES, batch_size=3, max_new_tokens=48)
        assert len(hyps) == len(SOURCES)
        # same model, int8/bf16 noise only (a broken artifact agrees on none); the demo teacher falls into
        # repetition loops on a row or two on some CPUs, which int8 noise can flip: 6 of 8 on an AVX-512 AMD EPYC
        assert sum(h == r for h, r in zip(hyps, reference)) >= 5, method
    with pytest.raises(TypeError, match="list of strings"):
        translator.translate("one sentence")


@needs_onnx
def test_onnx_artifact_loads_with_optimum(artifacts):
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoTokenizer

    path = artifacts["onnx-dynamic-int8"][0]
    model = ORTModelForSeq2SeqLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    out = model.generate(**tok(SOURCES, return_tensors="pt", padding=True), max_new_tokens=48)
    native = [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
    assert native == llmdiet.load(str(path)).translate(SOURCES, max_new_tokens=48, batch_size=len(SOURCES))


def test_ctranslate2_artifact_loads_with_ctranslate2(artifacts):
    import ctranslate2
    from transformers import AutoTokenizer

    path = artifacts["ct2-int8"][0]
    translator = ctranslate2.Translator(str(path))
    tok = AutoTokenizer.from_pretrained(path / "tokenizer")
    tokens = [tok.convert_ids_to_tokens(tok(s)["input_ids"]) for s in SOURCES]
    results = translator.translate_batch(tokens, max_decoding_length=48, beam_size=1)  # greedy, as llmdiet (CT2: 2)
    native = [tok.decode(tok.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip() for r in results]
    assert native == llmdiet.load(str(path)).translate(SOURCES, max_new_tokens=48)


def test_bf16_artifact_loads_with_the_snippet_of_its_card(artifacts, capsys):
    """The card's transformers snippet runs as written on 4.57 and 5.x (5.x removed the translation pipeline)."""
    path = artifacts["torch-bf16"][0]
    card = (path / "README.md").read_text()
    snippet = card.split("## Use")[1].split("```python\n")[1].split("```")[0]
    exec(snippet.replace("<this directory>", str(path)), {})
    import ast

    printed = ast.literal_eval(capsys.readouterr().out.strip())  # a list of one translation ('' or "" quoted)
    assert isinstance(printed, list) and len(printed) == 1 and len(printed[0]) > 3, printed


def test_every_artifact_has_a_model_card(artifacts):
    for method, (path, meta) in artifacts.items():
        card = (path / "README.md").read_text()
        front = card.split("---")[1]
        # the demo teacher has no card of its own: its license is unknown, so none is claimed
        assert "pipeline_tag: translation" in front and "license:" not in front and f"- {method}" in front
        assert meta["provenance"]["git_sha"] in card or meta["provenance"]["git_sha"] is None
        assert f"{meta['disk_bytes'] / 1e6:.1f}" in card
        if method == "dynamic-int8":
            assert "llmdiet.load" in card and METHODS[method].no_native_reason in card
        if method.startswith("onnx"):
            assert "ORTModelForSeq2SeqLM.from_pretrained" in card


def test_distilled_student_card_and_push_to_hub_keeps_it(demo_assets, tmp_path):
    from test_distill import parse, small_run_argv

    from llmdiet.distill.job import run

    out = tmp_path / "student"
    summary = run(
        *parse(
            small_run_argv(
                demo_assets,
                out,
                "--max_steps",
                "4",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "4",
                "--predict_with_generate",
                "true",
                "--eval_rows",
                "16",
            )
        )
    )
    card = (out / "README.md").read_text()
    bleu = [e["eval_bleu"] for e in summary["log_history"] if "eval_bleu" in e][-1]
    assert f"{bleu:.2f}" in card and "alpha = 0.5" in card and "pipeline_tag: translation" in card
    assert "DEMO" not in card  # local paths, not the demo's llmdiet-demo: names
    # what --push_to_hub runs before uploading: llmdiet's card is kept, not replaced by the Trainer's
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainingArguments

    from llmdiet.distill.trainer import DistillationTrainer

    trainer = DistillationTrainer(
        model=AutoModelForSeq2SeqLM.from_pretrained(out),
        alpha=0.0,
        args=Seq2SeqTrainingArguments(output_dir=str(out), report_to="none", use_cpu=True),
    )
    trainer.create_model_card(model_name="x")
    assert (out / "README.md").read_text() == card


def test_readme_python_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "runs" / "api-student-int8" / "llmdiet_artifact.json").exists()
    results = json.loads((tmp_path / "runs" / "api-eval" / "results.json").read_text())
    assert "demo-en-fr" in results["sets"]


# ----------------------------------------------------------------------------- evaluate modules


def test_evaluate_modules_load_offline_and_equal_the_harness(tmp_path):
    import evaluate

    from llmdiet.evaluation.metrics import corpus_scores, metric_module_path

    hyps = ["Le château est vieux.", "Les enfants lisent un livre.", "Il pleut aujourd'hui sur la ville."]
    refs = ["Le château est très vieux.", "Les enfants lisent un livre.", "Il pleut sur la ville aujourd'hui."]
    expected = corpus_scores(hyps, refs)
    for name in ("bleu", "chrf", "rougeL"):
        module = evaluate.load(metric_module_path(name))
        assert module.compute(predictions=hyps, references=refs)[name] == expected[name]
        assert module.compute(predictions=hyps, references=[[r] for r in refs])[name] == expected[name]


def test_evaluate_modules_as_compute_metrics_in_a_users_trainer(demo_assets, tmp_path):
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    from llmdiet.data import read_parallel_file, tokenize_rows
    from llmdiet.evaluation.metrics import corpus_scores, seq2seq_compute_metrics

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    model = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher)
    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[1000:1016]
    ds, _ = tokenize_rows(rows, tok, "translate English to French: ", 64, 64)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        predict_with_generate=True,
        report_to="none",
        use_cpu=True,
        per_device_eval_batch_size=16,
        generation_max_length=48,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        eval_dataset=ds,
        data_collator=DataCollatorForSeq2Seq(tok, model=model),
        compute_metrics=seq2seq_compute_metrics(tok),
    )
    metrics = trainer.evaluate()
    hyps = llmdiet.load(str(demo_assets.teacher)).translate(
        ["translate English to French: " + r.source for r in rows], max_new_tokens=47
    )
    # a user's Trainer only has the tokenised labels: the references are decoded from them, as the helper does
    refs = [t.strip() for t in tok.batch_decode([list(x) for x in ds["labels"]], skip_special_tokens=True)]
    assert metrics["eval_bleu"] == pytest.approx(corpus_scores(hyps, refs)["bleu"], abs=1e-6)


def test_translate_checks_its_input_in_one_line(demo_assets):
    """translate([42]), [None], batch_size="8" gave raw TypeErrors; translate([""]) invented text."""
    from llmdiet.config import ConfigError

    translator = llmdiet.load(str(demo_assets.teacher))
    for call, message in (
        (lambda: translator.translate([42]), r"sources\[0\] is a int, not a string"),
        (lambda: translator.translate(["ok", None]), r"sources\[1\] is a NoneType"),
        (lambda: translator.translate(["x"], batch_size="8"), "batch_size must be an integer >= 1"),
        (lambda: translator.translate("x"), "wrap a single sentence in a list"),
        (
            lambda: llmdiet.evaluate(str(demo_assets.teacher), "demo-en-fr", "/tmp/x", max_eval_samples="5"),
            "max_eval_samples must be int",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            call()
    out = translator.translate(["", SOURCES[0], "   "], max_new_tokens=24)
    assert out[0] == "" and out[2] == "" and out[1] == translator.translate([SOURCES[0]], max_new_tokens=24)[0]


def test_loading_a_wrong_directory_says_so_in_one_short_line(demo_assets, tmp_path):
    """llmdiet.load on a garbage directory printed 4,827 characters; an artifact without its tokenizer said
    "Either model_file or model_proto must be specified"."""

    from llmdiet.artifacts import BackendError
    from llmdiet.modeling import ModelLoadError

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="has no config.json") as err:
        llmdiet.load(str(garbage))
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)
    (garbage / "config.json").write_text('{"hello": 1}')
    with pytest.raises(ModelLoadError, match="no known model_type") as err:
        llmdiet.load(str(garbage))
    assert len(str(err.value)) < 300
    artifact = tmp_path / "int8"
    llmdiet.quantize(str(demo_assets.teacher), "dynamic-int8", str(artifact))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (artifact / name).unlink(missing_ok=True)
    with pytest.raises(BackendError, match="the artifact has no tokenizer files"):
        llmdiet.load(str(artifact))


def test_the_api_is_quiet_and_says_when_it_truncates(demo_assets, tmp_path, capfd, caplog):
    """The Python API printed torch.ao deprecation notices and transformers' load reports; a 10,000-word input
    was cut with transformers' misleading "indexing errors" warning."""
    import logging
    import warnings

    artifact = tmp_path / "int8"
    llmdiet.quantize(str(demo_assets.teacher), "dynamic-int8", str(artifact))
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        translator = llmdiet.load(str(artifact))
        with caplog.at_level(logging.WARNING, logger="llmdiet"):
            out = translator.translate(
                ["translate English to French: " + "The children read a book. " * 2000], max_new_tokens=8
            )
    printed = capfd.readouterr()
    assert len(out) == 1
    assert not [w for w in caught if "llmdiet" not in str(w.filename)], [str(w.message) for w in caught]
    assert "deprecated" not in printed.err and "indexing errors" not in printed.err
    assert any("longer than max_source_length=512 tokens and are truncated" in r.message for r in caplog.records)


def test_a_card_takes_the_license_of_its_base_model(demo_assets, tmp_path):
    """Before: every card said apache-2.0 (NLLB is CC-BY-NC). Now the base model card's license and languages."""
    import shutil

    base = shutil.copytree(demo_assets.teacher, tmp_path / "nc-teacher")
    (base / "README.md").write_text("---\nlicense: cc-by-nc-4.0\nlanguage: [en, fr]\n---\n# a base\n")
    build_artifact(base, "dynamic-int8", tmp_path / "q")
    front = (tmp_path / "q" / "README.md").read_text().split("---")[1]
    assert "license: cc-by-nc-4.0" in front and "- en" in front and "- fr" in front
