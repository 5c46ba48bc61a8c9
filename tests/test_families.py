"""Distillation beyond T5: a tiny BART teacher/student pair (random init, the demo tokenizer) trains with every
registered method, and what the family does not support is refused in one line. (The full family matrix, with
Marian, M2M100 and NLLB and their own tokenizer classes, is issue 21.)"""

from __future__ import annotations

import math

import pytest
from test_distill import parse, small_run_argv

from llmdiet.config import ConfigError
from llmdiet.distill.methods import methods


@pytest.fixture(scope="module")
def bart_pair(demo_assets, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    root = tmp_path_factory.mktemp("bart")
    paths = {}
    for role, (d, layers) in {"teacher": (64, 2), "student": (32, 1)}.items():
        torch.manual_seed(0 if role == "teacher" else 1)
        config = BartConfig(
            vocab_size=len(tok),
            d_model=d,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=2 * d,
            decoder_ffn_dim=2 * d,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
            forced_eos_token_id=tok.eos_token_id,
        )
        model = BartForConditionalGeneration(config)
        paths[role] = root / role
        model.save_pretrained(paths[role])
        tok.save_pretrained(paths[role])
    return paths


def _argv(demo_assets, bart_pair, out, *extra):
    argv = small_run_argv(demo_assets, out, "--max_steps", "6", "--source_prefix", "", *extra)
    argv[argv.index("--teacher_model") + 1] = str(bart_pair["teacher"])
    argv[argv.index("--student_model") + 1] = str(bart_pair["student"])
    return argv


@pytest.mark.parametrize("method", list(methods()))
def test_every_method_trains_a_bart_student(method, demo_assets, bart_pair, tmp_path):
    from llmdiet.distill.job import run

    extra = ["--method", method] + (["--lmbda", "1", "--gkd_max_new_tokens", "8"] if method == "gkd" else [])
    summary = run(*parse(_argv(demo_assets, bart_pair, tmp_path / method, *extra)))
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses  # six steps from random init lower the method's objective
    assert summary["global_step"] == 6


def test_copy_layers_refuses_a_bart_teacher_in_one_line(demo_assets, bart_pair, tmp_path):
    from llmdiet.distill.job import run

    argv = _argv(
        demo_assets,
        bart_pair,
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
