"""On-policy GKD for encoder-decoder models: targets, masking, the lmbda ends, and training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distill import parse, small_run_argv
from transformers import AutoModelForSeq2SeqLM
from transformers.training_args import OptimizerNames

from llmdiet.distill.methods.gkd import generated_to_labels

REPO = Path(__file__).resolve().parents[1]


def test_generated_sequences_become_labels_masked_after_the_first_eos():
    eos, pad = 1, 0
    sequences = torch.tensor(
        [
            [0, 5, 6, 1, 0, 0],  # start, 5, 6, EOS, padding
            [0, 7, 1, 9, 1, 3],  # tokens after the first EOS carry no loss
            [0, 4, 4, 4, 4, 4],
        ]
    )  # never finished: every token is a target
    assert generated_to_labels(sequences, eos, pad).tolist() == [
        [5, 6, 1, -100, -100],
        [7, 1, -100, -100, -100],
        [4, 4, 4, 4, 4],
    ]


def _trainer(demo_assets, tmp_path, lmbda, seed=0, batch_size=8, accumulation=1):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    from llmdiet.compat import t5_as_in_4x
    from llmdiet.data import read_parallel_file, tokenize_rows
    from llmdiet.demo import DEMO_EN_FR
    from llmdiet.distill.trainer import DistillationTrainer

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    # as llmdiet loads them: on transformers 5, eager attention (SDPA's rounding depends on the batch's padding,
    # so 16 rows at once and 2 x 8 would sample different targets)
    teacher = t5_as_in_4x(AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher))
    student = t5_as_in_4x(AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student))
    ds, _ = tokenize_rows(read_parallel_file(DEMO_EN_FR, "en", "fr")[:16], tok, "translate English to French: ", 64, 64)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=batch_size,  # given at construction: 5.x's Trainer keeps the batch size it saw
        gradient_accumulation_steps=accumulation,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
        learning_rate=1e-3,
    )
    from llmdiet.distill.methods.gkd import GKDConfig

    config = GKDConfig(
        divergence="jsd",
        jsd_beta=0.5,
        skew_alpha=0.1,
        lmbda=lmbda,
        gkd_temperature=1.0,
        gkd_max_new_tokens=12,
        gkd_seq_kd=False,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        alpha=0.5,
        temperature=1.0,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForSeq2Seq(tok, model=student),
        processing_class=tok,
        method="gkd",
        method_config=config,
    )
    return trainer, student, teacher, tok


def test_lmbda_one_trains_on_the_students_own_samples(demo_assets, tmp_path):
    trainer, student, teacher, tok = _trainer(demo_assets, tmp_path, lmbda=1.0)
    generated, seen_by_student, seen_by_teacher = [], [], []
    original_generate = student.generate

    def recording_generate(*args, **kwargs):
        out = original_generate(*args, **kwargs)
        generated.append(out)
        return out

    student.generate = recording_generate
    student.decoder.register_forward_pre_hook(
        lambda m, a, kw: seen_by_student.append(kw["input_ids"].clone()), with_kwargs=True
    )
    teacher.decoder.register_forward_pre_hook(
        lambda m, a, kw: seen_by_teacher.append(kw["input_ids"].clone()), with_kwargs=True
    )
    trainer.train()
    assert len(generated) == 2 and trainer.on_policy_batches == 2
    training_inputs = [x for x in seen_by_student if x.shape[1] > 1]  # generate()'s own steps have length 1
    assert len(training_inputs) == 2 and len(seen_by_teacher) == 2
    for sequences, student_in, teacher_in in zip(generated, training_inputs, seen_by_teacher):
        labels = generated_to_labels(sequences, tok.eos_token_id, tok.pad_token_id)
        expected = student._shift_right(labels.masked_fill(labels == -100, tok.pad_token_id))
        assert torch.equal(student_in, expected) and torch.equal(teacher_in, expected)


def test_lmbda_zero_is_exactly_kd_with_the_same_divergence(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    weights = {}
    for name, extra in (("gkd", ["--method", "gkd", "--lmbda", "0"]), ("kd", ["--method", "kd"])):
        run(*parse(small_run_argv(demo_assets, tmp_path / name, "--max_steps", "3", "--divergence", "jsd", *extra)))
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    for k in weights["kd"]:
        assert torch.equal(weights["kd"][k], weights["gkd"][k]), k


def test_gkd_trains_the_demo_student(demo_assets, tmp_path):
    from llmdiet.distill.job import run

    summary = run(
        *parse(
            small_run_argv(
                demo_assets,
                tmp_path / "gkd",
                "--method",
                "gkd",
                "--lmbda",
                "0.5",
                "--divergence",
                "reverse_kl",
                "--max_steps",
                "12",
                "--gkd_max_new_tokens",
                "16",
            )
        )
    )
    assert 0 < summary["on_policy_batches"] < 12
    kd = [e["kd"] for e in summary["log_history"] if "kd" in e]
    assert kd[-1] < kd[0], kd


def test_gkd_refuses_the_teacher_cache():
    from llmdiet.config import ConfigError
    from llmdiet.distill.job import DistillationArguments

    with pytest.raises(ConfigError, match="on-policy targets are sampled anew"):
        DistillationArguments(method="gkd", teacher_cache="runs/cache")


@pytest.mark.slow
def test_gkd_under_accelerate_launch(demo_assets, tmp_path):
    out = tmp_path / "launched"
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--cpu",
        str(REPO / "recipes" / "distill.py"),
        *small_run_argv(
            demo_assets, out, "--method", "gkd", "--lmbda", "1", "--max_steps", "4", "--gkd_max_new_tokens", "8"
        ),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.safetensors").exists()


def _gkd_step(demo_assets, tmp_path, batch_size, accumulation, divergence_temperature=1.0):
    trainer, student, _, _ = _trainer(
        demo_assets, tmp_path, lmbda=1.0, batch_size=batch_size, accumulation=accumulation
    )
    trainer.args.max_steps = 1
    trainer.args.optim = OptimizerNames.SGD  # Adam's first step hides a scaled gradient; SGD shows it
    trainer.method_config.gkd_temperature = 1e-4  # sampling ~ greedy
    trainer.method_config.gkd_divergence_temperature = divergence_temperature
    trainer.train()
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


def test_on_policy_gradient_accumulation_equals_the_full_batch(demo_assets, tmp_path):
    """Batch 16 at once == 2 accumulated micro-batches of 8 on the students' own samples: the loss is normalised
    by the window's count of sampled tokens (before: per micro-batch, 2.06x the full-batch gradient)."""
    full = _gkd_step(demo_assets, tmp_path / "full", 16, 1)
    accumulated = _gkd_step(demo_assets, tmp_path / "accum", 8, 2)
    start = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student).state_dict()
    moved = sum((full[k] - start[k]).abs().sum().item() for k in full)
    assert moved > 0
    for k in full:
        torch.testing.assert_close(full[k], accumulated[k], rtol=1e-4, atol=1e-6, msg=f"weight {k} differs")


def test_on_policy_loss_is_the_papers_objective_by_default(demo_assets, tmp_path):
    """T = 1 and no T^2 on sampled targets by default; --gkd_divergence_temperature 2 softens and scales by 4."""
    from llmdiet.distill.job import DistillationArguments

    assert DistillationArguments(method="gkd").gkd_divergence_temperature == 1.0
    trainer, student, teacher, tok = _trainer(demo_assets, tmp_path, lmbda=1.0)
    trainer.temperature = 2.0  # kd's --temperature: never used on sampled targets
    captured = []
    import llmdiet.distill.losses as module

    original = module.distillation_loss

    def spy(*args, **kwargs):
        captured.append(args[4] if len(args) > 4 else kwargs.get("temperature"))
        return original(*args, **kwargs)

    module.distillation_loss = spy
    try:
        trainer.train()
    finally:
        module.distillation_loss = original
    assert captured == [1.0, 1.0]  # two on-policy steps, both at T = 1, not kd's 2
