"""Memory plans of the distillation step for big teachers: which GPU layouts can train which pair.

    python bench/memory_plan.py [--batch 8] [--length 256]     # -> bench/results/memory-plan.json, then
    python bench/report.py ...                                 # BENCHMARKS.md "Memory plan" (and README's table)

flan-T5-large, -xl and -xxl teachers with a flan-T5-small or -base student, at their public shapes, planned by
``llmdiet.distill.memory_plan`` (the step on fake tensors under PyTorch's MemTracker; nothing allocated): the teacher
live in float32 or bfloat16, or replaced by its top-k cache (``--teacher_cache``: built beforehand with the teacher
placed by ``--teacher_device_map``, then the student trains alone). Each plan is also checked against the same step
measured for real where it fits this machine (``--measure_below_gib``, default 12).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEACHERS = ("flan-t5-large", "flan-t5-xl", "flan-t5-xxl")
STUDENTS = ("flan-t5-small", "flan-t5-base")
LAYOUTS = (("1 x 24 GiB", 1, 24.0), ("1 x 80 GiB", 1, 80.0), ("8 x 80 GiB", 8, 80.0))
MEASURE = """
import json, sys
from llmdiet.distill.memory_plan import StepShape, config_of, measure_step
print(measure_step(config_of(sys.argv[1]), config_of(sys.argv[2]), StepShape(**json.loads(sys.argv[3]))))
"""


def cases(batch: int, length: int) -> list[dict]:
    base = {"batch": batch, "source_length": length, "target_length": length}
    rows = []
    for student in STUDENTS:
        for teacher in TEACHERS:
            for dtype in ("float32", "bfloat16") if teacher == "flan-t5-large" else ("bfloat16",):
                rows.append({"teacher": teacher, "student": student, "shape": {**base, "teacher_dtype": dtype}})
        rows.append({"teacher": "(top-k cache)", "student": student, "shape": {**base, "cache_topk": 32}})
    return rows


def measure(case: dict) -> int:
    import os

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1"}
    teacher = case["teacher"] if case["teacher"] in TEACHERS else case["student"]
    argv = [sys.executable, "-c", MEASURE, f"google/{teacher}", f"google/{case['student']}", json.dumps(case["shape"])]
    return int(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/memory_plan.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="Training batch per device (the reference: 8).")
    parser.add_argument("--length", type=int, default=256, help="Source and target tokens (the reference: 256).")
    parser.add_argument("--measure_below_gib", type=float, default=12.0, help="Measure plans below this for real.")
    parser.add_argument(
        "--measure",
        nargs="*",
        default=None,
        help="Measure only these rows (TEACHER:STUDENT:DTYPE or cache:STUDENT, e.g. flan-t5-large:flan-t5-small:float32).",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "memory-plan.json"))
    args = parser.parse_args(argv)
    from bench.run import cpu_flags
    from llmdiet.distill.memory_plan import StepShape, config_of, per_device, plan_step
    from llmdiet.provenance import provenance

    rows = []
    for case in cases(args.batch, args.length):
        teacher = case["teacher"] if case["teacher"] in TEACHERS else case["student"]  # unused with a cache
        plan = plan_step(
            config_of(f"google/{teacher}"), config_of(f"google/{case['student']}"), StepShape(**case["shape"])
        )
        fits = {}
        for label, processes, gib in LAYOUTS:
            for sharded in (False, True) if processes > 1 else (False,):
                need = per_device(plan, processes, sharded)
                fits[label + (" ZeRO-3" if sharded else " DDP" if processes > 1 else "")] = {
                    "per_device_bytes": need,
                    "fits": need <= gib * 2**30,
                }
        row = {**case, "plan": plan, "layouts": fits}
        key = f"{case['teacher']}:{case['student']}:{case['shape'].get('teacher_dtype', '')}".rstrip(":")
        key = key if "cache_topk" not in case["shape"] else f"cache:{case['student']}"
        chosen = key in args.measure if args.measure is not None else True
        if chosen and plan["peak_bytes"] < args.measure_below_gib * 2**30:
            row["measured_bytes"] = measure(case)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("teacher", "student", "shape")}), plan["peak_bytes"] / 2**30, flush=True)
    record = {
        "kind": "memory-plan",
        "step": "kd: teacher forward (no grad) or top-k cache, student forward, KL + CE, backward, clip, AdamW; x2",
        "rule": "per device: DDP holds every state; ZeRO-3/FSDP divides teacher, student, gradients and optimizer "
        "states by the process count; activations stay. Not counted: the CUDA context (~0.5 GiB), allocator "
        "fragmentation, the layer ZeRO-3 gathers, kernels' workspaces.",
        "cpu_flags": cpu_flags(),
        "rows": rows,
        "provenance": provenance(0, ["python", "bench/memory_plan.py", *(argv or sys.argv[1:])]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
