"""The static-KV-cache greedy decoder gives exactly ``generate``'s output ids, for every torch backend it serves."""

from __future__ import annotations

import pytest
import torch

from llmdiet.engines import GenerationSettings, load_backend
from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder, static_decoding_unsupported

SOURCES = [
    "translate English to French: The cat sat on the mat.",
    "translate English to French: Hello world, this is a much longer sentence with many more words in it than the others.",
    "translate English to French: Yes.",
    "translate English to French: Thank you very much for your help yesterday.",
]


def _hf(model, enc, max_new, min_new=0):
    return model.generate(**enc, max_new_tokens=max_new, min_new_tokens=min_new or None, num_beams=1, do_sample=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("max_new,min_new", [(40, 0), (12, 12), (5, 0)])
def test_same_ids_as_generate_on_the_trained_demo_teacher(tiny_teacher, tiny_tokenizer, dtype, max_new, min_new):
    model = tiny_teacher.to(dtype)
    enc = tiny_tokenizer(SOURCES, return_tensors="pt", padding=True)  # padded rows exercise the cross-attention mask
    assert enc["attention_mask"].min() == 0
    reference = _hf(model, enc, max_new, min_new)
    got = StaticCacheT5Decoder(model).generate(enc["input_ids"], enc["attention_mask"], max_new, min_new)
    assert got.shape == reference.shape
    assert torch.equal(got, reference)
    if min_new == 0 and max_new == 40:  # the trained teacher stops early: EOS then padding, as generate does
        assert (reference == tiny_tokenizer.eos_token_id).any(dim=1).all()


def test_buffers_grow_past_the_first_capacity(tiny_teacher, tiny_tokenizer):
    """150 forced tokens cross the 64- and 128-slot capacities of the growing KV buffers."""
    enc = tiny_tokenizer(SOURCES[:2], return_tensors="pt", padding=True)
    reference = _hf(tiny_teacher, enc, 150, 150)
    got = StaticCacheT5Decoder(tiny_teacher).generate(enc["input_ids"], enc["attention_mask"], 150, 150)
    assert got.shape == (2, 151) and torch.equal(got, reference)


def test_dynamic_int8_backend_static_equals_generate(demo_assets, tmp_path):
    from llmdiet.quantize import quantize_model

    out = tmp_path / "int8"
    quantize_model(str(demo_assets.teacher), "dynamic-int8", out)
    settings = GenerationSettings(max_new_tokens=24)
    static = load_backend("auto", str(out))
    plain = load_backend("auto", str(out), decoding="generate")
    assert static.static_decoder is not None and plain.static_decoder is None
    assert "static KV cache" in static.describe()["decoding"] and "generate" in plain.describe()["decoding"]
    assert [t.hypothesis for t in static.translate(SOURCES, settings)] == [
        t.hypothesis for t in plain.translate(SOURCES, settings)
    ]
    assert [t.generated_tokens for t in static.translate(SOURCES, settings)] == [
        t.generated_tokens for t in plain.translate(SOURCES, settings)
    ]


def test_torch_backend_reports_first_token_and_uses_generate_for_beams(demo_assets):
    backend = load_backend("torch-fp32", str(demo_assets.teacher))
    calls = []
    greedy = backend.translate(
        SOURCES[:1], GenerationSettings(max_new_tokens=10), on_first_token=lambda: calls.append(1)
    )
    assert calls == [1] and greedy[0].generated_tokens >= 1
    beams = GenerationSettings(max_new_tokens=10, num_beams=3)
    reference = load_backend("torch-fp32", str(demo_assets.teacher), decoding="generate").translate(SOURCES, beams)
    assert [t.hypothesis for t in backend.translate(SOURCES, beams)] == [t.hypothesis for t in reference]
    generate_calls = []
    load_backend("torch-fp32", str(demo_assets.teacher), decoding="generate").translate(
        SOURCES[:1], GenerationSettings(max_new_tokens=10), on_first_token=lambda: generate_calls.append(1)
    )
    assert generate_calls == [1]


def test_unsupported_models_and_settings_fall_back(tiny_teacher):
    assert static_decoding_unsupported(tiny_teacher) is None
    tiny_teacher.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in static_decoding_unsupported(tiny_teacher)
    tiny_teacher.generation_config.repetition_penalty = 1.0
    assert "fp16" in static_decoding_unsupported(tiny_teacher.half())
    with pytest.raises(ValueError, match="fp16"):
        StaticCacheT5Decoder(tiny_teacher)


def test_random_init_flan_t5_small_shape_same_ids():
    """Architecture-exact flan-T5-small (random weights, 8 decoder layers, untied lm_head): identical ids, fp32 and int8."""
    import copy

    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8
    from llmdiet.shapes import random_flan_t5

    model = random_flan_t5("flan-t5-small").eval()
    ids = torch.randint(5, 32000, (3, 20), generator=torch.Generator().manual_seed(0))
    ids[:, -1] = 1
    mask = torch.ones_like(ids)
    mask[2, 12:] = 0
    for m in (model, quantize_dynamic_int8(copy.deepcopy(model))):
        reference = m.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=16, min_new_tokens=16, do_sample=False
        )
        assert torch.equal(StaticCacheT5Decoder(m).generate(ids, mask, 16, 16), reference)


