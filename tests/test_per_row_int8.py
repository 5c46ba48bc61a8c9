"""Per-row activation scales for dynamic int8 (llmdiet.quantize.per_row_int8): a row's output is a function of that
row alone, so the int8 teacher verifying a draft, or dropping finished rows, gives its own greedy output."""

from __future__ import annotations

import json

import pytest
import torch
from torch.ao.quantization import quantize_dynamic

from llmdiet.quantize.per_row_int8 import PerRowDynamicLinear, use_activation_scales


def _layers(n_in: int, n_out: int, bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    float_layer = torch.nn.Linear(n_in, n_out, bias=bias)
    per_batch = quantize_dynamic(torch.nn.Sequential(float_layer), {torch.nn.Linear}, dtype=torch.qint8)[0]
    return float_layer, per_batch, PerRowDynamicLinear.from_dynamic(per_batch)


@pytest.mark.parametrize("n_in,n_out,bias", [(64, 48, False), (512, 1024, False), (96, 32, True)])
def test_each_rows_output_is_the_same_alone_and_in_any_batch(n_in, n_out, bias):
    float_layer, per_batch, per_row = _layers(n_in, n_out, bias)
    x = torch.randn(17, n_in) * torch.logspace(-2, 1, 17)[:, None]  # rows of very different magnitudes
    x[3] = 0.0
    with torch.inference_mode():
        batched = per_row(x)
        for i in range(17):
            assert torch.equal(per_row(x[i : i + 1]), batched[i : i + 1]), i
        assert torch.equal(per_row(x[5:9]), batched[5:9])
        assert torch.equal(per_row(x.reshape(1, 17, n_in))[0], batched)  # 3-D input: the same rows
        if not bias:
            assert torch.equal(batched[3], torch.zeros(n_out))  # an all-zero row stays zero
        # torch.ao's per-batch scale: a small row alone differs from the same row beside a large one
        assert not all(torch.equal(per_batch(x[i : i + 1]), per_batch(x)[i : i + 1]) for i in range(17))
        reference = float_layer(x)

    # each row gets its own range: closer to the float layer than one scale for the batch, row by row on average
    def row_error(y):
        return ((y - reference).norm(dim=-1) / reference.norm(dim=-1).clamp(min=1e-12))[torch.arange(17) != 3]

    with torch.inference_mode():
        assert row_error(batched).mean() < 0.5 * row_error(per_batch(x)).mean()
        assert row_error(batched).max() < 0.05


def test_the_packed_weights_are_shared_and_the_scheme_switches_both_ways():
    model = torch.nn.Sequential(torch.nn.Linear(32, 16, bias=False), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    packed = model[0]._packed_params
    use_activation_scales(model, "per_row")
    assert type(model[0]) is PerRowDynamicLinear and type(model[2]) is PerRowDynamicLinear
    assert model[0]._packed_params is packed  # no copy of the int8 weights
    use_activation_scales(model, "per_batch")
    assert type(model[0]) is torch.ao.nn.quantized.dynamic.Linear and model[0]._packed_params is packed
    with pytest.raises(ValueError, match="per_row, per_batch"):
        use_activation_scales(model, "per_channel")


@pytest.fixture(scope="module")
def int8_teacher(demo_assets, tmp_path_factory):
    from llmdiet.quantize import quantize_model

    out = tmp_path_factory.mktemp("per-row") / "teacher-int8"
    quantize_model(str(demo_assets.teacher), "dynamic-int8", out)
    return out


def _sources(rows: int) -> list[str]:
    from llmdiet.evaluation.eval_sets import resolve_eval_set

    spec = resolve_eval_set("demo-en-fr")
    return [spec.prefix + r.source for r in spec.load()[:rows]]


def test_int8_teacher_verifying_the_draft_gives_its_own_greedy_output(int8_teacher, demo_assets):
    """Issue 33: the demo pair, 200 sentences at batch 1: speculative == plain greedy for the int8 teacher (per-batch
    scales gave 192/200), and the backend says so."""
    import llmdiet

    sources = _sources(200)
    plain = llmdiet.load(str(int8_teacher))
    drafted = llmdiet.load(str(int8_teacher), draft=str(demo_assets.student))
    assert drafted.backend.describe()["lossless"] is True
    assert drafted.backend.describe()["activations"] == "float32, int8 per row"
    ours = plain.translate(sources, batch_size=1, max_new_tokens=64)
    verified = drafted.translate(sources, batch_size=1, max_new_tokens=64)
    assert verified == ours
    assert drafted.backend.decoding_stats()["proposed"] > 0
    # batches of 16, each row advancing by its own accepted run (ragged speculation): the same outputs
    assert drafted.translate(sources, batch_size=16, max_new_tokens=64) == ours
    stats = drafted.backend.decoding_stats()
    assert stats["tokens_per_teacher_forward"] > 1.5, stats  # lockstep advanced by the batch's minimum: 0.62
    per_batch = llmdiet.load(str(int8_teacher), draft=str(demo_assets.student), int8_activation_scales="per_batch")
    assert per_batch.backend.describe()["lossless"] is False


def test_int8_dropped_rows_and_batch_size_do_not_change_the_outputs(int8_teacher):
    """The same 96 sentences at batch 1, at batch 32, and at batch 32 with finished rows dropped: identical."""
    import llmdiet

    sources = _sources(96)
    outputs = {}
    for name, batch, drop in (("alone", 1, False), ("batched", 32, False), ("dropped", 32, True)):
        translator = llmdiet.load(str(int8_teacher), drop_finished=drop)
        outputs[name] = translator.translate(sources, batch_size=batch, max_new_tokens=64)
    assert outputs["batched"] == outputs["alone"]
    assert outputs["dropped"] == outputs["alone"]
    assert len(set(outputs["alone"])) > 50  # real, varied translations


def test_eval_records_the_scheme_and_refuses_to_resume_the_other(int8_teacher, tmp_path, capsys):
    from llmdiet import cli

    common = ["eval", "--model", str(int8_teacher), "--eval_set", "demo-en-fr", "--max_eval_samples", "8"]
    common += ["--no_progress", "--output_dir", str(tmp_path / "run")]
    assert cli.main(common) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model"]["backend"]["activations"] == "float32, int8 per row"
    capsys.readouterr()
    assert cli.main([*common, "--int8_activation_scales", "per_batch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "int8_activation_scales" in err and len(err.splitlines()) == 1, err
