"""Named sets of distillation defaults: ``reference`` (the flan-T5-large -> flan-T5-small study) and ``demo``
(tiny local models, offline, minutes on a laptop). Precedence: dataclass defaults < preset < YAML < flags."""

from __future__ import annotations

from llmdiet.compat import warmup_option
from llmdiet.demo import DEMO_MODEL_PREFIX


def reference_defaults() -> dict:
    """The study's settings that differ from the Trainer's own defaults."""
    return {
        "learning_rate": 1e-5,
        "optim": "adamw_torch",
        "output_dir": "runs/distill",
        "report_to": "none",
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "num_train_epochs": 3,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 50,
        "predict_with_generate": False,
    }


def demo_preset() -> dict:
    from llmdiet.demo import DEMO_DEV_ROWS, DEMO_EN_FR, DEMO_TRAIN_ROWS

    return {
        **reference_defaults(),
        "teacher_model": DEMO_MODEL_PREFIX + "teacher",
        "student_model": DEMO_MODEL_PREFIX + "student",
        "data_files": str(DEMO_EN_FR),
        "source_column": "en",
        "target_column": "fr",
        "train_rows": DEMO_TRAIN_ROWS,
        "eval_start": DEMO_DEV_ROWS[0],
        "eval_rows": DEMO_DEV_ROWS[1] - DEMO_DEV_ROWS[0],
        "max_source_length": 64,
        "max_target_length": 64,
        "output_dir": "runs/distill-demo",
        "learning_rate": 3e-3,
        "num_train_epochs": 6,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "logging_steps": 10,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "seed": 0,
        **warmup_option(0.05),  # warmup_ratio (4.x) or warmup_steps (5.x)
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        "predict_with_generate": True,
        "metric_for_best_model": "bleu",
        "load_best_model_at_end": True,
    }


PRESETS = {"reference": reference_defaults, "demo": demo_preset}
