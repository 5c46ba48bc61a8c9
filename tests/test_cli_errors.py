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
        ["eval", "--model", "m", "--eval_set", "s", "--output_dir", "o", "--batch-size", "0"],
        "--batch_size must be >= 1, got 0",
    ),
    (
        ["eval", "--model", "m", "--eval_set", "s", "--output_dir", "o", "--max_source_length", "1"],
        "--max_source_length must be >= 2",
    ),
    (["quantize", "--model", "m", "--output_dir", "o", "--method", "int4-magic"], "unknown --method 'int4-magic'"),
    (
        ["quantize", "--model", "m", "--output_dir", "o", "--method", "dynamic-int8", "--max_calibration_samples", "0"],
        "--max_calibration_samples must be >= 1",
    ),
    (["alpha-sweep", "--alphas", "0", "1.5"], "--alphas must be <= 1.0, got 1.5"),
    (["bit-sweep", "--bits", "9"], "--bits must be <= 8, got 9"),
    # before: 6.7 s (an unknown eval flag waited for transformers) and ~3 s (a study config error)
    (
        ["eval", "--model", "m", "--eval_set", "s", "--output_dir", "o", "--bogus", "1"],
        "unrecognized argument --bogus",
    ),
    (["study", "--config", "BAD_STUDY", "--list"], "unknown key(s) ['colour']"),
    # issue 31: a gkd flag at its default value with method kd trained; --alpha nan failed after 34 s of loading
    (["distill", "--preset", "demo", "--lmbda", "0.5"], "--lmbda belongs to --method gkd, not to --method kd"),
    (["distill", "--preset", "demo", "--alpha", "nan"], "--alpha must be a finite number, got nan"),
    (["distill", "--preset", "demo", "--replay_fraction", "1"], "--replay_fraction must be < 1"),
    (["distill", "--preset", "demo", "--test_overlap", "keep"], "--test_overlap must be 'refuse' or 'drop'"),
    (["study", "--config", "BAD_STUDY", "--lst"], "unrecognized argument --lst (did you mean --list?)"),
    # issue 29: every command refuses a misspelt flag before torch, naming the closest one (old spellings included)
    (["distill", "--alpah", "0.3"], "unrecognized argument --alpah (did you mean --alpha?)"),
    (["distill", "--per_device_train_batch_sise", "3"], "(did you mean --per_device_train_batch_size?)"),
    (["alpha-sweep", "--eval_limt", "3"], "unrecognized argument --eval_limt (did you mean --max_eval_samples?)"),
    (["quantize", "--outptu_dir", "x"], "unrecognized argument --outptu_dir (did you mean --output_dir?)"),
    (["compare", "--format", "csv", "--lables", "a"], "unrecognized argument --lables (did you mean --labels?)"),
    (["bit-sweep", "--bitz", "4"], "unrecognized argument --bitz (did you mean --bits?)"),
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
            "--eval_set",
            "demo-en-fr",
            "no-such-set",
            "--output_dir",
            str(tmp_path / "sweep"),
        ]
    )
    assert rc == 2 and "unknown eval set 'no-such-set'" in capsys.readouterr().err


def test_no_third_party_progress_bars_or_sharding_notices_by_default():
    """The study printed raw "Writing model shards" bars (21 of 104 lines); the API printed transformers'
    tensor-parallel notice ("The following layers were not sharded")."""
    import logging

    from datasets.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    import llmdiet  # noqa: F401 - its import quiets the sharding notices

    assert logging.getLogger("transformers.distributed").level >= logging.ERROR
    cli.configure_logging(verbose=False)
    assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()


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


