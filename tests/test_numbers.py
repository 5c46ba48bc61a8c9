"""Numbers that cannot mislead: stale caches refused, eval loss = the objective, one BLEU per model and rows,
flags that do what they say, and a gradient test that sees a scale error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_distill import parse, small_run_argv

from llmdiet.config import ConfigError
from llmdiet.demo import DEMO_EN_FR


def _tokenised(tok, n=40, prefix="translate English to French: "):
    from llmdiet.data import read_parallel_file, tokenize_rows

    return tokenize_rows(read_parallel_file(DEMO_EN_FR, "en", "fr")[:n], tok, prefix, 64, 64)[0]


# ----------------------------------------------------------------------------- 1. caches keyed by their inputs


def test_teacher_cache_refuses_other_prefix_retrained_teacher_and_dtype(demo_assets, tmp_path):
    """Before: only the target ids, k, T and the teacher's *name* were checked (cached vs fresh log-probs
    differed by up to 5.5 with another prefix or a retrained teacher at the same path)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

    from llmdiet.distill.teacher_cache import TeacherCacheError, build_teacher_cache
    from llmdiet.fingerprint import model_identity

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    path = tmp_path / "teacher"
    shutil.copytree(demo_assets.teacher, path)
    teacher = AutoModelForSeq2SeqLM.from_pretrained(path)
    collate = DataCollatorForSeq2Seq(tok, model=teacher)
    ds = _tokenised(tok)
    cache = tmp_path / "cache"
    build_teacher_cache(teacher, ds, collate, cache, k=4, shard_size=16, teacher_identity=model_identity(str(path)))
    with pytest.raises(TeacherCacheError, match="inputs_fingerprint"):  # another source prefix
        build_teacher_cache(
            teacher,
            _tokenised(tok, prefix="translate English to German: "),
            collate,
            cache,
            k=4,
            shard_size=16,
            teacher_identity=model_identity(str(path)),
        )
    with pytest.raises(TeacherCacheError, match="teacher_dtype"):
        build_teacher_cache(
            teacher,
            ds,
            collate,
            cache,
            k=4,
            shard_size=16,
            teacher_identity=model_identity(str(path)),
            teacher_dtype="bfloat16",
        )
    with torch.no_grad():  # "retrain" the teacher in place: same path, other weights
        next(teacher.parameters()).add_(0.01)
    teacher.save_pretrained(path)
    with pytest.raises(TeacherCacheError, match=r"teacher_identity\.weights") as err:
        build_teacher_cache(teacher, ds, collate, cache, k=4, shard_size=16, teacher_identity=model_identity(str(path)))
    assert "--rebuild_caches" in str(err.value)
    build_teacher_cache(
        teacher, ds, collate, cache, k=4, shard_size=16, teacher_identity=model_identity(str(path)), rebuild=True
    )
    assert json.loads((cache / "meta.json").read_text())["teacher_identity"] == model_identity(str(path))


def test_pseudo_labels_refuse_other_settings_and_drop_a_torn_first_line(demo_assets, tmp_path):
    """Before: keyed by (index, source) only, and a torn *first* line was never cleaned (next run: invalid JSON)."""
    from llmdiet.data import read_parallel_file
    from llmdiet.distill.pseudo_labels import generate_pseudo_labels

    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:12]
    out = tmp_path / "tt.jsonl"
    prefix = "translate English to French: "
    first = generate_pseudo_labels(str(demo_assets.teacher), rows, prefix, out, num_beams=1, max_new_tokens=32)
    for change, kwargs in (
        ("num_beams", {"num_beams": 2, "max_new_tokens": 32}),
        ("max_new_tokens", {"num_beams": 1, "max_new_tokens": 16}),
    ):
        with pytest.raises(ConfigError, match=change):
            generate_pseudo_labels(str(demo_assets.teacher), rows, prefix, out, **kwargs)
    with pytest.raises(ConfigError, match="prefix"):
        generate_pseudo_labels(
            str(demo_assets.teacher), rows, "translate English to German: ", out, num_beams=1, max_new_tokens=32
        )
    with pytest.raises(ConfigError, match=r"teacher\.weights"):
        generate_pseudo_labels(str(demo_assets.student), rows, prefix, out, num_beams=1, max_new_tokens=32)
    # killed while writing the very first record: a torn first line, then good lines
    good = out.read_text().splitlines()
    out.write_text('{"index": 0, "sou\n' + "\n".join(good[3:]) + "\n")
    again = generate_pseudo_labels(str(demo_assets.teacher), rows, prefix, out, num_beams=1, max_new_tokens=32)
    assert again == first
    assert all(json.loads(line) for line in out.read_text().splitlines())
    assert len(out.read_text().splitlines()) == 12


