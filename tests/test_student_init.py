"""Shrink-and-fine-tune: students made of evenly spaced teacher layers."""

from __future__ import annotations

import pytest
import torch
from test_distill import parse, small_run_argv

from llmdiet.distill.student_init import copy_layers_student, layers_to_copy


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
    assert torch.equal(
        s["encoder.block.1.layer.1.DenseReluDense.wo.weight"], t["encoder.block.3.layer.1.DenseReluDense.wo.weight"]
    )
    assert torch.equal(
        s["decoder.block.1.layer.1.EncDecAttention.q.weight"], t["decoder.block.2.layer.1.EncDecAttention.q.weight"]
    )
    for name in (
        "shared.weight",
        "lm_head.weight",
        "encoder.final_layer_norm.weight",
        "decoder.final_layer_norm.weight",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    ):
        assert torch.equal(s[name], t[name]), name
    biased = [k for k in s if "relative_attention_bias" in k]
    assert all(".block.0." in k for k in biased) and len(biased) == 2  # block 0 of each stack only
    student.save_pretrained(tmp_path / "copied")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "copied").config.num_layers == 2


def test_copy_layers_student_distils_with_any_method(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    summary = run(
        *parse(
            small_run_argv(
                demo_assets,
                tmp_path / "s",
                "--student_init",
                "copy_layers",
                "--student_encoder_layers",
                "1",
                "--student_decoder_layers",
                "1",
                "--method",
                "dkd",
                "--max_steps",
                "4",
            )
        )
    )
    assert summary["copied_layers"] == {"encoder": [0], "decoder": [0]}
    from transformers import AutoModelForSeq2SeqLM

    saved = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "s")
    assert saved.config.num_layers == 1 and saved.config.d_model == 128  # the demo teacher's width


def test_hidden_state_loss_equals_an_independent_computation():
    from llmdiet.distill.losses import hidden_state_loss

    torch.manual_seed(0)
    s = [torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)]
    t = [torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)]
    m = [torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])]
    expected = []
    for si, ti, mi in zip(s, t, m):
        total, n = 0.0, 0
        for b in range(mi.shape[0]):
            for p in range(mi.shape[1]):
                if mi[b, p]:
                    total += sum((x - y) ** 2 for x, y in zip(si[b, p].tolist(), ti[b, p].tolist())) / 8
                    n += 1
        expected.append(total / n)
    assert hidden_state_loss(s, t, m).item() == pytest.approx(sum(expected) / 2, rel=1e-6)  # computed in float32
    assert hidden_state_loss(s, s, m).item() == 0.0


def test_hidden_weight_compares_each_block_with_the_block_it_was_copied_from(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    # every teacher block copied and nothing trained (lr 0): the student IS the teacher, so a correct block mapping
    # gives a hidden loss of exactly 0 (a shifted or swapped mapping would not)
    same = run(
        *parse(
            small_run_argv(
                demo_assets,
                tmp_path / "same",
                "--student_init",
                "copy_layers",
                "--student_encoder_layers",
                "3",
                "--student_decoder_layers",
                "3",
                "--hidden_weight",
                "1.0",
                "--max_steps",
                "4",
                "--learning_rate",
                "0",
            )
        )
    )
    assert [e["hidden"] for e in same["log_history"] if "hidden" in e] == [0.0, 0.0]
    # a shrunk student (decoder 3 -> 1 block): starts equal to its teacher blocks (hidden 0), drifts while it learns;
    # weighting the hidden term keeps it closer to them than a negligible weight does (the term is optimised)
    finals = {}
    for weight in ("1e-9", "5.0"):
        argv = small_run_argv(
            demo_assets,
            tmp_path / weight,
            "--student_init",
            "copy_layers",
            "--student_encoder_layers",
            "3",
            "--student_decoder_layers",
            "1",
            "--hidden_weight",
            weight,
            "--max_steps",
            "12",
            "--learning_rate",
            "1e-3",
        )
        summary = run(*parse(argv))
        hidden = [e["hidden"] for e in summary["log_history"] if "hidden" in e]
        assert summary["copied_layers"] == {"encoder": [0, 1, 2], "decoder": [0]} and len(hidden) == 6
        finals[weight] = hidden[-1]
    assert finals["5.0"] < 0.8 * finals["1e-9"], finals


def test_hidden_weight_is_refused_without_copy_layers(demo_assets, tmp_path):
    from llmdiet.config import ConfigError

    with pytest.raises(ConfigError, match="--hidden_weight needs --student_init copy_layers"):
        parse(small_run_argv(demo_assets, tmp_path / "x", "--hidden_weight", "0.5"))