def test_study_with_a_misspelt_distill_key_or_a_missing_set_file_is_refused_before_any_job(tmp_path, capsys):
    """Before: with an empty cache, ``llmdiet study --list`` built the demo teacher for minutes before reading the
    distill section. The demo models ship now, and the plan checks every section before a job runs."""
    import time

    base = "study_dir: {d}\nteacher: llmdiet-demo:teacher\nstudent: llmdiet-demo:student\nalphas: [0.5]\n"
    cases = {
        "distill:\n  preset: demo\n  learnin_rate: 0.001\n": "unknown option(s) ['learnin_rate']",
        "distill:\n  preset: demo\n  num_train_epochs: true\n": "num_train_epochs",
        "distill:\n  preset: demo\neval:\n  in_domain: [missing-set.jsonl]\n": "missing-set.jsonl",
    }
    for i, (section, message) in enumerate(cases.items()):
        config = tmp_path / f"s{i}.yaml"
        config.write_text(base.format(d=tmp_path / f"run{i}") + section)
        start = time.perf_counter()
        assert cli.main(["study", "--config", str(config), "--list"]) == 2, section
        err = capsys.readouterr().err.strip().splitlines()  # (a note on methods left out may come first)
        assert message in err[-1] and err[-1].startswith("llmdiet study: error:"), err
        assert time.perf_counter() - start < 60  # no model is built or trained (before: minutes)
        assert not (tmp_path / f"run{i}" / "jobs").exists()


def test_quantize_names_an_already_quantized_input(tmp_path, capsys):
    """Before: "its config.json has no known model_type" for a CTranslate2 artifact."""
    import json

    artifact = tmp_path / "teacher-ct2"
    artifact.mkdir()
    (artifact / "config.json").write_text("{}")  # CTranslate2's own config, not a transformers one
    (artifact / "llmdiet_artifact.json").write_text(json.dumps({"method": "ct2-int8", "source_model": "runs/t"}))
    rc = cli.main(
        ["quantize", "--model", str(artifact), "--method", "dynamic-int8", "--output_dir", str(tmp_path / "q")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "already a quantized artifact (ct2-int8 of runs/t)" in err and len(err.splitlines()) == 1


def test_header_only_tsv_and_local_data_dev_rows(tmp_path):
    from llmdiet.data import DataError, read_parallel_file
    from llmdiet.distill.settings import DataArguments

    header_only = tmp_path / "pairs.tsv"
    header_only.write_text("en\tfr\n")
    with pytest.raises(DataError, match="a header row and no data rows"):
        read_parallel_file(header_only, "en", "fr")
    # a local file's dev rows follow its training rows (before: PGV's 12,000, refused for a 602-row file)
    local = DataArguments(data_files=str(header_only), train_rows=550, eval_rows=50)
    assert local.dev_start == 550
    assert DataArguments().dev_start == 12_000  # the reference dataset keeps its published split
    assert DataArguments(data_files=str(header_only), train_rows=550, eval_rows=50, eval_start=560).dev_start == 560


def test_python_api_one_type_rule_before_anything_loads(tmp_path):
    """Before: distill(alpha="0.5") coerced, evaluate(limit="10") refused, evaluate(model, 5, out) raised a raw
    TypeError from inside, load(None) failed after 23.8 s with a hub connection error."""
    import time

    import llmdiet
    from llmdiet.config import ArgumentTypeError

    start = time.perf_counter()
    with pytest.raises(ArgumentTypeError, match=r"llmdiet.distill\(\): alpha must be float, got '0.5'"):
        llmdiet.distill(preset="demo", output_dir=str(tmp_path / "d"), alpha="0.5")
    with pytest.raises(ArgumentTypeError, match=r"evaluate\(\): max_eval_samples must be int, got '10'"):
        llmdiet.evaluate("llmdiet-demo:teacher", ["demo-en-fr"], str(tmp_path / "e"), max_eval_samples="10")
    with pytest.warns(FutureWarning, match=r"limit= is deprecated .* use max_eval_samples="):
        with pytest.raises(ArgumentTypeError, match=r"evaluate\(\): max_eval_samples must be int, got '10'"):
            llmdiet.evaluate("llmdiet-demo:teacher", ["demo-en-fr"], str(tmp_path / "e"), limit="10")
    with pytest.raises(ArgumentTypeError, match=r"evaluate\(\): eval_set must be a set name or file"):
        llmdiet.evaluate("llmdiet-demo:teacher", 5, str(tmp_path / "e"))
    with pytest.raises(ArgumentTypeError, match=r"load\(\): path_or_hub_id must be a path or hub id"):
        llmdiet.load(None)
    with pytest.raises(ArgumentTypeError, match=r"llmdiet.quantize\(\): max_calibration_samples must be int"):
        llmdiet.quantize("llmdiet-demo:teacher", "dynamic-int8", str(tmp_path / "q"), max_calibration_samples="8")
    assert isinstance(ArgumentTypeError("x"), TypeError)
    assert time.perf_counter() - start < 30  # nothing was loaded
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_a_missing_quantize_method_warning_is_given_once(caplog):
    import logging

    from llmdiet.study import plan as jobs

    class Cfg:
        class quantize:  # noqa: N801 - the config's section
            methods = ["dynamic-int8", "no-such-lib-method"]

    from dataclasses import replace

    from llmdiet.quantize import METHODS

    jobs._LEFT_OUT_TOLD.clear()
    METHODS["no-such-lib-method"] = replace(
        METHODS["dynamic-int8"], name="no-such-lib-method", libraries=("no_such_module_xyz",)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="llmdiet"):
            for _ in range(4):  # the study builds its plan several times per run
                assert jobs.usable_quantize_methods(Cfg) == ["dynamic-int8"]
    finally:
        del METHODS["no-such-lib-method"]
    assert sum("left out" in r.message for r in caplog.records) == 1


def test_the_accelerate_recipe_ends_with_llmdiets_line(tmp_path):
    """Before: llmdiet's line, then accelerate's CalledProcessError traceback; with accelerate's -q (README) the
    line is all there is."""
    import os
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "distill.py"
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "-q", "--num_processes", "1", "--cpu", str(recipe)]
        + ["--alpha", "1.5"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "ACCELERATE_USE_CPU": "true"},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1] == "llmdiet distill: error: --alpha must be <= 1.0, got 1.5", lines[-3:]


