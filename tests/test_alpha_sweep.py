"""The alpha sweep on the demo: one student per alpha, each evaluated, compared; finished runs are skipped."""

import json

from llmdiet.study.alpha_sweep import SweepArguments, run_sweep
from llmdiet.distill.job import DataArguments, DistillationArguments, demo_preset
from transformers import Seq2SeqTrainingArguments


def test_alpha_sweep_trains_evaluates_and_compares(demo_assets, tmp_path):
    preset = demo_preset()
    dist = DistillationArguments(teacher_model=str(demo_assets.teacher), student_model=str(demo_assets.student))
    data = DataArguments(data_files=preset["data_files"], train_rows=64, eval_rows=0, max_source_length=64,
                         max_target_length=64)
    training = Seq2SeqTrainingArguments(output_dir="unused", max_steps=3, per_device_train_batch_size=16,
                                        learning_rate=3e-3, report_to="none", save_strategy="no", disable_tqdm=True)
    sweep = SweepArguments(alphas=[0.0, 1.0], eval_sets=["demo-en-fr"], eval_limit=16, sweep_dir=str(tmp_path),
                           eval_teacher=True)
    dirs = run_sweep(sweep, dist, data, training)
    assert [d.split("/")[-1] for d in dirs] == ["eval-alpha-0", "eval-alpha-1", "eval-teacher"]
    for alpha in ("0", "1"):
        log = json.loads((tmp_path / f"alpha-{alpha}" / "training_log.json").read_text())
        assert log["distillation"]["alpha"] == float(alpha) and log["global_step"] == 3
        results = json.loads((tmp_path / f"eval-alpha-{alpha}" / "results.json").read_text())
        assert results["sets"]["demo-en-fr"]["metrics"]["bleu"] >= 0
    table = (tmp_path / "compare.md").read_text()
    assert "student alpha=0" in table and "student alpha=1" in table and "teacher" in table
    assert (tmp_path / "bleu_vs_size.png").exists()
    # A re-run skips finished trainings (the saved students are untouched).
    stamp = (tmp_path / "alpha-0" / "model.safetensors").stat().st_mtime_ns
    run_sweep(sweep, dist, data, training)
    assert (tmp_path / "alpha-0" / "model.safetensors").stat().st_mtime_ns == stamp
