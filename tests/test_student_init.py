"""Shrink-and-fine-tune: students made of evenly spaced teacher layers."""

from __future__ import annotations

import torch

from llmdiet.distill.student_init import copy_layers_student, layers_to_copy

from test_distill import parse, small_run_argv


def test_evenly_spaced_layers_keep_first_and_last():
    assert layers_to_copy(24, 3) == [0, 12, 23]
    assert layers_to_copy(24, 6) == [0, 5, 9, 14, 18, 23]
    assert layers_to_copy(12, 12) == list(range(12))
    assert layers_to_copy(8, 1) == [0]


def test_copy_layers_copies_the_right_tensors(demo_assets, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

    config = T5Config.from_pretrained(demo_assets.teacher)
    config.num_layers, config.num_decoder_layers = 4, 3
    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(config)
    student, mapping = copy_layers_student(teacher, 2, 2)
    assert mapping == {"encoder": [0, 3], "decoder": [0, 2]}
    assert student.config.num_layers == 2 and student.config.d_model == teacher.config.d_model
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["encoder.block.1.layer.1.DenseReluDense.wo.weight"], t["encoder.block.3.layer.1.DenseReluDense.wo.weight"])
    assert torch.equal(s["decoder.block.1.layer.1.EncDecAttention.q.weight"], t["decoder.block.2.layer.1.EncDecAttention.q.weight"])
    for name in ("shared.weight", "lm_head.weight", "encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight",
                 "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"):
        assert torch.equal(s[name], t[name]), name
    biased = [k for k in s if "relative_attention_bias" in k]
    assert all(".block.0." in k for k in biased) and len(biased) == 2  # block 0 of each stack only
    student.save_pretrained(tmp_path / "copied")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "copied").config.num_layers == 2


def test_copy_layers_student_distils_with_any_method(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    summary = run(*parse(small_run_argv(demo_assets, tmp_path / "s", "--student_init", "copy_layers",
                                        "--student_encoder_layers", "1", "--student_decoder_layers", "1",
                                        "--method", "dkd", "--max_steps", "4")))
    assert summary["copied_layers"] == {"encoder": [0], "decoder": [0]}
    from transformers import AutoModelForSeq2SeqLM

    saved = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "s")
    assert saved.config.num_layers == 1 and saved.config.d_model == 64  # the demo teacher's width
