"""Every measurement runs in a fresh Python process.

Why: a process that loads only one backend gives an honest peak-RSS figure (nothing left over
from the previous model, no allocator pages kept by glibc), and a crash or a missing library in
one backend cannot take the whole run down.

A job is ``python -m bench.<module> --spec SPEC.json --out RESULT.json``. The worker's
:func:`worker_main` reads the spec, calls the module's ``run(spec) -> dict`` and writes the
result; an exception becomes ``{"error": "<type>: <message>"}`` in the result file, and
:func:`run_job` returns that dict like any other (the runner turns it into a skipped row with
the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def job_environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.setdefault(key, "1")  # everything the benchmarks load is local
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have spent busy since boot (/proc/stat), or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_job(module: str, spec: dict, timeout_s: float, log: Callable[[str], None] = print) -> dict:
    """Run ``python -m module`` on ``spec`` in a fresh process; the result dict (``{"error": ...}`` on failure).

    ``contention`` in the result says how much CPU *other* processes used while the job ran: the
    machine's busy CPU time (/proc/stat) minus the job's own (its rusage), as a share of the cores.
    """
    with tempfile.TemporaryDirectory(prefix="llmdiet-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        cmd = [sys.executable, "-m", module, "--spec", str(spec_path), "--out", str(out_path)]
        busy0, own0 = busy_cpu_seconds(), children_cpu_seconds()
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO_ROOT, env=job_environment(), capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s", "job_wall_s": time.perf_counter() - start}
        wall = time.perf_counter() - start
        busy1, own1 = busy_cpu_seconds(), children_cpu_seconds()
        result = json.loads(out_path.read_text()) if out_path.is_file() else None
        if result is None:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
            result = {"error": f"worker exited with code {proc.returncode} and wrote no result", "stderr_tail": tail}
        elif "error" in result:
            log(f"    {module} failed: {result['error']}")
        result["job_wall_s"] = wall
        if busy0 is not None and busy1 is not None:
            cores = os.cpu_count() or 1
            own, total = own1 - own0, busy1 - busy0
            other = max(0.0, total - own)
            result["contention"] = {
                "job_cpu_s": own,
                "machine_busy_cpu_s": total,
                "other_cpu_s": other,
                "other_share_of_cores": other / (wall * cores) if wall > 0 else None,
                "cores": cores,
            }
        return result


def worker_main(run: Callable[[dict], dict], argv: list[str] | None = None) -> int:
    """Entry point of a worker module: ``--spec IN.json --out OUT.json``."""
    import argparse

    parser = argparse.ArgumentParser(description="llmdiet benchmark worker (started by bench/run.py)")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    try:
        result = run(spec)
        code = 0
    except Exception as err:  # reported as a skipped row, with the reason, by the runner
        first_line = (str(err).strip().splitlines() or [""])[0]
        result = {"error": f"{type(err).__name__}: {first_line}", "traceback": traceback.format_exc()[-4000:]}
        code = 1
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return code
