"""Every user mistake ends in one line naming the flag/file and the fix, exit code 2, before anything heavy runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmdiet import cli

CHECK_NO_TORCH = """
import sys
from llmdiet import cli
rc = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
sys.exit(rc)
"""

BAD_FLAGS = [
    (["distill", "--alpha", "2"], "--alpha must be <= 1.0, got 2.0"),
    (["distill", "--sequence_kd", "bogus"], "invalid choice: 'bogus' (choose from 'off', 'replace', 'mix')"),
    (["distill", "--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be >= 1, got 0"),
    (["distill", "--fp16", "true"], "--fp16 is refused: T5 activations overflow"),
    (["distill", "--preset", "demo", "--temperature", "0"], "--temperature must be > 0.0"),
    (
        ["eval", "--model", "m", "--eval-set", "s", "--out", "o", "--batch-size", "0"],
        "--batch_size must be >= 1, got 0",
    ),
    (
        ["eval", "--model", "m", "--eval-set", "s", "--out", "o", "--max_source_length", "1"],
        "--max_source_length must be >= 2",
    ),
    (["quantize", "--model", "m", "--out", "o", "--method", "int4-magic"], "unknown --method 'int4-magic'"),
    (
        ["quantize", "--model", "m", "--out", "o", "--method", "dynamic-int8", "--calibration_count", "0"],
        "--calibration_count must be >= 1",
    ),
    (["alpha-sweep", "--alphas", "0", "1.5"], "--alphas must be <= 1.0, got 1.5"),
    (["bit-sweep", "--bits", "9"], "--bits must be <= 8, got 9"),
    # before: 6.7 s (an unknown eval flag waited for transformers) and ~3 s (a study config error)
    (["eval", "--model", "m", "--eval-set", "s", "--out", "o", "--bogus", "1"], "unrecognized arguments: --bogus"),
    (["study", "--config", "BAD_STUDY", "--list"], "unknown key(s) ['colour']"),
    (["study", "--config", "BAD_STUDY", "--lst"], "unrecognized arguments: --lst"),
]


@pytest.mark.parametrize("argv,message", BAD_FLAGS, ids=[" ".join(a[:3]) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_exit_2_before_torch_loads(argv, message, tmp_path):
    bad_study = tmp_path / "bad.yaml"
    bad_study.write_text("study_dir: x\nteacher: llmdiet-demo:teacher\nstudent: llmdiet-demo:student\ncolour: blue\n")
    argv = [str(bad_study) if a == "BAD_STUDY" else a for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_NO_TORCH, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert message in err and len(err.splitlines()) == 1, err
    assert "HEAVY:" in proc.stdout and proc.stdout.strip().endswith("HEAVY:"), (
        proc.stdout
    )  # neither torch nor transformers


def test_output_dir_that_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert cli.main(["distill", "--preset", "demo", "--output_dir", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "--output_dir" in err and "exists and is not a directory" in err and a_file.read_text() == "mine"


def test_distill_refuses_a_directory_with_checkpoints(tmp_path, capsys):
    """Before: re-running without --resume_from_checkpoint silently restarted at step 0 and rotated the old
    checkpoints away."""
    out = tmp_path / "run"
    (out / "checkpoint-20").mkdir(parents=True)
    (out / "checkpoint-20" / "trainer_state.json").write_text("{}")
    assert cli.main(["distill", "--preset", "demo", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds checkpoint-20" in err and "--resume_from_checkpoint latest" in err
    assert "--overwrite_output_dir true" in err and len(err.splitlines()) == 1
    assert (out / "checkpoint-20" / "trainer_state.json").exists()


def test_alpha_sweep_checks_eval_sets_before_training(tmp_path, capsys, monkeypatch):
    """Before: an unknown eval set was noticed only after the first student had trained."""
    import llmdiet.study.alpha_sweep as sweep

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the eval sets were checked")

    monkeypatch.setattr(sweep, "run", no_training)
    rc = cli.main(
        [
            "alpha-sweep",
            "--preset",
            "demo",
            "--eval_sets",
            "demo-en-fr",
            "no-such-set",
            "--sweep_dir",
            str(tmp_path / "sweep"),
        ]
    )
    assert rc == 2 and "unknown eval set 'no-such-set'" in capsys.readouterr().err


def test_verbose_flag_and_env_bring_library_logs_back(monkeypatch):
    import logging

    cli.configure_logging(verbose=False)
    assert logging.getLogger().level == logging.WARNING and logging.getLogger("llmdiet").level == logging.INFO
    assert logging.getLogger("onnxruntime").level == logging.WARNING
    cli.configure_logging(verbose=True)
    assert logging.getLogger().level == logging.INFO
    monkeypatch.setenv("LLMDIET_LOG_LEVEL", "DEBUG")
    cli.configure_logging(verbose=False)
    assert logging.getLogger().level == logging.DEBUG
    monkeypatch.delenv("LLMDIET_LOG_LEVEL")
    cli.configure_logging(verbose=False)


@pytest.mark.parametrize(
    "raised, expected, code",
    [
        (KeyboardInterrupt(), "interrupted; what was finished is kept", 130),
        (
            OSError(28, "No space left on device", "/data/run/results.json"),
            "/data/run/results.json: No space left on device; the disk is full",
            2,
        ),
        (OSError(30, "Read-only file system", "/ro/study/STUDY.md"), "the file system is read-only", 2),
        (RuntimeError("SafetensorError: IoError: No space left on device (os error 28)"), "the disk is full", 2),
    ],
)
def test_interrupts_and_disk_errors_are_one_line_with_how_to_resume(monkeypatch, capsys, raised, expected, code):
    """Ctrl-C printed a KeyboardInterrupt traceback; disk full and read-only directories OSError/SafetensorError
    tracebacks."""
    import types

    from llmdiet import cli

    def boom(argv):
        raise raised

    monkeypatch.setitem(sys.modules, "llmdiet_fake_cmd", types.SimpleNamespace(main=boom))
    monkeypatch.setitem(cli.SUBCOMMANDS, "eval", ("llmdiet_fake_cmd", "fake"))
    assert cli.main(["eval"]) == code
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err
