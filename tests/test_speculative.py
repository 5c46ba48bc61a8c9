"""Speculative decoding (``llmdiet.engines.speculative``): the draft proposes, the teacher verifies, and the output
ids are exactly the teacher's greedy ``generate`` output, whatever the draft proposes."""

from __future__ import annotations

import json

import pytest
import torch

from llmdiet.engines import GenerationSettings, load_backend
from llmdiet.engines.speculative import SpeculativeDecoder
from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
from llmdiet.modeling import load_seq2seq

SOURCES = [
    "translate English to French: The cat sat on the mat.",
    "translate English to French: Hello world, this is a much longer sentence with many more words in it than the others.",
    "translate English to French: Yes.",
    "translate English to French: Thank you very much for your help yesterday.",
    "translate English to French: The children like the city.",
    "translate English to French: My brother buys bread at the market every morning.",
]


def _generate(model, enc, max_new, min_new=0):
    return model.generate(**enc, max_new_tokens=max_new, min_new_tokens=min_new or None, num_beams=1, do_sample=False)


def _noisy_copy(model, scale: float, seed: int = 0):
    """The teacher with Gaussian noise on every weight: a draft that agrees often, not always."""
    import copy

    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale * p.std())
    return noisy


@pytest.fixture
def demo_student(demo_assets):
    return load_seq2seq(str(demo_assets.student))[0].eval()


@pytest.mark.parametrize("draft_kind", ["student", "teacher", "noisy"])
@pytest.mark.parametrize("lookahead", [1, 3, 5])
@pytest.mark.parametrize("batch", [1, 6])
def test_output_equals_the_teachers_greedy_generate(
    tiny_teacher, tiny_tokenizer, demo_student, draft_kind, lookahead, batch
):
    draft = {"student": demo_student, "teacher": tiny_teacher, "noisy": _noisy_copy(tiny_teacher, 0.3)}[draft_kind]
    decoder = SpeculativeDecoder(StaticCacheT5Decoder(tiny_teacher), StaticCacheT5Decoder(draft), lookahead=lookahead)
    rows = SOURCES[:batch] if batch > 1 else SOURCES[1:2]
    for source in [rows] if batch > 1 else [[s] for s in SOURCES]:
        enc = tiny_tokenizer(source, return_tensors="pt", padding=True)
        reference = _generate(tiny_teacher, enc, 40)
        got = decoder.generate(enc["input_ids"], enc["attention_mask"], 40)
        assert got.shape == reference.shape and torch.equal(got, reference), (got, reference)
    stats = SpeculativeDecoder.summarize(decoder.stats)
    assert stats["proposed"] > 0 and 0.0 < stats["tokens_per_teacher_forward"] <= decoder.max_lookahead + 1
    if draft_kind == "teacher":  # a draft identical to the teacher: every proposal accepted
        assert stats["acceptance_rate"] == 1.0 and stats["tokens_per_teacher_forward"] > 1.5
    elif draft_kind == "noisy":  # a partial agreement exercises rejection and rollback of both caches
        assert 0.0 < stats["acceptance_rate"] < 1.0, stats


@pytest.mark.parametrize("max_new,min_new", [(12, 12), (5, 0), (150, 150), (7, 3)])
def test_min_and_max_new_tokens_and_buffer_growth_as_generate(tiny_teacher, tiny_tokenizer, max_new, min_new):
    draft = _noisy_copy(tiny_teacher, 0.2, seed=1)
    decoder = SpeculativeDecoder(StaticCacheT5Decoder(tiny_teacher), StaticCacheT5Decoder(draft), lookahead=4)
    enc = tiny_tokenizer(SOURCES[:3], return_tensors="pt", padding=True)
    reference = _generate(tiny_teacher, enc, max_new, min_new)
    got = decoder.generate(enc["input_ids"], enc["attention_mask"], max_new, min_new)
    assert got.shape == reference.shape and torch.equal(got, reference)