# ----------------------------------------------------------------------------- 2-3. eval loss and one BLEU


def test_eval_loss_is_the_distillation_objective_when_generating(demo_assets, tmp_path):
    """Before: with predict_with_generate, eval_loss was the student's plain CE and eval_ce/eval_kd were missing."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    from llmdiet.distill.losses import distillation_loss
    from llmdiet.distill.trainer import DistillationTrainer

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    teacher = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher)
    student = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    ds = _tokenised(tok, n=16)
    collate = DataCollatorForSeq2Seq(tok, model=student, label_pad_token_id=-100)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=16,
        report_to="none",
        use_cpu=True,
        predict_with_generate=True,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        alpha=0.5,
        temperature=2.0,
        args=args,
        eval_dataset=ds,
        data_collator=collate,
        eval_generation={"max_new_tokens": 8},
    )
    metrics = trainer.evaluate()
    batch = collate([ds[i] for i in range(16)])
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        expected = distillation_loss(student(**inputs).logits, teacher(**inputs).logits, batch["labels"], 0.5, 2.0)
        plain_ce = student(**batch).loss.item()
    assert metrics["eval_loss"] == pytest.approx(expected.loss.item(), rel=1e-4)
    assert metrics["eval_ce"] == pytest.approx(expected.ce.item(), rel=1e-4)
    assert metrics["eval_kd"] == pytest.approx(expected.kd.item(), rel=1e-4)
    assert abs(metrics["eval_loss"] - plain_ce) > 1e-3  # what was reported before


def test_in_training_bleu_equals_the_harness_bleu(demo_assets, tmp_path, capsys):
    """Before: decoded-label references and generation_max_length 32 (20 without it) vs raw references and 128
    tokens in llmdiet eval: alpha-sweep students scored 24.65 in training and 15.09 in the harness."""
    from llmdiet import cli
    from llmdiet.distill.job import run

    out = tmp_path / "student"
    argv = small_run_argv(
        demo_assets,
        out,
        "--train_rows",
        "1000",
        "--eval_rows",
        "200",
        "--max_steps",
        "120",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "120",
        "--predict_with_generate",
        "true",
        "--per_device_eval_batch_size",
        "64",
    )
    summary = run(*parse(argv))
    in_training = [e["eval_bleu"] for e in summary["log_history"] if "eval_bleu" in e][-1]
    # in-training BLEU is on the dev rows (1800-1999 = the demo-en-fr-dev set), never on a test set
    assert (
        cli.main(
            [
                "eval",
                "--model",
                str(out),
                "--eval_set",
                "demo-en-fr-dev",
                "--output_dir",
                str(tmp_path / "ev"),
                "--no_progress",
            ]
        )
        == 0
    )
    harness = json.loads((tmp_path / "ev" / "results.json").read_text())["sets"]["demo-en-fr-dev"]["metrics"]["bleu"]
    assert 1 < harness < 99  # a partly trained student: a test that can fail
    assert in_training == pytest.approx(harness, abs=0.01)


# ----------------------------------------------------------------------------- 4. flags


def test_label_smoothing_applies_to_the_ce_term_only():
    from llmdiet.distill.losses import distillation_loss

    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3:] = -100
    plain = distillation_loss(s, t, labels, 0.5, 2.0)
    smooth = distillation_loss(s, t, labels, 0.5, 2.0, label_smoothing=0.1)
    mask = labels != -100
    logp = torch.log_softmax(s[mask].double(), -1)
    gold = logp.gather(-1, labels[mask][:, None]).squeeze(-1)
    ref_ce = (-(0.9 * gold + 0.1 * logp.mean(-1))).mean()  # independent: (1-e)*NLL + e*uniform CE
    assert smooth.ce.item() == pytest.approx(ref_ce.item(), rel=1e-5)
    assert smooth.kd.item() == pytest.approx(plain.kd.item(), rel=1e-6)
    assert smooth.loss.item() == pytest.approx(0.5 * 4 * plain.kd.item() + 0.5 * ref_ce.item(), rel=1e-5)


def test_demo_preset_without_generation_picks_the_best_checkpoint_by_loss(demo_assets, tmp_path):
    """Before: --predict_with_generate false with the demo preset crashed (metric_for_best_model 'eval_bleu')."""
    from llmdiet.distill.job import run

    argv = small_run_argv(
        demo_assets,
        tmp_path / "r",
        "--predict_with_generate",
        "false",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "6",
        "--load_best_model_at_end",
        "true",
        "--metric_for_best_model",
        "bleu",
    )
    args, data, training = parse(argv)
    summary = run(args, data, training)
    assert training.metric_for_best_model == "loss" and training.greater_is_better is False
    assert any("eval_loss" in e for e in summary["log_history"])


def test_fp16_and_generation_max_length_are_refused(demo_assets, tmp_path):
    from llmdiet.distill.job import check_training_arguments

    _, _, training = parse(small_run_argv(demo_assets, tmp_path / "r", "--generation_max_length", "32"))
    with pytest.raises(ConfigError, match="--eval_max_new_tokens"):
        check_training_arguments(training)


# ----------------------------------------------------------------------------- 6. a gradient test that sees scale


def test_accumulated_sgd_step_equals_the_full_batch_step_and_sees_a_half_scaled_loss(
    demo_assets, tmp_path, monkeypatch
):
    """Plain SGD, no clipping: the update is lr * gradient, so a loss off by any factor changes the weights.
    (The earlier test used AdamW with clipping, which a half-scaled loss passes.)"""
    from safetensors.torch import load_file

    import llmdiet.distill.losses as trainer_module
    from llmdiet.distill.job import run

    common = [
        "--max_steps",
        "2",
        "--optim",
        "sgd",
        "--max_grad_norm",
        "0",
        "--learning_rate",
        "0.5",
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--weight_decay",
        "0",
    ]
    initial = load_file(demo_assets.student / "model.safetensors")

    def train(name, *extra):
        run(*parse(small_run_argv(demo_assets, tmp_path / name, *common, *extra)))
        return load_file(tmp_path / name / "model.safetensors")

    full = train("full", "--per_device_train_batch_size", "16")
    accum = train("accum", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2")
    for k in full:
        torch.testing.assert_close(full[k], accum[k], rtol=1e-4, atol=1e-6, msg=f"weight {k} differs")
    moved = max((full[k] - initial[k]).abs().max().item() for k in full)
    assert moved > 1e-3  # the steps did move the weights

    original = trainer_module.distillation_loss

    def half(*args, **kwargs):
        parts = original(*args, **kwargs)
        parts.loss = parts.loss / 2
        return parts

    monkeypatch.setattr(trainer_module, "distillation_loss", half)
    halved = train("half", "--per_device_train_batch_size", "16")
    worst = max((halved[k] - full[k]).abs().max().item() for k in full)
    assert worst > 1e-4, "a half-scaled loss went unnoticed"


def test_one_process_with_several_gpus_is_refused():
    """nn.DataParallel (one process, several GPUs) crashed: num_items_in_batch had one entry per GPU."""
    from types import SimpleNamespace

    from llmdiet.distill.job import check_training_arguments

    args = SimpleNamespace(
        fp16=False, n_gpu=2, generation_max_length=None, predict_with_generate=False, metric_for_best_model=None
    )
    with pytest.raises(ConfigError, match="accelerate launch --multi_gpu"):
        check_training_arguments(args)
    with pytest.raises(ConfigError, match="--fp16 is refused"):
        check_training_arguments(SimpleNamespace(**{**vars(args), "n_gpu": 1, "fp16": True}))
