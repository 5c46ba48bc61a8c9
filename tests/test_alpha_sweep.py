"""The alpha sweep on the demo: one student per alpha, each evaluated, compared; finished runs are skipped."""

import json

from transformers import Seq2SeqTrainingArguments

from llmdiet.distill.job import DataArguments, DistillationArguments, demo_preset
from llmdiet.study.alpha_sweep import SweepArguments, run_sweep


def test_alpha_sweep_trains_evaluates_and_compares(demo_assets, tmp_path):
    preset = demo_preset()
    dist = DistillationArguments(teacher_model=str(demo_assets.teacher), student_model=str(demo_assets.student))
    data = DataArguments(
        data_files=preset["data_files"], train_rows=64, eval_rows=0, max_source_length=64, max_target_length=64
    )
    training = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    sweep = SweepArguments(alphas=[0.0, 1.0], eval_set=["demo-en-fr"], max_eval_samples=16, eval_teacher=True)
    dirs = run_sweep(sweep, dist, data, training)
    assert [d.split("/")[-1] for d in dirs] == ["eval-alpha-0", "eval-alpha-1", "eval-teacher"]
    for alpha in ("0", "1"):
        log = json.loads((tmp_path / f"alpha-{alpha}" / "training_log.json").read_text())
        assert log["distillation"]["alpha"] == float(alpha) and log["global_step"] == 3
        results = json.loads((tmp_path / f"eval-alpha-{alpha}" / "results.json").read_text())
        assert results["sets"]["demo-en-fr"]["metrics"]["bleu"] >= 0
    table = (tmp_path / "compare.md").read_text()
    assert "student alpha=0" in table and "student alpha=1" in table and "teacher" in table
    assert (tmp_path / "bleu_vs_size.png").exists() and (tmp_path / "bleu_vs_alpha.png").stat().st_size > 0
    # A re-run skips finished trainings (the saved students are untouched).
    stamp = (tmp_path / "alpha-0" / "model.safetensors").stat().st_mtime_ns
    run_sweep(sweep, dist, data, training)
    assert (tmp_path / "alpha-0" / "model.safetensors").stat().st_mtime_ns == stamp

    # Other settings for a finished alpha: refused, naming what changed (before: skipped by file existence).
    import pytest

    from llmdiet.config import ConfigError

    training.learning_rate = 1e-2
    with pytest.raises(ConfigError, match=r"changed: training\.learning_rate"):
        run_sweep(sweep, dist, data, training)


def test_alpha_sweep_shares_one_teacher_translation_file(demo_assets, tmp_path, monkeypatch):
    """Before: with sequence KD every alpha regenerated the teacher's translations in its own directory."""
    import llmdiet.evaluation.generation as generation

    calls = []

    real = generation.generate_all

    def counting(backend, sources, *args, **kwargs):
        calls.append(len(sources))
        return real(backend, sources, *args, **kwargs)

    monkeypatch.setattr(generation, "generate_all", counting)
    preset = demo_preset()
    dist = DistillationArguments(
        teacher_model=str(demo_assets.teacher),
        student_model=str(demo_assets.student),
        sequence_kd="replace",
        sequence_kd_beams=1,
    )
    data = DataArguments(
        data_files=preset["data_files"], train_rows=24, eval_rows=0, max_source_length=64, max_target_length=32
    )
    training = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=8,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    sweep = SweepArguments(alphas=[0.0, 0.5], eval_set=["demo-en-fr"], max_eval_samples=4, eval_teacher=False)
    run_sweep(sweep, dist, data, training)
    assert (tmp_path / "shared" / "teacher_translations.jsonl").exists()
    assert calls.count(24) == 1  # the 24 training sources were translated by the teacher once, for both alphas
    for alpha in ("0", "0.5"):
        log = json.loads((tmp_path / f"alpha-{alpha}" / "training_log.json").read_text())
        assert log["resolved_models"]["teacher"] is not None  # the teacher produced the data, also at alpha 0


def test_the_sweep_keys_students_by_the_studys_rule(demo_assets):
    """Before: an allow-list of 14 settings, so e.g. a changed load_best_model_at_end reused the old student."""
    from llmdiet.study.alpha_sweep import student_settings

    dist = DistillationArguments(teacher_model=str(demo_assets.teacher), student_model=str(demo_assets.student))
    data = DataArguments(data_files=demo_preset()["data_files"], train_rows=64, eval_rows=0)

    def key(**training):
        training = {"output_dir": "x", "report_to": "none", **training}
        return student_settings(0.5, dist, data, Seq2SeqTrainingArguments(**training))

    base = key()
    assert key(load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps") != base
    assert key(adam_beta2=0.98) != base and key(seed=1) != base
    assert key(logging_steps=7, output_dir="elsewhere") == base  # settings that cannot change the weights
