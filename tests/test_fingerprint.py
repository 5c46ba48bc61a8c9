"""Model identity covers every file that changes a model's outputs (issue: eval resumed after a changed
generation_config.json and reported the old BLEU; Marian's source.spm/target.spm were not hashed)."""

from __future__ import annotations

import json
import shutil

import pytest

from llmdiet.config import ConfigError
from llmdiet.fingerprint import identity_files, model_identity


def _model_dir(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "marian"}')
    (root / "model.safetensors").write_bytes(b"w" * 16)
    for name in ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json"):
        (root / name).write_bytes(name.encode())
    return root


def test_every_output_relevant_file_is_in_the_identity(tmp_path):
    root = _model_dir(tmp_path)
    base = model_identity(str(root))
    (root / "generation_config.json").write_text('{"forced_bos_token_id": 5}')
    with_gen = model_identity(str(root))
    assert with_gen["generation"] is not None and with_gen["generation"] != base["generation"]
    (root / "generation_config.json").write_text('{"forced_bos_token_id": 6}')
    assert model_identity(str(root))["generation"] != with_gen["generation"]
    before = model_identity(str(root))
    (root / "target.spm").write_bytes(b"another target vocabulary")
    after = model_identity(str(root))
    assert after["tokenizer"] != before["tokenizer"] and after["weights"] == before["weights"]


def test_logs_cards_plots_and_checkpoints_are_not(tmp_path):
    root = _model_dir(tmp_path)
    base = model_identity(str(root))
    (root / "README.md").write_text("card")
    (root / "training_log.json").write_text("{}")
    (root / "loss_curve.png").write_bytes(b"png")
    (root / "llmdiet_artifact.json").write_text('{"provenance": {"date": "today"}}')
    (root / ".llmdiet.lock").write_text("pid")
    (root / "checkpoint-4").mkdir()
    (root / "checkpoint-4" / "model.safetensors").write_bytes(b"old")
    (root / "runs").mkdir()
    (root / "runs" / "events.out.tfevents").write_bytes(b"tb")
    assert model_identity(str(root)) == base
    assert {p.name for p in identity_files(root)["tokenizer"]} == {
        "source.spm",
        "target.spm",
        "vocab.json",
        "tokenizer_config.json",
    }


def test_eval_refuses_to_resume_after_the_generation_config_changed(demo_assets, tmp_path):
    from llmdiet.evaluation.harness import main

    model = tmp_path / "teacher"
    shutil.copytree(demo_assets.teacher, model)
    out = tmp_path / "eval"
    argv = [
        "--model",
        str(model),
        "--eval_set",
        "demo-en-fr",
        "--max_eval_samples",
        "4",
        "--output_dir",
        str(out),
        "--no_progress",
    ]
    assert main(argv) == 0
    gen = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**gen, "forced_bos_token_id": 7}))
    with pytest.raises(ConfigError, match=r"model_fingerprint\.generation"):
        main(argv)
