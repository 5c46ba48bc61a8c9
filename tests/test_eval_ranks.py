"""llmdiet eval across processes (issue 32, part 4): two CPU processes under accelerate launch give the samples and
scores of one process; rows a killed multi-process run translated are merged, not translated again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmdiet.evaluation.harness import main as eval_main

REPO = Path(__file__).resolve().parents[1]
ARGV = ["--model", "llmdiet-demo:teacher", "--eval_set", "demo-en-fr", "--max_eval_samples", "96"]
ARGV += ["--batch_size", "8", "--warmup_batches", "0"]


def samples(run: Path) -> dict[int, dict]:
    lines = (run / "demo-en-fr" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return {s["index"]: s for s in map(json.loads, lines)}


def test_rows_of_an_interrupted_multi_process_run_are_merged_not_translated_again(demo_assets, tmp_path):
    one = tmp_path / "one"
    assert eval_main([*ARGV, "--output_dir", str(one)]) == 0
    everything = samples(one)
    # a killed two-process run: rank 1 had written its part, nothing was merged yet
    run = tmp_path / "killed"
    (run / "demo-en-fr").mkdir(parents=True)
    part = [everything[i] for i in sorted(everything)[:40]]
    text = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in part)
    (run / "demo-en-fr" / "samples.rank-1.jsonl").write_text(text, encoding="utf-8")
    assert eval_main([*ARGV, "--output_dir", str(run)]) == 0
    assert samples(run) == everything
    assert not list((run / "demo-en-fr").glob("samples.rank-*.jsonl"))
    timing = json.loads((run / "results.json").read_text())["sets"]["demo-en-fr"]["timing"]
    assert timing["resumed_from"] == 40 and timing["generated_this_run"] < 96


@pytest.mark.slow
def test_two_cpu_processes_give_the_samples_and_scores_of_one(demo_assets, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert eval_main([*ARGV, "--output_dir", str(one)]) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [str(REPO / "recipes" / "evaluate.py"), *ARGV, "--output_dir", str(two)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert samples(two) == samples(one)  # the same batches, so the same outputs, row for row
    results = {name: json.loads((run / "results.json").read_text()) for name, run in (("one", one), ("two", two))}
    set_one, set_two = results["one"]["sets"]["demo-en-fr"], results["two"]["sets"]["demo-en-fr"]
    assert set_two["metrics"] == set_one["metrics"]
    assert results["two"]["decoding"]["processes"] == 2 and "processes" not in results["one"]["decoding"]
    assert set_two["timing"]["processes"] == 2
    assert set_two["timing"]["generated_this_run"] == 48  # rank 0 translated its half: 6 of the 12 batches of 8
    assert not list((two / "demo-en-fr").glob("samples.rank-*.jsonl"))
