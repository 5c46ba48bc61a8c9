"""Quantization-aware distillation: straight-through fake quant, weights on the b-bit grid after training."""

from __future__ import annotations

import pytest
import torch
from test_distill import parse, small_run_argv

from llmdiet.distill.fake_quant import FakeQuant, rtn_per_channel


def test_rtn_grid_and_straight_through_gradient():
    torch.manual_seed(0)
    w = torch.randn(5, 7, requires_grad=True)
    q = rtn_per_channel(w.detach(), 3)
    levels = 3
    scale = w.detach().abs().amax(1, keepdim=True) / levels
    codes = q / scale
    assert torch.allclose(codes, codes.round(), atol=1e-5) and codes.abs().max() <= levels + 1e-5
    out = FakeQuant(3)(w)
    assert torch.allclose(out, q)
    (out * torch.arange(35.0).view(5, 7)).sum().backward()
    assert torch.equal(w.grad, torch.arange(35.0).view(5, 7))  # identity gradient (STE)


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_saved_student_lies_on_the_grid(demo_assets, tmp_path, bits):
    from transformers import AutoModelForSeq2SeqLM

    from llmdiet.distill.job import run

    out = tmp_path / f"qad{bits}"
    summary = run(*parse(small_run_argv(demo_assets, out, "--student_fake_quant", str(bits), "--max_steps", "4")))
    student = AutoModelForSeq2SeqLM.from_pretrained(out)
    linears = [(n, m) for n, m in student.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert linears
    for name, module in linears:
        assert torch.allclose(rtn_per_channel(module.weight, bits), module.weight, atol=1e-6), name
    assert summary["fake_quant"]["bits"] == bits
    assert summary["fake_quant"]["packed_bytes"] < summary["fake_quant"]["fp32_bytes"]
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_gpfq_initialised_fake_quant_starts_from_gpfq_and_ends_on_its_grid(demo_assets, tiny_tokenizer, tmp_path):
    from test_gpfq import _calibration
    from transformers import AutoModelForSeq2SeqLM

    from llmdiet.distill.fake_quant import apply_fake_quant, fixed_grid
    from llmdiet.distill.job import run

    # at step 0 the gpfq-initialised student IS the GPFQ-quantized student, and differs from the RTN start
    from llmdiet.quantize.lowbit import quantize_linears

    base = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    calib = _calibration(tiny_tokenizer)
    gpfq_model = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    report = quantize_linears(gpfq_model, "gpfq", 3, calib)
    init = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    apply_fake_quant(init, 3, init="gpfq", calibration=calib)
    rtn = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    apply_fake_quant(rtn, 3)
    q_proj = "encoder.block.0.layer.0.SelfAttention.q"
    w_init = dict(init.named_modules())[q_proj].weight  # the parametrized (quantized) view
    assert torch.allclose(w_init, dict(gpfq_model.named_modules())[q_proj].weight, atol=1e-6)
    assert not torch.allclose(w_init, dict(rtn.named_modules())[q_proj].weight)
    assert torch.equal(init.lm_head.weight, base.lm_head.weight)  # the LM head stays float

    out = tmp_path / "gpfq3"
    summary = run(
        *parse(
            small_run_argv(
                demo_assets, out, "--student_fake_quant", "3", "--fake_quant_init", "gpfq", "--max_steps", "4"
            )
        )
    )
    student = AutoModelForSeq2SeqLM.from_pretrained(out)
    deltas = {layer["name"]: layer["delta"] for layer in report.per_layer}
    for name, module in student.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            assert torch.allclose(fixed_grid(module.weight, 3, deltas[name]), module.weight, atol=1e-6), name
    assert summary["fake_quant"]["grid"] == "gpfq per layer"
