"""Deep mutual learning: the loss against a float64 reference, and two students trained and saved."""

from __future__ import annotations

import math

import pytest
import torch
from test_distill import parse, small_run_argv
from test_divergences import _kl64, _softmax64

from llmdiet.distill.losses import mutual_learning_loss


def test_mutual_loss_equals_the_float64_reference_and_gradients_stay_with_each_student():
    torch.manual_seed(1)
    a, b, t = torch.randn(2, 5, 11) * 2, torch.randn(2, 5, 11) * 2, torch.randn(2, 5, 11) * 2
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3:] = -100
    mask, temperature, alpha, w = labels != -100, 2.0, 0.4, 0.3
    ce_a = ce_b = kl_a = kl_b = kt_a = kt_b = 0.0
    for ra, rb, rt, g in zip(a[mask], b[mask], t[mask], labels[mask].tolist()):
        ce_a -= math.log(_softmax64(ra, 1.0)[g].item())
        ce_b -= math.log(_softmax64(rb, 1.0)[g].item())
        pa, pb, pt = (_softmax64(r, temperature).tolist() for r in (ra, rb, rt))
        kl_a, kl_b = kl_a + _kl64(pb, pa), kl_b + _kl64(pa, pb)
        kt_a, kt_b = kt_a + _kl64(pt, pa), kt_b + _kl64(pt, pb)
    n = mask.sum().item()
    expected = (
        (1 - alpha) * (ce_a + ce_b) + alpha * temperature**2 * (kl_a + kl_b) + w * temperature**2 * (kt_a + kt_b)
    ) / n
    la, lb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    got = mutual_learning_loss(la, lb, labels, alpha, temperature, teacher_logits=t, teacher_weight=w)
    assert got.loss.item() == pytest.approx(expected, rel=1e-5)
    assert got.parts["kl_peer_a"].item() == pytest.approx(kl_a / n, rel=1e-5)
    # each student's gradient comes from its own terms only: the peer is detached
    mutual_learning_loss(la, lb.detach(), labels, alpha, temperature).loss.backward()
    grad_a_alone = la.grad.clone()
    la.grad = None
    mutual_learning_loss(la, lb, labels, alpha, temperature).loss.backward()
    assert torch.allclose(la.grad, grad_a_alone)
    assert mutual_learning_loss(a, a, labels, alpha, temperature).parts["kl_peer_a"].abs().item() < 1e-6


def test_dml_trains_two_students_and_saves_both(demo_assets, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from llmdiet import cli
    from llmdiet.distill.job import run

    out = tmp_path / "dml"
    summary = run(
        *parse(small_run_argv(demo_assets, out, "--method", "dml", "--max_steps", "12", "--learning_rate", "1e-3"))
    )
    history = [e for e in summary["log_history"] if "loss" in e]
    losses = [e["loss"] for e in history]  # per-step losses are noisy: compare the first and last two
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses  # measured 2.23 -> 1.51 (shipped demo models)
    assert all({"ce_a", "ce_b", "kl_peer_a", "kl_peer_b"} <= set(e) for e in history)
    assert summary["resolved_models"]["teacher"] is None  # no teacher term by default: no teacher loaded
    a = AutoModelForSeq2SeqLM.from_pretrained(out / "student_a")
    b = AutoModelForSeq2SeqLM.from_pretrained(out / "student_b")
    assert not torch.equal(a.lm_head.weight, b.lm_head.weight)  # two students, not one saved twice
    assert (out / "student_a" / "README.md").exists() and (out / "student_b" / "tokenizer.json").exists()
    assert (
        cli.main(
            [
                "eval",
                "--model",
                str(out / "student_b"),
                "--eval_set",
                "demo-en-fr",
                "--max_eval_samples",
                "8",
                "--output_dir",
                str(tmp_path / "eval-b"),
                "--batch-size",
                "8",
                "--max-new-tokens",
                "16",
                "--no_progress",
            ]
        )
        == 0
    )


def test_dml_resumes_from_its_checkpoint(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    out = tmp_path / "dml"
    args = small_run_argv(
        demo_assets, out, "--method", "dml", "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3"
    )
    run(*parse(args))
    assert (out / "checkpoint-3" / "student_a" / "model.safetensors").exists()
    summary = run(*parse(args + ["--max_steps", "8", "--resume_from_checkpoint", str(out / "checkpoint-6")]))
    assert summary["global_step"] == 8


@pytest.mark.slow
def test_dml_under_two_ddp_processes(demo_assets, tmp_path):
    """Both students in one DDP module: two CPU processes (gloo) train them, rank 0 saves both."""
    import json
    import os
    import subprocess
    import sys

    from test_distill import REPO

    out = tmp_path / "ddp-dml"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "recipes" / "distill.py"),
        *small_run_argv(demo_assets, out, "--method", "dml", "--max_steps", "4", "--per_device_train_batch_size", "8"),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["global_step"] == 4
    assert (out / "student_a" / "model.safetensors").exists() and (out / "student_b" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "dml"],
        ["--student_fake_quant", "4", "--fake_quant_init", "gpfq"],
        [
            "--student_init",
            "copy_layers",
            "--student_encoder_layers",
            "1",
            "--student_decoder_layers",
            "1",
            "--hidden_weight",
            "1.0",
        ],
        ["--divergence", "jsd", "--teacher_cache", "CACHE"],
    ],
    ids=["dml", "fake-quant-gpfq", "copy-layers-hidden", "jsd-cached"],
)
def test_new_methods_under_accelerate_launch(demo_assets, tmp_path, extra):
    import subprocess
    import sys

    from test_distill import REPO

    out = tmp_path / "launched"
    extra = [str(tmp_path / "cache") if x == "CACHE" else x for x in extra]
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--cpu",
        str(REPO / "recipes" / "distill.py"),
        *small_run_argv(demo_assets, out, "--max_steps", "4", *extra),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "training_log.json").exists()