def test_bf16_teacher_gives_its_own_greedy_output(tiny_teacher, tiny_tokenizer, demo_student):
    teacher = tiny_teacher.to(torch.bfloat16)
    decoder = SpeculativeDecoder(
        StaticCacheT5Decoder(teacher), StaticCacheT5Decoder(demo_student.to(torch.bfloat16)), lookahead=3
    )
    enc = tiny_tokenizer(SOURCES, return_tensors="pt", padding=True)
    assert torch.equal(decoder.generate(enc["input_ids"], enc["attention_mask"], 30), _generate(teacher, enc, 30))


def test_oracle_sets_the_acceptance_and_keeps_the_output(tiny_teacher, tiny_tokenizer, demo_student):
    """The benchmark's controlled acceptance: proposals replaced by the teacher's own tokens with probability a."""
    enc = tiny_tokenizer(SOURCES[1:2], return_tensors="pt")
    reference = _generate(tiny_teacher, enc, 40, 40)
    target = reference[0, 1:]
    generator = torch.Generator().manual_seed(0)

    def oracle(proposal, index):
        right = target[index] if index < len(target) else proposal[0]
        wrong = (right + 1) % tiny_teacher.config.vocab_size
        return (right if torch.rand((), generator=generator) < 0.7 else wrong).view(1)

    decoder = SpeculativeDecoder(StaticCacheT5Decoder(tiny_teacher), StaticCacheT5Decoder(demo_student), lookahead=4)
    got = decoder.generate(enc["input_ids"], enc["attention_mask"], 40, 40, oracle=oracle)
    assert torch.equal(got, reference)
    rate = SpeculativeDecoder.summarize(decoder.stats)["acceptance_rate"]
    assert 0.3 < rate < 0.95, rate  # a run of proposals stops at the first wrong one: below a, far above 0


def test_forward_rows_puts_each_row_at_its_own_positions(tiny_teacher, tiny_tokenizer):
    """A ragged batch (rows at different positions) gives each row the logits it gets decoded alone."""
    decoder = StaticCacheT5Decoder(tiny_teacher)
    enc = tiny_tokenizer(SOURCES[:3], return_tensors="pt", padding=True)
    reference = _generate(tiny_teacher, enc, 12, 12)  # (3, 13): a token sequence per row
    with torch.inference_mode():
        state = decoder.start(enc["input_ids"], enc["attention_mask"], 4)  # capacity 4: the buffers must grow
        counts = torch.tensor([5, 2, 8])  # row r has fed positions < counts[r]
        for r, n in enumerate(counts.tolist()):  # prefill each row alone up to its own position
            alone = decoder.start(enc["input_ids"][r : r + 1], enc["attention_mask"][r : r + 1], 16)
            decoder.forward(alone, reference[r : r + 1, :n])
            for i in range(len(alone.keys)):
                while len(state.keys) <= i:
                    state.keys.append(alone.keys[i].new_zeros((3, *alone.keys[i].shape[1:])))
                    state.values.append(alone.values[i].new_zeros((3, *alone.values[i].shape[1:])))
                state.keys[i][r, :, :n] = alone.keys[i][0, :, :n]
                state.values[i][r, :, :n] = alone.values[i][0, :, :n]
        state.capacity, state.length = 16, 8
        chunk = torch.stack([reference[r, n : n + 3] for r, n in enumerate(counts.tolist())])
        got = decoder.forward_rows(state, chunk, counts)
        for r, n in enumerate(counts.tolist()):
            alone = decoder.start(enc["input_ids"][r : r + 1], enc["attention_mask"][r : r + 1], 16)
            want = decoder.forward(alone, reference[r : r + 1, : n + 3])[0, n:]
            torch.testing.assert_close(got[r], want, rtol=1e-5, atol=1e-5)
            # the greedy choices there are the reference's next tokens (EOS was banned: min_new_tokens = 12)
            banned = got[r].clone()
            banned[:, tiny_teacher.config.eos_token_id] = -float("inf")
            assert torch.equal(banned.argmax(-1), reference[r, n + 1 : n + 4])
        assert state.length == 11 and state.keys[0].shape[2] >= 11


