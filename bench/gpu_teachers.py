"""Teachers that do not fit, measured on GPUs (issue 32): one prepared script for the first machine with GPUs.

    python bench/gpu_teachers.py            # GPU machine -> bench/results/gpu-teachers-<date>.json
    python bench/gpu_teachers.py --dry_run  # CPU: the demo's tiny models, the same commands (checks the script)

Two runs of the real commands on architecture-exact random-init flan-T5 shapes (``llmdiet.shapes``; memory does not
depend on weight values) and the shipped demo corpus, each reporting the peaks the run wrote to its
training_log.json (``peak_memory``: torch's peak allocated per GPU, peak resident memory per process):

* **xl teacher cache with offload**: ``llmdiet distill --teacher_cache DIR --teacher_device_map auto
  --teacher_max_memory 0=<cap>,cpu=...`` with a flan-T5-xl teacher in bf16 (6 GB) capped below its size on the GPU,
  so accelerate puts the rest of its blocks on the CPU; the cache's peak on the GPU must stay near the cap, and the
  flan-T5-small student then trains from the cache.
* **FSDP distillation step**: ``accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes
  <GPUs>`` with the live xl teacher (kd, alpha 0.5) sharded beside the student; peak per GPU against
  ``llmdiet distill --plan``'s figure for the same batch and lengths. With one GPU the shards are whole (degree 1):
  the path runs, the division by N waits for a machine with several.

The dry run uses the demo's tiny models on CPU and forces the cache's teacher to disk; its FSDP launch must be
refused in one line (accelerate runs FSDP only on GPUs), which the results file records.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _save_shape(name: str, folder: Path, dtype: str) -> str:
    """A random-init flan-T5 shape saved as a checkpoint folder (built on the GPU when there is one: fast)."""
    import torch
    from transformers import T5ForConditionalGeneration

    from llmdiet.shapes import flan_t5_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = T5ForConditionalGeneration(flan_t5_config(name, planned=True))
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    del model
    torch.cuda.empty_cache() if device == "cuda" else None
    return str(folder)


def _distill_argv(teacher: str, student: str, out: Path, steps: int, batch: int, *extra: str) -> list[str]:
    return [
        "--preset", "demo", "--teacher_model", teacher, "--student_model", student, "--output_dir", str(out),
        "--max_steps", str(steps), "--per_device_train_batch_size", str(batch), "--per_device_eval_batch_size",
        str(batch), "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--logging_steps", "1", "--disable_tqdm", "true", "--max_source_length", "64", "--max_target_length", "64",
        *extra,
    ]  # fmt: skip


def _run(cmd: list[str], timeout: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - started, 1), "errors": errors[:3]}


def _peaks(out: Path) -> dict | None:
    log = out / "training_log.json"
    if not log.exists():
        return None
    data = json.loads(log.read_text())
    return {"peak_memory": data.get("peak_memory"), "world_size": data.get("world_size"),
            "launch_engine": data.get("launch_engine"), "teacher_placement": data.get("teacher_placement")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(prog="python bench/gpu_teachers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry_run", action="store_true", help="CPU, the demo's tiny models: checks the script.")
    parser.add_argument("--gpu_cap", default="3GiB", help="GPU share of the xl teacher while it builds the cache.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--work_dir", default="/tmp/llmdiet-gpu-teachers")
    parser.add_argument("--out", default=None, help="Results file (default bench/results/gpu-teachers-<date>.json).")
    args = parser.parse_args(argv)

    import torch

    from llmdiet.provenance import provenance

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    if not args.dry_run and gpus == 0:
        print("bench/gpu_teachers.py: error: no CUDA device; use --dry_run to check the script on CPU", file=sys.stderr)
        return 2
    record: dict = {"dry_run": args.dry_run, "gpus": gpus, "batch": args.batch, "lengths": [64, 64]}
    if gpus:
        record["gpu"] = torch.cuda.get_device_name(0)
    started = time.perf_counter()
    if args.dry_run:
        from llmdiet.demo import shipped_demo_assets

        assets = shipped_demo_assets()
        teacher, student, steps = str(assets.teacher), str(assets.student), 2
        placement = ["--teacher_max_memory", "cpu=200KB", "--teacher_offload_folder", str(work / "offload")]
        mixed: list[str] = []
    else:
        teacher = _save_shape("flan-t5-xl", work / "flan-t5-xl", "bfloat16")
        student = _save_shape("flan-t5-small", work / "flan-t5-small", "float32")
        steps = 3
        placement = ["--teacher_max_memory", f"0={args.gpu_cap},cpu=100GiB"]
        mixed = ["--bf16", "true"]
    record["built_s"] = round(time.perf_counter() - started, 1)
    record["models"] = {"teacher": "flan-t5-xl" if not args.dry_run else "demo teacher", "student": student}

    cache_out = work / "cache-run"
    cache_cmd = [sys.executable, "-m", "llmdiet", "distill"]
    cache_cmd += _distill_argv(teacher, student, cache_out, steps, args.batch, "--teacher_cache", str(work / "cache"))
    cache_cmd += ["--teacher_device_map", "auto", *placement, "--teacher_dtype", "bfloat16", "--rebuild_caches", "true"]
    cache_cmd += ["--overwrite_output_dir", "true", *mixed]
    record["teacher_cache_offloaded"] = {**_run(cache_cmd, 900), **(_peaks(cache_out) or {})}
    print("teacher cache", json.dumps(record["teacher_cache_offloaded"]))

    fsdp_out = work / "fsdp-run"
    fsdp_cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    fsdp_cmd += [str(REPO / "recipes" / "accelerate" / "fsdp.yaml"), "--num_processes", str(max(gpus, 2))]
    fsdp_cmd += [str(REPO / "recipes" / "distill.py")]
    fsdp_cmd += _distill_argv(teacher, student, fsdp_out, steps, args.batch, "--method", "kd", "--alpha", "0.5")
    fsdp_cmd += ["--overwrite_output_dir", "true", "--teacher_dtype", "bfloat16", *mixed]
    plan_cmd = [sys.executable, "-m", "llmdiet", "distill", "--plan", "true"]
    plan_cmd += _distill_argv(teacher, student, fsdp_out, steps, args.batch, "--method", "kd", "--alpha", "0.5")
    plan_cmd += ["--teacher_dtype", "bfloat16", "--plan_gpu_gib", "80"]
    plan = subprocess.run(plan_cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    record["fsdp_step"] = {**_run(fsdp_cmd, 900), **(_peaks(fsdp_out) or {}), "plan": plan.stdout[-1500:]}
    if args.dry_run:
        record["fsdp_step"]["expected"] = "refused on CPU in one line (accelerate runs FSDP only on GPUs)"
    print("fsdp step", json.dumps(record["fsdp_step"])[:2000])

    record["total_s"] = round(time.perf_counter() - started, 1)
    record["provenance"] = provenance(0, ["python", "bench/gpu_teachers.py", *(argv or sys.argv[1:])])
    stamp = "dry-run" if args.dry_run else _dt.date.today().isoformat()
    out = Path(args.out or REPO / "bench" / "results" / f"gpu-teachers-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    print("wrote", out, f"({record['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
