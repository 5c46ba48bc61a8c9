"""One flag vocabulary for every command (issue 29): each command's --help, parsed, uses the one name per concept;
old spellings still work, hidden from --help, with a one-line note; the README's table lists them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmdiet import cli
from llmdiet.config import DEPRECATED_FLAGS

REPO = Path(__file__).resolve().parent.parent

# concept -> the commands that have it (each under its one name)
VOCABULARY = {
    "--output_dir": ["distill", "eval", "compare", "quantize", "prune", "alpha-sweep", "bit-sweep", "study"],
    "--source_prefix": ["distill", "eval", "quantize", "prune", "alpha-sweep", "bit-sweep"],
    "--eval_set": ["eval", "alpha-sweep", "bit-sweep"],
    "--max_eval_samples": ["eval", "alpha-sweep", "bit-sweep"],
    "--max_calibration_samples": ["quantize", "prune", "bit-sweep"],
    "--overwrite_output_dir": ["distill", "quantize", "prune", "alpha-sweep"],
    "--device": ["distill", "eval", "quantize", "alpha-sweep"],
    "--source_column": ["distill", "eval", "quantize", "prune", "alpha-sweep", "bit-sweep"],
    "--target_column": ["distill", "eval", "prune", "alpha-sweep", "bit-sweep"],
}


def help_flags(command: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "llmdiet", command, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: llmdiet {command}"), out.stdout[:80]
    return set(re.findall(r"(?m)^\s+(--[a-z][a-z0-9_]*)", out.stdout))


@pytest.fixture(scope="module")
def helps() -> dict[str, set[str]]:
    return {command: help_flags(command) for command in cli.SUBCOMMANDS}


def test_every_command_uses_the_one_name_per_concept(helps):
    for flag, commands in VOCABULARY.items():
        for command in commands:
            assert flag in helps[command], f"llmdiet {command} --help lacks {flag}"
    old = {f"--{name}" for name in DEPRECATED_FLAGS}
    for command, flags in helps.items():
        assert not flags & old, f"llmdiet {command} --help still lists {sorted(flags & old)}"
        assert not [f for f in flags if "-" in f[2:]], "dashed spellings are accepted but not listed"


def test_old_spellings_work_with_one_note_each(capsys):
    from llmdiet import config
    from llmdiet.evaluation.harness import parse_args
    from llmdiet.quantize.job import QuantizeArguments

    config._NOTED.clear()
    args = parse_args(
        ["--model", "m", "--eval-set", "a", "--eval_set", "b", "--out", "o", "--limit", "3", "--prefix", ""]
    )
    assert (args.output_dir, args.max_eval_samples, args.source_prefix, args.eval_set) == ("o", 3, "", ["a", "b"])
    err = capsys.readouterr().err.splitlines()
    assert "llmdiet eval: --out is deprecated and will be removed in llmdiet 0.3; use --output_dir" in err
    assert len(err) == 3 and all("is deprecated" in line for line in err)
    argv = ["--model", "m", "--method", "dynamic-int8", "--out=o", "--overwrite", "--calibration_count", "5"]
    (q,) = config.parse_config([QuantizeArguments], argv, prog="llmdiet quantize")
    assert (q.output_dir, q.overwrite_output_dir, q.max_calibration_samples) == ("o", True, 5)
    with pytest.raises(config.ConfigError, match="'limit' and 'max_eval_samples' are the same option"):
        config.rename_deprecated_keys({"limit": 1, "max_eval_samples": 2}, {"max_eval_samples"}, "run.yaml")


def test_yaml_config_keys_follow_the_same_renames(tmp_path, capsys):
    from llmdiet import config
    from llmdiet.study.bit_sweep import BitSweepArguments

    config._NOTED.clear()
    (tmp_path / "s.yaml").write_text("limit: 7\ncalibration_rows: 9\nout: there\n")
    (args,) = config.parse_config([BitSweepArguments], ["--config", str(tmp_path / "s.yaml")], prog="llmdiet bit-sweep")
    assert (args.max_eval_samples, args.max_calibration_samples, args.output_dir) == (7, 9, "there")
    assert "--config: --limit is deprecated" in capsys.readouterr().err


def test_misspelt_flags_are_refused_before_torch_on_every_command():
    """The under-1-s target is measured in the closing note; here: no torch import, the closest name, exit 2."""
    code = (
        "import sys, time; t = time.perf_counter(); from llmdiet import cli; rc = cli.main(sys.argv[1:]); "
        "print('HEAVY', 'torch' in sys.modules, round(time.perf_counter() - t, 2)); sys.exit(rc)"
    )
    for command in cli.SUBCOMMANDS:
        extra = ["--config", "recipes/configs/demo.yaml"] if command == "study" else []
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, command, *extra, "--outptu_dir", "x"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert proc.returncode == 2, (command, proc.stderr)
        assert "(did you mean --output_dir?)" in proc.stderr, (command, proc.stderr)
        assert "HEAVY False" in proc.stdout, (command, proc.stdout, time.perf_counter() - start)


def test_readme_table_lists_every_old_spelling():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## One vocabulary") :]
    for old, new in DEPRECATED_FLAGS.items():
        assert re.search(rf"`--{old}`[^\n]*`--{new}`|`--{new}`[^\n]*`--{old}`", table), (old, new)


def test_distill_help_is_grouped_and_one_method_at_a_time():
    out = subprocess.run(
        [sys.executable, "-m", "llmdiet", "distill", "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    ).stdout
    assert "common:" in out and "data:" in out and "training (the Trainer's most used flags):" in out
    listed = out.split("methods (--method NAME)")[0]
    assert not re.search(r"(?m)^\s+--lmbda\b", listed)  # method flags: one line per method, not one block each
    assert "gkd" in out and "--help_method NAME" in out and "--help_trainer" in out
    one = subprocess.run(
        [sys.executable, "-m", "llmdiet", "distill", "--help_method", "gkd"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    ).stdout
    assert "--lmbda" in one and "--dkd_alpha" not in one