@pytest.mark.parametrize("max_new,min_new", [(40, 0), (40, 40), (9, 3)])
def test_ragged_batches_advance_each_row_by_its_own_run_and_keep_the_output(
    tiny_teacher, tiny_tokenizer, demo_student, max_new, min_new
):
    """Batched speculation: rows keep their own accepted runs (more tokens per row-forward than lockstep), finished
    rows leave the batch, and the ids stay the teacher's greedy ones."""
    enc = tiny_tokenizer(SOURCES, return_tensors="pt", padding=True)
    reference = _generate(tiny_teacher, enc, max_new, min_new)
    rates = {}
    for ragged in (True, False):
        decoder = SpeculativeDecoder(
            StaticCacheT5Decoder(tiny_teacher), StaticCacheT5Decoder(_noisy_copy(tiny_teacher, 0.2, 1)), ragged=ragged
        )
        got = decoder.generate(enc["input_ids"], enc["attention_mask"], max_new, min_new)
        assert got.shape == reference.shape and torch.equal(got, reference), ragged
        stats = SpeculativeDecoder.summarize(decoder.stats)
        assert stats["generated"] == int((reference[:, 1:] != tiny_teacher.config.pad_token_id).sum())
        rates[ragged] = stats["tokens_per_teacher_forward"]
    if max_new == 40:
        assert rates[True] > rates[False], rates


def test_a_draft_with_another_vocabulary_is_refused(tiny_teacher):
    from transformers import T5Config, T5ForConditionalGeneration

    other = T5ForConditionalGeneration(
        T5Config(
            vocab_size=tiny_teacher.config.vocab_size + 8,
            d_model=32,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            d_kv=16,
            decoder_start_token_id=0,
        )
    )
    with pytest.raises(ValueError, match="vocabulary"):
        SpeculativeDecoder(StaticCacheT5Decoder(tiny_teacher), StaticCacheT5Decoder(other))


def test_backend_with_draft_translates_as_without_and_reports_acceptance(demo_assets):
    settings = GenerationSettings(max_new_tokens=32)
    plain = load_backend("torch-fp32", str(demo_assets.teacher))
    drafted = load_backend("torch-fp32", str(demo_assets.teacher), draft=str(demo_assets.student), draft_lookahead=3)
    assert [(t.hypothesis, t.generated_tokens) for t in drafted.translate(SOURCES, settings)] == [
        (t.hypothesis, t.generated_tokens) for t in plain.translate(SOURCES, settings)
    ]
    described = drafted.describe()
    assert described["decoding"].startswith("speculative") and described["lossless"] is True
    stats = drafted.decoding_stats()
    assert stats["proposed"] > 0 and 0 <= stats["acceptance_rate"] <= 1 and stats["sequences"] == len(SOURCES)
    assert drafted.decoding_stats()["proposed"] == 0  # reset by reading
    assert plain.decoding_stats() is None


def test_dynamic_int8_teacher_with_draft_is_lossless_only_with_per_row_activation_scales(demo_assets, tmp_path):
    from llmdiet.quantize import quantize_model

    quantize_model(str(demo_assets.teacher), "dynamic-int8", tmp_path / "int8")
    for scales, lossless in (("per_batch", False), ("per_row", True)):
        backend = load_backend("auto", str(tmp_path / "int8"), draft=str(demo_assets.student), activation_scales=scales)
        translations = backend.translate(SOURCES, GenerationSettings(max_new_tokens=24))
        assert all(t.hypothesis for t in translations) and backend.describe()["lossless"] is lossless


def _eval(argv) -> int:
    from llmdiet import cli

    return cli.main(["eval", *(str(a) for a in argv)])


