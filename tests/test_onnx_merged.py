"""The merged ONNX decoder on a T5 whose heads x d_kv differs from d_model (as in flan-T5-small: 6 x 64 != 512)."""

from __future__ import annotations

import torch

from llmdiet.engines import GenerationSettings, load_backend

from conftest import needs_onnx

pytestmark = needs_onnx


def test_merged_decoder_with_t5_head_size_not_d_model_over_heads(demo_assets, tmp_path):
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from llmdiet.quantize import quantize_model

    tokenizer = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=48,
        d_ff=64,
        d_kv=8,
        num_heads=3,
        num_layers=1,
        num_decoder_layers=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    assert config.num_heads * config.d_kv != config.d_model
    torch.manual_seed(0)
    model_dir = tmp_path / "odd-heads"
    T5ForConditionalGeneration(config).eval().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    meta = quantize_model(str(model_dir), "onnx-fp32", tmp_path / "onnx")
    assert meta["onnx_files"] == ["encoder_model.onnx", "decoder_model_merged.onnx"]
    onnx_backend = load_backend("auto", str(tmp_path / "onnx"))
    assert onnx_backend.describe()["decoder"].startswith("merged")
    sources = ["translate English to French: The cat sat on the mat.", "translate English to French: Yes."]
    settings = GenerationSettings(max_new_tokens=12, min_new_tokens=12)
    reference = load_backend("torch-fp32", str(model_dir)).translate(sources, settings)
    got = onnx_backend.translate(sources, settings)
    assert [t.hypothesis for t in got] == [t.hypothesis for t in reference]
    assert [t.generated_tokens for t in got] == [12, 12]


def test_merge_removes_the_unmerged_graphs_and_their_external_data(demo_assets, tmp_path):
    """Large exports keep weights in side files (``decoder_model.onnx.data`` from the quantizer, ``..._data`` from
    the export); none may survive the merge, or the artifact carries a dead copy of the decoder weights."""
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    from llmdiet.quantize.onnx_runtime import merge_decoder_graphs

    unmerged = tmp_path / "unmerged"
    ORTModelForSeq2SeqLM.from_pretrained(
        str(demo_assets.teacher), export=True, use_cache=True, use_merged=False
    ).save_pretrained(unmerged)
    for stale in ("decoder_model.onnx.data", "decoder_with_past_model.onnx_data"):
        (unmerged / stale).write_bytes(b"x" * 1000)  # unreferenced side files as a large export leaves them
    record = merge_decoder_graphs(unmerged)
    left = sorted(p.name for p in unmerged.iterdir() if p.name.startswith("decoder"))
    assert left == ["decoder_model_merged.onnx"]
    assert record["merged_decoder_bytes"] == (unmerged / "decoder_model_merged.onnx").stat().st_size
    assert record["unmerged_decoder_bytes"] > record["merged_decoder_bytes"] + 2000
