"""Every CPU quantization method on the demo teacher: quantize -> save -> load -> generate.

Tolerances (measured on the demo teacher, 64 eval rows, with margin; see docs/quantization.md):

* greedy outputs: at least 85% of the 64 hypotheses identical to fp32 (measured on the v3 demo teacher, whose
  references are ambiguous, so it has near-ties that int8 noise can flip: dynamic-int8 92.2%, ct2-int8 89.1%,
  the others 100%; 64/64 for every method on the earlier, over-confident teacher);
* teacher-forced logits on the references, largest |logit - fp32 logit| over real target tokens,
  relative to the largest |fp32 logit|: at most ``MAX_REL_LOGIT_ERROR[method]`` (measured: bf16 0.010,
  torchao 0.020, onnx-dynamic 0.031, dynamic-int8 0.052, quanto 0.088, onnx-static 0.26 on an
  AVX-512 Intel; quanto 0.212 and torchao 0.239 with
  PyTorch's AVX2 kernels forced (ATEN_CPU_CAPABILITY=avx2) on an AMD EPYC: limits hold for both), and at least
  98% of the argmax tokens equal to fp32's (measured: >= 98.99%, onnx-static-int8 lowest);
* CTranslate2 exposes no logits: its per-token log-probabilities of the references (``score_batch``)
  differ from fp32 by at most 0.1 nats on average (measured 0.053) and 2.5 at most (measured 1.46);
* save/load: torch-based artifacts give bit-identical logits to the in-memory quantized model;
  file-based engines (ONNX, CTranslate2) give identical hypotheses after the directory is moved.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmdiet.engines import ARTIFACT_FILE, GenerationSettings, detect_backend, load_backend
from llmdiet.modeling import directory_bytes
from llmdiet.quantize.registry import METHODS

from conftest import method_param, needs_onnx
from quantize_helpers import (
    CALIBRATION_COUNT,
    EVAL_ROWS,
    GREEDY,
    build_artifact,
    demo_rows,
    logit_errors,
    logits_of,
    teacher_forced,
)

# every registered method is tested: a new row in llmdiet/quantize/registry.py joins these lists by itself
CPU_METHODS = [method_param(name) for name, m in METHODS.items() if "cpu" in m.devices]
TORCH_METHODS = [name for name, m in METHODS.items() if m.kind == "torch"]
FILE_METHODS = [method_param(name) for name, m in METHODS.items() if m.kind == "files"]
MIN_IDENTICAL_SHARE = 0.85
MIN_ARGMAX_AGREEMENT = 0.98
MAX_REL_LOGIT_ERROR = {
    "torch-bf16": 0.05,
    "torchao-int8": 0.30,
    "onnx-dynamic-int8": 0.10,
    "dynamic-int8": 0.12,
    "quanto-int8": 0.30,
    "onnx-static-int8": 0.45,
    "onnx-fp32": 1e-4,
}


@pytest.fixture(scope="module")
def fp32(demo_assets):
    """The fp32 teacher: backend, greedy hypotheses and token counts, teacher-forced batch and logits."""
    backend = load_backend("torch-fp32", str(demo_assets.teacher))
    sources, references = demo_rows(*EVAL_ROWS)
    translations = backend.translate(sources, GREEDY)
    batch = teacher_forced(backend.tokenizer, sources, references)
    return {
        "backend": backend,
        "sources": sources,
        "references": references,
        "batch": batch,
        "hypotheses": [t.hypothesis for t in translations],
        "counts": [t.generated_tokens for t in translations],
        "logits": logits_of(backend.model, batch),
    }


@pytest.fixture(scope="module")
def artifacts(demo_assets, tmp_path_factory):
    """method -> (artifact dir, artifact dict, loaded backend), built on first use."""
    built = {}
    root = tmp_path_factory.mktemp("quantized")

    def get(method):
        if method not in built:
            out = root / method
            meta = build_artifact(demo_assets.teacher, method, out)
            built[method] = (out, meta, load_backend("auto", str(out)))
        return built[method]

    return get


@pytest.fixture(scope="module")
def outputs(artifacts, fp32):
    """method -> greedy translations of the 64 eval rows."""
    done = {}

    def get(method):
        if method not in done:
            done[method] = artifacts(method)[2].translate(fp32["sources"], GREEDY)
        return done[method]

    return get


@pytest.mark.parametrize("method", CPU_METHODS)
def test_artifact_records_method_size_and_provenance(method, artifacts, demo_assets, fp32):
    out, meta, backend = artifacts(method)
    on_disk = json.loads((out / ARTIFACT_FILE).read_text())
    assert on_disk["method"] == on_disk["backend"] == method
    assert detect_backend(out) == method
    assert on_disk["parameters"] == sum(p.numel() for p in fp32["backend"].model.parameters())
    assert on_disk["disk_bytes"] == directory_bytes(out) - (out / ARTIFACT_FILE).stat().st_size
    assert on_disk["fp32_disk_bytes"] == directory_bytes(demo_assets.teacher)
    assert on_disk["size_ratio"] == pytest.approx(on_disk["disk_bytes"] / on_disk["fp32_disk_bytes"], abs=1e-4)
    assert on_disk["provenance"]["libraries"]["torch"] and "hardware" in on_disk["provenance"]
    size = backend.size_info()
    assert size["parameters"] == on_disk["parameters"]
    assert size["disk_bytes"] == directory_bytes(out)
    assert size["memory_bytes"] > 0
    assert backend.describe()["backend"] == method


@pytest.mark.parametrize("method", CPU_METHODS)
def test_greedy_outputs_match_fp32(method, outputs, fp32):
    hypotheses = [t.hypothesis for t in outputs(method)]
    identical = sum(h == r for h, r in zip(hypotheses, fp32["hypotheses"])) / len(hypotheses)
    assert identical >= MIN_IDENTICAL_SHARE, f"{method}: only {identical:.1%} of greedy outputs equal fp32's"


@pytest.mark.parametrize("method", CPU_METHODS)
def test_token_counts_follow_the_torch_convention(method, outputs, artifacts, fp32):
    """Counts include EOS like ``count_generated_tokens``; min == max == N gives exactly N tokens."""
    for t, hyp, count in zip(outputs(method), fp32["hypotheses"], fp32["counts"]):
        if t.hypothesis == hyp:
            assert t.generated_tokens == count
    fixed = artifacts(method)[2].translate(
        fp32["sources"][:4], GenerationSettings(max_new_tokens=12, min_new_tokens=12)
    )
    assert [t.generated_tokens for t in fixed] == [12] * 4


@pytest.mark.parametrize("method", [m for m in CPU_METHODS if m != "ct2-int8"])
def test_teacher_forced_logits_close_to_fp32(method, artifacts, fp32):
    model = artifacts(method)[2].model  # torch module or optimum ORTModel: both return logits
    errors = logit_errors(logits_of(model, fp32["batch"]), fp32["logits"], fp32["batch"]["mask"])
    assert errors["max_rel"] <= MAX_REL_LOGIT_ERROR[method], errors
    assert errors["argmax_agreement"] >= MIN_ARGMAX_AGREEMENT, errors


def test_ct2_log_probs_close_to_fp32(artifacts, fp32):
    backend = artifacts("ct2-int8")[2]
    tok = fp32["backend"].tokenizer
    targets = tok(text_target=fp32["references"])["input_ids"]
    # CTranslate2 appends </s> to the target itself
    scored = backend.translator.score_batch(
        backend.source_tokens(fp32["sources"]), [tok.convert_ids_to_tokens(t[:-1]) for t in targets]
    )
    log_probs = fp32["logits"].log_softmax(-1)
    diffs = []
    for row, (result, ids) in enumerate(zip(scored, targets)):
        assert len(result.log_probs) == len(ids)
        reference = log_probs[row, torch.arange(len(ids)), torch.tensor(ids)]
        diffs.append((torch.tensor(result.log_probs) - reference).abs())
    diffs = torch.cat(diffs)
    # int8 noise on the demo teacher (a float32 conversion is exact: tests/test_families.py). Measured mean / max /
    # share above 1 nat: 0.053 / 1.46 (teacher built on torch 2.13 + transformers 4.57), 0.055-0.070 / 3.05-3.92
    # (torch 2.15 + 5.24), share above 1 nat up to 2.0%: the mean and that share are the check, not one token
    outliers = (diffs > 1.0).float().mean().item()
    assert diffs.mean().item() <= 0.1 and outliers <= 0.05, (diffs.mean().item(), diffs.max().item(), outliers)


@pytest.mark.parametrize("method", TORCH_METHODS)
def test_torch_artifacts_load_bit_identical(method, artifacts, demo_assets, fp32):
    """The model quantized in memory and the one loaded from disk give the same logits, bit for bit."""
    from llmdiet.modeling import load_seq2seq

    model = load_seq2seq(str(demo_assets.teacher))[0].eval()  # as the artifacts load (5.x: eager attention)
    calibration = demo_rows(0, CALIBRATION_COUNT)[0] if METHODS[method].calibrated else None  # the artifact's rows
    model = METHODS[method].function("in_memory")(model, fp32["backend"].tokenizer, calibration)
    loaded = artifacts(method)[2].model
    assert torch.equal(logits_of(model, fp32["batch"]), logits_of(loaded, fp32["batch"]))


@pytest.mark.parametrize("method", FILE_METHODS)
def test_file_artifacts_are_relocatable(method, artifacts, outputs, fp32, tmp_path):
    out = artifacts(method)[0]
    moved = shutil.copytree(out, tmp_path / "moved")
    again = load_backend("auto", str(moved)).translate(fp32["sources"], GREEDY)
    assert [t.hypothesis for t in again] == [t.hypothesis for t in outputs(method)]


@needs_onnx
def test_onnx_graphs_are_int8(artifacts):
    import onnx

    def op_types(method, name):
        graphs = _graphs(artifacts(method)[0] / name)
        return {n.op_type for g in graphs for n in g.node}, {i.data_type for g in graphs for i in g.initializer}

    # 8-bit weights of whichever signedness the instruction set's config uses (avx2: UINT8, avx512/vnni/arm64: INT8),
    # as recorded in the artifact.
    onnx_type = {"QInt8": onnx.TensorProto.INT8, "QUInt8": onnx.TensorProto.UINT8}
    for method in ("onnx-dynamic-int8", "onnx-static-int8"):
        meta = artifacts(method)[1]
        assert meta["instruction_set"] in ("avx512_vnni", "avx512", "avx2", "arm64")
        assert meta["weight_type"] in onnx_type
    for method in ("onnx-fp32", "onnx-dynamic-int8", "onnx-static-int8"):
        # the two decoders ship merged, every shared weight stored once (the past branch adds no second copy)
        out, meta, _ = artifacts(method)
        assert sorted(p.name for p in out.glob("*.onnx")) == ["decoder_model_merged.onnx", "encoder_model.onnx"]
        assert meta["onnx_files"] == ["encoder_model.onnx", "decoder_model_merged.onnx"]
        merge = meta["decoder_merge"]
        assert merge["merged_decoder_bytes"] == (out / "decoder_model_merged.onnx").stat().st_size
        assert merge["merged_decoder_bytes"] < 0.7 * merge["unmerged_decoder_bytes"], merge
        assert "If" in op_types(method, "decoder_model_merged.onnx")[0]
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        ops, _ = op_types("onnx-fp32", name)
        assert not ops & {"MatMulInteger", "QuantizeLinear", "DynamicQuantizeLinear"}
        ops, types = op_types("onnx-dynamic-int8", name)
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
        assert onnx_type[artifacts("onnx-dynamic-int8")[1]["weight_type"]] in types
        ops, types = op_types("onnx-static-int8", name)
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert onnx_type[artifacts("onnx-static-int8")[1]["weight_type"]] in types
    meta = artifacts("onnx-static-int8")[1]
    assert all(count > 0 for count in meta["calibration_feeds"].values()), meta["calibration_feeds"]
    assert set(meta["calibration_feeds"]) == {
        "encoder_model.onnx",
        "decoder_model.onnx",
        "decoder_with_past_model.onnx",
    }
    assert meta["calibration"]["rows_used"] == 32


def test_quanto_activation_scales_are_calibrated(artifacts):
    from optimum.quanto.nn import QLinear

    model = artifacts("quanto-int8")[2].model
    qlinears = [m for m in model.modules() if isinstance(m, QLinear)]
    assert qlinears and all(m.weight._data.dtype == torch.int8 for m in qlinears)
    scales = torch.stack([m.input_scale.float() for m in qlinears])
    assert (scales != 1.0).all(), "an input scale kept its initial value: calibration did not reach every layer"


def test_dynamic_int8_keeps_embeddings_float_and_quantizes_lm_head(artifacts):
    import torch.ao.nn.quantized.dynamic as nnqd

    model = artifacts("dynamic-int8")[2].model
    assert isinstance(model.lm_head, nnqd.Linear)
    assert model.shared.weight.dtype == torch.float32
    assert model.encoder.embed_tokens.weight is model.shared.weight  # tie restored on load
    assert not [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def test_dynamic_int8_per_channel_round_trip(demo_assets, fp32, tmp_path):
    from llmdiet.modeling import load_seq2seq
    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8

    meta = build_artifact(demo_assets.teacher, "dynamic-int8", tmp_path / "pc", per_channel=True)
    assert meta["weights"] == "int8 per-channel affine"
    loaded = load_backend("auto", str(tmp_path / "pc")).model
    weight, _ = loaded.lm_head._packed_params._weight_bias()
    assert weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    # quantize the teacher as llmdiet loads it (eager attention: transformers 5's default SDPA rounds differently in
    # the last bits, which the activation scales then amplify)
    reference = quantize_dynamic_int8(load_seq2seq(str(demo_assets.teacher))[0], per_channel=True)
    assert torch.equal(logits_of(reference, fp32["batch"]), logits_of(loaded, fp32["batch"]))


@pytest.mark.parametrize("isa", ["avx2", "avx512_vnni"])
@needs_onnx
def test_onnx_dynamic_int8_for_each_instruction_set(demo_assets, fp32, tmp_path, monkeypatch, isa):
    """An artifact built for either x86 config (UINT8 weights for avx2, INT8 for VNNI) runs on this CPU
    and records its weight type; the result does not depend on which CPU built or runs the test."""
    import onnx

    monkeypatch.setenv("LLMDIET_ONNX_ISA", isa)
    meta = build_artifact(demo_assets.teacher, "onnx-dynamic-int8", tmp_path / isa)
    expected = {"avx2": ("QUInt8", onnx.TensorProto.UINT8), "avx512_vnni": ("QInt8", onnx.TensorProto.INT8)}[isa]
    assert (meta["instruction_set"], meta["weight_type"]) == (isa, expected[0])
    graphs = _graphs(tmp_path / isa / "decoder_model_merged.onnx")
    assert expected[1] in {i.data_type for g in graphs for i in g.initializer}
    assert "MatMulInteger" in {n.op_type for g in graphs for n in g.node}
    backend = load_backend("auto", str(tmp_path / isa))
    hyps = [t.hypothesis for t in backend.translate(fp32["sources"][:16], GREEDY)]
    same = sum(h == r for h, r in zip(hyps, fp32["hypotheses"][:16]))
    assert same >= 15, f"{isa}: only {same}/16 greedy outputs equal fp32"


def _graphs(path) -> list:
    """The graph of an .onnx file and every subgraph in it (the merged decoder's If branches)."""
    import onnx

    graphs, todo = [], [onnx.load(str(path)).graph]
    while todo:
        graph = todo.pop()
        graphs.append(graph)
        todo += [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return graphs


def _wo_weight_is_dequantized(path) -> dict[str, bool]:
    """For each feed-forward output MatMul (``DenseReluDense/wo``): does its weight come through a DequantizeLinear?"""
    nodes = [node for graph in _graphs(path) for node in graph.node]
    produced_by = {out: node.op_type for node in nodes for out in node.output}
    return {
        node.name: produced_by.get(node.input[1]) == "DequantizeLinear"
        for node in nodes
        if node.op_type == "MatMul" and "/DenseReluDense/wo/" in node.name
    }


@needs_onnx
def test_static_int8_keeps_t5_feed_forward_outputs_float_by_default(artifacts, demo_assets, fp32, tmp_path):
    safe_dir, meta, _ = artifacts("onnx-static-int8")
    assert meta["static_keep_float"] == ["wo"] and "float32: wo" in meta["quantization"]
    unsafe_dir = tmp_path / "all-int8"
    unsafe = build_artifact(demo_assets.teacher, "onnx-static-int8", unsafe_dir, static_keep_float=())
    assert unsafe["static_keep_float"] == []
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        safe, everything = _wo_weight_is_dequantized(safe_dir / name), _wo_weight_is_dequantized(unsafe_dir / name)
        assert safe and not any(safe.values()), name  # every wo MatMul reads its float weight directly
        assert everything and all(everything.values()), name  # the old recipe quantized them
    for name in (
        "encoder_model.onnx",
        "decoder_model.onnx",
        "decoder_with_past_model.onnx",
    ):  # quantized before the merge
        assert meta["static_quantized_nodes"][name] < unsafe["static_quantized_nodes"][name]
    # keeping wo float costs size (its weights stay 4 bytes each)
    assert meta["disk_bytes"] > unsafe["disk_bytes"]


@needs_onnx
def test_static_keep_float_flag_is_checked(capsys):
    from llmdiet import cli

    assert (
        cli.main(
            [
                "quantize",
                "--preset",
                "demo",
                "--method",
                "onnx-static-int8",
                "--output_dir",
                "x",
                "--static_keep_float",
                "wi",
            ]
        )
        == 2
    )
    assert "--static_keep_float: unknown ['wi']" in capsys.readouterr().err


def test_ct2_worker_per_core_layout_gives_the_same_output(artifacts, fp32):
    """The default CPU layout (one single-thread worker per core, batch split between them) is a speed path: its
    output must equal one worker's. With a single core there is nothing to split, and both layouts coincide."""
    from llmdiet.provenance import available_cores

    out, _, default = artifacts("ct2-int8")
    one_worker = load_backend("ct2-int8", str(out), threads=1)
    assert default.describe()["inter_threads"] == available_cores() and one_worker.describe()["inter_threads"] == 1
    sources = fp32["sources"][:16]
    calls = []
    split = default.translate(sources, GREEDY, on_first_token=lambda: calls.append(1))
    whole = one_worker.translate(sources, GREEDY)
    assert [t.hypothesis for t in split] == [t.hypothesis for t in whole]
    assert [t.generated_tokens for t in split] == [t.generated_tokens for t in whole]
    assert calls == [1]  # the first-token hook fires once per batch


def test_every_artifact_says_how_it_loads_natively_or_why_not():
    """Issue 29: a format without a maintained native loader names the reason in its card (one sentence)."""
    from llmdiet.quantize import METHODS

    for name, method in METHODS.items():
        assert method.loading or method.no_native_reason.endswith("."), name


def test_torchao_native_format_round_trips_only_with_a_float_lm_head(demo_assets, tmp_path):
    """The reason torchao-int8 keeps llmdiet's own file (its card and the README say so): transformers'
    TorchAoConfig format round-trips the demo teacher with a float lm_head (same greedy ids as llmdiet's torchao
    model), but not with the int8 lm_head the artifact has. When this test fails, switch to the native format."""
    pytest.importorskip("torchao")
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, TorchAoConfig

    from llmdiet.compat import transformers_major
    from llmdiet.modeling import load_seq2seq
    from llmdiet.quantize.gpu_int8 import torchao_in_memory

    tok = AutoTokenizer.from_pretrained(str(demo_assets.tokenizer))
    batch = tok(
        ["translate English to French: The children read a book.", "translate English to French: We eat bread."],
        return_tensors="pt",
        padding=True,
    )
    config = TorchAoConfig(quant_type=Int8DynamicActivationInt8WeightConfig())
    model = AutoModelForSeq2SeqLM.from_pretrained(
        str(demo_assets.teacher), quantization_config=config, dtype=torch.bfloat16
    )
    # transformers 4.x saves this torchao config only as a pickle (its safetensors path covers float8 configs)
    model.save_pretrained(tmp_path / "native", **({} if transformers_major() >= 5 else {"safe_serialization": False}))
    again = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "native")
    ids = model.generate(**batch, max_new_tokens=16, do_sample=False)
    assert torch.equal(again.generate(**batch, max_new_tokens=16, do_sample=False), ids)
    base, _ = load_seq2seq(str(demo_assets.teacher))
    assert torch.equal(torchao_in_memory(base).generate(**batch, max_new_tokens=16, do_sample=False), ids)
    if transformers_major() >= 5:
        with_head = TorchAoConfig(
            quant_type=Int8DynamicActivationInt8WeightConfig(), include_input_output_embeddings=True
        )
        with pytest.raises(NotImplementedError, match="aten.equal"):
            AutoModelForSeq2SeqLM.from_pretrained(str(demo_assets.teacher), quantization_config=with_head)
