"""llmdiet distill --plan (issue 32): the planned peak memory of a training step against the measured one."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from llmdiet import cli
from llmdiet.distill.memory_plan import StepShape, config_of, per_device, plan_step

MEASURE = """
import json, sys
from llmdiet.distill.memory_plan import StepShape, config_of, measure_step
teacher, student, shape = sys.argv[1], sys.argv[2], StepShape(**json.loads(sys.argv[3]))
print(measure_step(config_of(teacher), config_of(student), shape))
"""


def measured(teacher: str, student: str, shape: dict) -> int:
    """The same step run for real in a fresh process (glibc told to return freed tensors to the system)."""
    # a clean environment: nothing an earlier test set (threads, launchers) reaches the measured process
    env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "LLMDIET_CACHE") if k in os.environ}
    env.update(MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, teacher, student, json.dumps(shape)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[-1])


def test_demo_plan_from_the_cli_matches_the_measured_peak_within_15_percent(capsys):
    assert cli.main(["distill", "--preset", "demo", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "batch 32 per device, 64 source and 64 target tokens" in out
    planned = float(re.search(r"^peak\s+([\d,.]+)$", out, re.M).group(1).replace(",", "")) * 2**20
    real = measured(
        "llmdiet-demo:teacher", "llmdiet-demo:student", {"batch": 32, "source_length": 64, "target_length": 64}
    )
    assert abs(planned - real) <= 0.15 * real, (planned / 2**20, real / 2**20)
    assert "8 x 80 GiB (ZeRO-3/FSDP)" in out and "fits" in out


def test_the_plan_counts_each_kind_exactly():
    """Parameters, gradients and AdamW states are known exactly from the parameter counts: the plan must hold
    them (the activations are what it is for; the test above checks their total)."""
    from safetensors import safe_open

    from llmdiet.modeling import resolve_model

    def saved_parameters(name: str) -> int:  # counted in the saved weights, not by the planner's own builder
        with safe_open(f"{resolve_model(name)}/model.safetensors", "pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())

    teacher_config, student_config = config_of("llmdiet-demo:teacher"), config_of("llmdiet-demo:student")
    n_teacher, n_student = saved_parameters("llmdiet-demo:teacher"), saved_parameters("llmdiet-demo:student")
    plan = plan_step(teacher_config, student_config, StepShape(8, 16, 16, teacher_dtype="bfloat16"))
    assert plan["teacher"] == 2 * n_teacher  # bfloat16
    assert plan["student"] == 4 * n_student
    assert plan["optimizer"] >= 8 * n_student  # AdamW: exp_avg and exp_avg_sq (and a step count per tensor)
    assert plan["optimizer"] <= 8 * n_student + 64 * 1024
    cached = plan_step(teacher_config, student_config, StepShape(8, 16, 16, cache_topk=8))
    assert cached["teacher"] == 0 and cached["peak_bytes"] < plan["peak_bytes"]
    states = plan["teacher"] + plan["student"] + plan["gradients"] + plan["optimizer"]
    assert per_device(plan, 8, sharded=True) == int(plan["peak_bytes"] - states + states / 8)
    assert per_device(plan, 8, sharded=False) == plan["peak_bytes"]


def test_plan_refuses_what_it_does_not_model(capsys):
    assert cli.main(["distill", "--preset", "demo", "--method", "gkd", "--plan"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--plan models the kd step" in err
    assert cli.main(["distill", "--preset", "demo", "--plan", "--plan_gpu_gib", "0"]) == 2
    assert "--plan_gpu_gib must be > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_flan_t5_small_shapes_plan_matches_the_measured_peak_within_15_percent():
    """flan-T5-base teaching flan-T5-small at their public shapes (random weights: memory does not depend on them)."""
    shape = {"batch": 4, "source_length": 64, "target_length": 64}
    planned = plan_step(config_of("google/flan-t5-base"), config_of("google/flan-t5-small"), StepShape(**shape))
    real = measured("google/flan-t5-base", "google/flan-t5-small", shape)
    assert abs(planned["peak_bytes"] - real) <= 0.15 * real, (planned["peak_bytes"] / 2**20, real / 2**20)


def test_planned_flan_t5_shapes_have_the_released_parameter_counts():
    """The planner builds every flan-T5 shape (xl and xxl on fake tensors only) with the released checkpoints'
    parameter counts: its weight sharing is the loaded models' (embeddings shared, lm_head untied)."""
    from llmdiet.distill.memory_plan import _bytes
    from llmdiet.shapes import FLAN_T5_PARAMS, FLAN_T5_SHAPES

    assert "flan-t5-xxl" not in FLAN_T5_SHAPES  # the benchmark's shapes stay buildable on this machine
    for name, count in FLAN_T5_PARAMS.items():
        assert _bytes(config_of(f"google/{name}"), "bfloat16") == 2 * count, name
