"""Settings as objects: the Python API and the study build the dataclasses from values (YAML text included), checked
by the same dataclasses as the command line."""

from __future__ import annotations

import pytest

from llmdiet.config import ConfigError
from llmdiet.distill.job import settings_from_options


def test_yaml_text_numbers_become_numbers_and_bad_values_name_the_flag(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1e-5\nnum_train_epochs: 2\nalpha: 0.25\n")  # PyYAML reads 1e-5 as text
    args, data, training = settings_from_options("demo", str(config), output_dir=str(tmp_path / "out"))
    assert training.learning_rate == 1e-5 and training.num_train_epochs == 2 and args.alpha == 0.25
    assert data.train_rows == 1000 and args.teacher_model == "llmdiet-demo:teacher"  # the preset under the YAML
    with pytest.raises(ConfigError, match="--learning_rate: expected a number, got 'fast'"):
        settings_from_options("demo", None, learning_rate="fast", output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="--per_device_train_batch_size must be >= 1, got 0"):
        settings_from_options("demo", None, per_device_train_batch_size=0, output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['alhpa'\]"):
        settings_from_options("demo", None, alhpa=0.5, output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="--lmbda belongs to --method gkd"):
        settings_from_options("demo", None, lmbda=0.3, output_dir=str(tmp_path / "out"))