def test_per_row_stopping_ends_each_row_at_its_length(tiny_teacher, tiny_tokenizer):
    enc = tiny_tokenizer(SOURCES, return_tensors="pt", padding=True)
    decoder = StaticCacheT5Decoder(tiny_teacher)
    full = decoder.generate(enc["input_ids"], enc["attention_mask"], 10, 10)
    lengths = torch.tensor([3, 7, 1, 5])
    seen = []

    def stopping(step, rows, tokens):
        seen.append(rows.tolist())
        return step + 1 >= lengths[rows]

    got = decoder.generate(enc["input_ids"], enc["attention_mask"], 10, 10, stopping=stopping)
    assert got.shape == (4, 1 + 7)  # the longest row decides when the batch ends
    for row, n in enumerate(lengths.tolist()):
        assert torch.equal(got[row, : 1 + n], full[row, : 1 + n])  # its own greedy tokens, then padding
        assert (got[row, 1 + n :] == tiny_tokenizer.pad_token_id).all()
    assert seen[0] == [0, 1, 2, 3]


@pytest.mark.parametrize("forced", [False, True])
def test_dropping_finished_rows_keeps_float_outputs(tiny_teacher, tiny_tokenizer, monkeypatch, forced):
    """Rows leave the batch as they finish (CTranslate2's trick); the fp32 output ids stay generate's."""
    from llmdiet.engines import t5_static_decoding as module

    sources = SOURCES * 2  # 8 rows, so that a quarter of the rows is 2
    enc = tiny_tokenizer(sources, return_tensors="pt", padding=True)
    lengths = torch.tensor([2, 9, 4, 12, 3, 6, 1, 8])
    stopping = (lambda step, rows, tokens: step + 1 >= lengths[rows]) if forced else None
    low, high = (12, 12) if forced else (0, 40)
    decoder = StaticCacheT5Decoder(tiny_teacher)
    reference = decoder.generate(enc["input_ids"], enc["attention_mask"], high, low, stopping=stopping)
    kept_sizes = []
    original_keep = module.DecoderState.keep
    monkeypatch.setattr(
        module.DecoderState, "keep", lambda self, rows: (kept_sizes.append(len(rows)), original_keep(self, rows))[1]
    )
    got = decoder.generate(enc["input_ids"], enc["attention_mask"], high, low, stopping=stopping, drop_finished=True)
    assert torch.equal(got, reference)
    assert kept_sizes and kept_sizes == sorted(kept_sizes, reverse=True) and kept_sizes[-1] < 8  # rows did leave
    if not forced:  # the trained teacher's rows end at their own EOS, at different steps
        ends = (reference == tiny_tokenizer.eos_token_id).int().argmax(dim=1)
        assert len(set(ends.tolist())) > 1
        assert torch.equal(reference, _hf(tiny_teacher, enc, high))


def _eval(argv) -> int:
    from llmdiet import cli

    return cli.main(["eval", *(str(a) for a in argv)])


def test_eval_drop_finished_keeps_the_fp32_scores_and_is_recorded(demo_assets, tmp_path, capsys):
    import json

    common = ["--model", demo_assets.teacher, "--eval_set", "demo-en-fr", "--max_eval_samples", "24", "--no_progress"]
    common += ["--batch_size", "8"]
    assert _eval([*common, "--output_dir", tmp_path / "plain"]) == 0
    assert _eval([*common, "--output_dir", tmp_path / "drop", "--drop_finished"]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    dropped = json.loads((tmp_path / "drop" / "results.json").read_text())
    assert dropped["sets"]["demo-en-fr"]["metrics"] == plain["sets"]["demo-en-fr"]["metrics"]
    assert "finished rows dropped" in dropped["model"]["backend"]["decoding"]
    settings = json.loads((tmp_path / "drop" / "eval_settings.json").read_text())
    assert json.dumps(settings).count('"drop_finished": true') == 1
    # resuming the plain run with --drop_finished is another run: refused in one line
    capsys.readouterr()
    assert _eval([*common, "--output_dir", tmp_path / "plain", "--drop_finished"]) == 2
    err = capsys.readouterr().err.strip()
    assert "drop_finished" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--decoding", "generate"], "--drop_finished works in llmdiet's greedy static decoder"),
        (["--num_beams", "2"], "--drop_finished works in llmdiet's greedy static decoder"),
        (["--backend", "ct2-int8"], "--drop_finished: backend ct2-int8"),
    ],
)
def test_eval_drop_finished_bad_combinations_are_one_line(demo_assets, tmp_path, capsys, extra, needle):
    argv = [
        "--model",
        demo_assets.teacher,
        "--eval_set",
        "demo-en-fr",
        "--output_dir",
        tmp_path / "o",
        "--drop_finished",
    ]
    assert _eval([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_python_api_load_drop_finished(demo_assets):
    import llmdiet
    from llmdiet.engines import BackendError

    plain = llmdiet.load(str(demo_assets.teacher))
    dropping = llmdiet.load(str(demo_assets.teacher), drop_finished=True)
    sources = SOURCES * 3
    assert dropping.translate(sources, max_new_tokens=30) == plain.translate(sources, max_new_tokens=30)
    assert dropping.backend.drop_finished and not plain.backend.drop_finished
    with pytest.raises(BackendError, match="torch backends only"):
        llmdiet.load(str(demo_assets.teacher), backend="ct2-int8", drop_finished=True)