def test_version_module_entry_and_usage_lines_name_llmdiet(tmp_path):
    """Before: no `llmdiet --version`, no `python -m llmdiet`; distill, alpha-sweep and bit-sweep printed
    `usage: recipes/distill.py ...`."""
    import llmdiet

    version = subprocess.run([sys.executable, "-m", "llmdiet", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"llmdiet {llmdiet.__version__}"
    for command in ("distill", "alpha-sweep", "bit-sweep"):
        proc = subprocess.run(
            [sys.executable, "-m", "llmdiet", command, "--help"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: llmdiet {command} "), proc.stdout[:200]


def test_study_list_json_is_the_plan_for_other_tools(tmp_path, capsys):
    import json

    config = tmp_path / "s.yaml"
    config.write_text(
        f"study_dir: {tmp_path / 'run'}\nteacher: llmdiet-demo:teacher\nstudent: llmdiet-demo:student\n"
        "alphas: [0.5]\ndistill: {preset: demo}\nquantize: {methods: [dynamic-int8], students: []}\n"
        "bit_sweep: {models: []}\neval: {in_domain: [demo-en-fr], out_of_domain: [], dev: demo-en-fr-dev}\n"
    )
    assert cli.main(["study", "--config", str(config), "--list", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    jobs = {j["name"]: j for j in plan["jobs"]}
    assert jobs["train/alpha-0.5"]["deps"] == [] and jobs["train/alpha-0.5"]["state"] == "pending"
    assert "train/alpha-0.5" in jobs["eval/alpha-0.5"]["deps"] and len(jobs["eval/alpha-0.5"]["fingerprint"]) >= 16
    assert jobs["quantize/teacher+dynamic-int8"]["kind"] == "quantize"
    assert cli.main(["study", "--config", str(config), "--json"]) == 2
    assert "--json goes with --list" in capsys.readouterr().err