def test_eval_draft_model_records_acceptance_and_the_same_scores(demo_assets, tmp_path, capsys):
    common = ["--model", demo_assets.teacher, "--eval_set", "demo-en-fr", "--max_eval_samples", "12", "--no_progress"]
    assert _eval([*common, "--output_dir", tmp_path / "plain"]) == 0
    assert _eval([*common, "--output_dir", tmp_path / "draft", "--draft_model", demo_assets.student]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    drafted = json.loads((tmp_path / "draft" / "results.json").read_text())
    assert drafted["sets"]["demo-en-fr"]["metrics"] == plain["sets"]["demo-en-fr"]["metrics"]
    speculative = drafted["sets"]["demo-en-fr"]["timing"]["speculative"]
    assert speculative["proposed"] > 0 and speculative["acceptance_rate"] is not None
    assert drafted["model"]["backend"]["draft"] == str(demo_assets.student.resolve())
    hyps = [json.loads(line)["hypothesis"] for line in (tmp_path / "draft/demo-en-fr/samples.jsonl").open()]
    assert hyps == [json.loads(line)["hypothesis"] for line in (tmp_path / "plain/demo-en-fr/samples.jsonl").open()]
    # a different draft is a different run: resuming into the directory is refused in one line
    capsys.readouterr()
    assert _eval([*common, "--output_dir", tmp_path / "draft", "--draft_model", demo_assets.teacher]) == 2
    err = capsys.readouterr().err.strip()
    assert "draft" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--decoding", "generate"], "--draft_model decodes greedily"),
        (["--num_beams", "2"], "--draft_model decodes greedily"),
        (["--draft_lookahead", "11"], "--draft_lookahead"),
    ],
)
def test_eval_draft_model_bad_combinations_are_one_line(demo_assets, tmp_path, capsys, extra, needle):
    argv = ["--model", demo_assets.teacher, "--eval_set", "demo-en-fr", "--output_dir", tmp_path / "o"]
    assert _eval([*argv, "--draft_model", demo_assets.student, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_python_api_load_with_a_draft(demo_assets):
    import llmdiet
    from llmdiet.engines import BackendError

    plain = llmdiet.load(str(demo_assets.teacher))
    drafted = llmdiet.load(str(demo_assets.teacher), draft=str(demo_assets.student), draft_lookahead=2)
    assert drafted.translate(SOURCES[:3], max_new_tokens=24) == plain.translate(SOURCES[:3], max_new_tokens=24)
    assert drafted.backend.describe()["draft"] == str(demo_assets.student)
    with pytest.raises(BackendError, match="torch backends only"):
        llmdiet.load(str(demo_assets.teacher), backend="ct2-int8", draft=str(demo_assets.student))


@pytest.mark.parametrize("forced", [0, "all"])
def test_forced_acceptance_runs_the_real_passes_at_the_set_rate(tiny_teacher, tiny_tokenizer, demo_student, forced):
    """The benchmarks' ``accept`` hook: none accepted means one token per teacher forward; all accepted means k+1."""
    decoder = SpeculativeDecoder(StaticCacheT5Decoder(tiny_teacher), StaticCacheT5Decoder(demo_student), lookahead=3)
    enc = tiny_tokenizer(SOURCES[:1], return_tensors="pt")

    def accept(k, batch):
        return torch.full((batch,), 0 if forced == 0 else k, dtype=torch.long)

    out = decoder.generate(enc["input_ids"], enc["attention_mask"], 30, 30, accept=accept)
    stats = SpeculativeDecoder.summarize(decoder.stats)
    assert out.shape == (1, 31) and stats["generated"] == 30
    if forced == 0:
        assert stats["accepted"] == 0 and stats["teacher_forwards"] == 30
    else:  # lookahead 3, 5, 7, 9 (+2 after each full round), capped by what is left: 4 + 6 + 8 + 10 + 2 tokens
        assert stats["accepted"] == stats["proposed"] and stats["teacher_forwards"] == 5


def test_bench_acceptance_follows_alpha():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.rounds import Acceptance

    counts = Acceptance(0.7, seed=0)(4, 20000).float()
    # leading successes of 4 Bernoulli(0.7) draws: E = 0.7 + 0.49 + 0.343 + 0.2401
    assert counts.mean().item() == pytest.approx(1.7731, abs=0.03) and counts.max() == 4 and counts.min() == 0
