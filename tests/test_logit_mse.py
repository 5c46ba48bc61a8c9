"""logit_mse, the method added by following CONTRIBUTING.md: its loss against a float64 reference written from the
definition, token normalisation under accumulation, and a run through every layer that reads the registry (CLI
flags, training, model card, the study's cache rule)."""

from __future__ import annotations

import math

import pytest
import torch
from test_distill import parse, small_run_argv

from llmdiet.config import ConfigError
from llmdiet.distill.methods.logit_mse import logit_mse_loss


def _reference(s, t, labels, alpha, center, scale):
    """Per token: mean_v (z_s - z_t)^2 (optionally centered) and -log softmax(z_s)[gold], in float64 loops."""
    mse = ce = 0.0
    n = 0
    for row_s, row_t, gold in zip(
        s.reshape(-1, s.shape[-1]).tolist(), t.reshape(-1, t.shape[-1]).tolist(), labels.reshape(-1).tolist()
    ):
        if gold == -100:
            continue
        n += 1
        if center:
            ms, mt = sum(row_s) / len(row_s), sum(row_t) / len(row_t)
            cs, ct = [x - ms for x in row_s], [x - mt for x in row_t]
        else:
            cs, ct = row_s, row_t
        mse += sum((a - b) ** 2 for a, b in zip(cs, ct)) / len(cs)  # mean over the vocabulary
        top = max(row_s)
        ce -= row_s[gold] - (top + math.log(sum(math.exp(x - top) for x in row_s)))
    return alpha * scale * mse / n + (1 - alpha) * ce / n, mse / n, ce / n


@pytest.mark.parametrize("center", [False, True])
def test_loss_equals_the_float64_reference(center):
    torch.manual_seed(3)
    s, t = torch.randn(2, 6, 13) * 3, torch.randn(2, 6, 13) * 3
    labels = torch.randint(0, 13, (2, 6))
    labels[0, 4:] = -100
    parts = logit_mse_loss(s, t, labels, alpha=0.3, center=center, scale=0.5)
    total, mse, ce = _reference(s, t, labels, 0.3, center, 0.5)
    assert parts.loss.item() == pytest.approx(total, rel=1e-5)
    assert parts.kd.item() == pytest.approx(mse, rel=1e-5) and parts.ce.item() == pytest.approx(ce, rel=1e-5)
    assert logit_mse_loss(s, t + 7.0, labels, center=True).kd.item() == pytest.approx(
        logit_mse_loss(s, t, labels, center=True).kd.item(), rel=1e-5
    )  # centering: a constant shift is no error


def test_accumulated_halves_give_the_full_batch_gradient():
    torch.manual_seed(4)
    s, t = torch.randn(4, 5, 9, requires_grad=True), torch.randn(4, 5, 9)
    labels = torch.randint(0, 9, (4, 5))
    labels[1, 2:] = -100
    n = (labels != -100).sum()
    logit_mse_loss(s, t, labels, 0.5).loss.backward()
    full = s.grad.clone()
    s.grad = None
    for part in (slice(0, 2), slice(2, 4)):
        logit_mse_loss(s[part], t[part], labels[part], 0.5, num_valid_tokens=n).loss.backward()
    torch.testing.assert_close(s.grad, full)
    assert logit_mse_loss(s, t, labels, alpha=0.0).loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(s.reshape(-1, 9), labels.reshape(-1), ignore_index=-100).item(), rel=1e-6
    )


def test_flags_come_from_the_registry():
    from llmdiet.distill.job import main

    with pytest.raises(ConfigError, match="--logit_mse_scale must be > 0"):
        main(["--method", "logit_mse", "--logit_mse_scale", "0"])
    with pytest.raises(ConfigError, match="--logit_mse_center belongs to --method logit_mse, not to --method kd"):
        main(["--logit_mse_center", "true"])
    with pytest.raises(ConfigError, match="--teacher_cache cannot serve --method logit_mse"):
        main(["--method", "logit_mse", "--teacher_cache", "cache"])


def test_training_lowers_the_mse_and_writes_the_methods_card(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    out = tmp_path / "mse"
    summary = run(
        *parse(
            small_run_argv(
                demo_assets,
                out,
                "--method",
                "logit_mse",
                "--alpha",
                "0.5",
                "--logit_mse_center",
                "true",
                "--max_steps",
                "12",
                "--learning_rate",
                "3e-3",
            )
        )
    )
    mse = [e["kd"] for e in summary["log_history"] if "kd" in e and "loss" in e]
    assert len(mse) >= 2 and mse[-1] < 0.9 * mse[0], mse
    card = (out / "README.md").read_text()
    assert "logit_mse (logit matching): loss = alpha * 1 * MSE(centered student logits" in card
    assert "KL(teacher || student)" not in card  # not kd's formula


def test_the_study_runs_it_with_the_live_teacher():
    from pathlib import Path

    from llmdiet.study.config import load_study_config
    from llmdiet.study.fingerprints import distill_options

    cfg = load_study_config(Path(__file__).resolve().parents[1] / "recipes" / "configs" / "demo.yaml")
    assert "teacher_cache" in distill_options(cfg, {"alpha": 0.5}, "out")[1]
    assert "teacher_cache" not in distill_options(cfg, {"method": "logit_mse"}, "out")[1]
