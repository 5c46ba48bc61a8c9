"""The llmdiet benchmark runner: generation per backend, distillation step, eval-harness overhead.

    python bench/run.py --quick                 # this 2-core CPU machine, < 20 minutes
    python bench/run.py                         # full CPU run: every shape and backend, more sentences
    python bench/run.py --device cuda           # full GPU run, incl. the 2,000-sentence student eval

Size and speed do not depend on weight values, so everything runs on architecture-exact
random-init flan-T5 shapes (``llmdiet.shapes``) with the demo tokenizer and a fixed output length
(greedy, exactly ``new_tokens`` tokens per sentence). Every measurement runs in a fresh process
(``bench/jobs.py``) that loads only what it measures. Quantized artifacts are built with
``llmdiet quantize`` into ``--work_dir`` (default ``$LLMDIET_CACHE/bench``, i.e.
``~/.cache/llmdiet/bench``), rebuilt every run unless ``--reuse_artifacts``.

Outputs: ``bench/results/<date>-<mode>-<device>.json`` (all raw numbers, provenance, load
averages) and ``BENCHMARKS.md`` (rendered by ``bench/report.py`` from that file, plus the newest
results file of the other device kind, so CPU and GPU sections live side by side).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` and ``llmdiet`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.jobs import REPO_ROOT, run_job  # noqa: E402
from llmdiet.config import ConfigError, check_range, parse_config  # noqa: E402

# "<backend>+generate": the same backend with transformers' generate loop instead of llmdiet's static-cache decoder
# (the "before" of every torch row; torch-fp32+generate is the baseline the speed targets divide by).
CPU_BACKENDS = [
    "torch-fp32+generate",
    "torch-fp32",
    "torch-bf16",
    "dynamic-int8+generate",
    "dynamic-int8",
    "onnx-fp32",
    "onnx-dynamic-int8",
    "onnx-static-int8",
    "ct2-int8",
    "ct2-direct",
]
GPU_BACKENDS = [
    "torch-fp32+generate",
    "torch-fp32",
    "torch-bf16+generate",
    "torch-bf16",
    "torchao-int8",
    "quanto-int8",
    "ct2-int8",
    "ct2-direct",
]
# Teacher rows of these backends get one extra, untimed batch under torch.profiler (the notes cite it).
PROFILED_BACKENDS = ("torch-fp32+generate", "dynamic-int8+generate", "dynamic-int8")
# Backend -> the ``llmdiet quantize`` method that makes its artifact (None: the float random-init checkpoint).
ARTIFACT_METHOD = {
    "torch-fp32": None,
    "torch-fp32+generate": None,
    "torch-bf16": "torch-bf16",
    "torch-bf16+generate": "torch-bf16",
    "dynamic-int8+generate": "dynamic-int8",
    "ct2-direct": "ct2-int8",
}
# Quick mode on 2 CPU cores: the teacher shape skips the ONNX rows (documented in BENCHMARKS.md). Each ONNX
# method exports the 3 GB model again (and static int8 also calibrates it): one export plus quantization of
# flan-t5-large took 405 s here, so the three would take more than the 20-minute budget. The student rows and the
# full run keep them.
_QUICK_ONNX = (
    "quick mode: exporting and quantizing the 3 GB large shape to ONNX takes minutes per method on 2 cores "
    "(405 s measured for onnx-dynamic-int8); see the student rows, or run without --quick"
)
QUICK_TEACHER_SKIP = {name: _QUICK_ONNX for name in ("onnx-fp32", "onnx-dynamic-int8", "onnx-static-int8")}


SECTIONS = ("generation", "rounds", "distillation", "harness")


def default_work_dir() -> str:
    return str(Path(os.environ.get("LLMDIET_CACHE", Path.home() / ".cache" / "llmdiet")) / "bench")


@dataclass
class BenchArguments:
    quick: bool = field(
        default=False,
        metadata={
            "help": "Small run for a 2-core CPU machine (< 20 minutes): "
            "teacher rows on the large shape, student rows on small, "
            "fewer sentences and steps."
        },
    )
    device: str = field(
        default="cpu", metadata={"help": "cpu, cuda or cuda:N (GPU backends and the 2,000-sentence eval)."}
    )
    student_shape: str = field(
        default="flan-t5-small", metadata={"help": "Student shape (generation, distillation, harness)."}
    )
    teacher_shape: str = field(default="flan-t5-large", metadata={"help": "Teacher shape (generation, distillation)."})
    extra_shapes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "More shapes for the generation table (default: flan-t5-base in full mode, none with --quick)."
        },
    )
    backends: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Backends to time (default: every backend of the device: " + ", ".join(CPU_BACKENDS) + " on CPU)."
        },
    )
    sections: list[str] = field(
        default_factory=lambda: ["generation", "rounds", "distillation", "harness"],
        metadata={
            "help": "What to run: generation, rounds (paired comparisons in interleaved rounds, speculative "
            "decoding), distillation, harness."
        },
    )
    rounds: Optional[int] = field(
        default=None,
        metadata={
            "help": "Interleaved rounds per block of the paired comparisons (the 'rounds' section; default: quick 3, "
            "full 5)."
        },
    )
    rounds_blocks: int = field(
        default=2,
        metadata={
            "help": "Blocks of interleaved rounds spread over the run: the first right after the generation section, "
            "the others at the end of the run (after distillation and harness), so the verdicts cover the machine's "
            "drift during the run; a target is MET only when every round of every block clears its line."
        },
    )
    alphas: list[float] = field(
        default_factory=lambda: [0.6, 0.7, 0.8, 0.9],
        metadata={"help": "Controlled acceptance rates of the speculative-decoding rows (oracle drafts)."},
    )
    rounds_batch1_sentences: Optional[int] = field(
        default=None, metadata={"help": "Sentences per round at batch 1 (default: quick 1, full 4)."}
    )
    rounds_batch16_sentences: Optional[int] = field(
        default=None, metadata={"help": "Sentences per round at batch 16 (default: quick 16, full 32)."}
    )
    new_tokens: int = field(default=40, metadata={"help": "Tokens generated per sentence (fixed: min = max)."})
    source_tokens: int = field(default=40, metadata={"help": "Tokens per source sentence in the generation table."})
    batch1_sentences: Optional[int] = field(
        default=None, metadata={"help": "Sentences timed at batch 1 (default: quick 8 student / 4 teacher; full 16)."}
    )
    batch16_sentences: Optional[int] = field(
        default=None,
        metadata={"help": "Sentences timed at batch 16 (default: quick 32 student / 16 teacher; full 64)."},
    )
    train_batch_size: int = field(default=8, metadata={"help": "Sentences per distillation step."})
    train_steps: Optional[int] = field(
        default=None,
        metadata={
            "help": "Timed rounds of distillation steps, one step of each kind per round (default: quick 5, full 10)."
        },
    )
    train_warmup_steps: int = field(default=2, metadata={"help": "Untimed rounds of distillation steps before timing."})
    topk: int = field(default=32, metadata={"help": "k of the cached teacher top-k log-probs."})
    harness_sentences: int = field(default=64, metadata={"help": "Sentences in the harness-overhead benchmark."})
    harness_batch_size: int = field(
        default=16, metadata={"help": "Batch size of the batched harness (llmdiet eval's default)."}
    )
    gpu_eval_sentences: int = field(default=2000, metadata={"help": "Sentences of the GPU student eval (cuda only)."})
    gpu_eval_batch_size: int = field(default=128, metadata={"help": "Batch size of the GPU student eval."})
    profile_generation: bool = field(
        default=True,
        metadata={
            "help": "Profile one extra batch-16 batch of the teacher's torch-fp32 and dynamic-int8 rows (torch.profiler)."
        },
    )
    calibration_count: Optional[int] = field(
        default=None,
        metadata={
            "help": "Calibration sources for onnx-static-int8 / quanto-int8 (default: quick 16, full 128 as llmdiet quantize)."
        },
    )
    work_dir: str = field(default_factory=default_work_dir, metadata={"help": "Where models and artifacts are built."})
    reuse_artifacts: bool = field(default=False, metadata={"help": "Reuse models/artifacts already in --work_dir."})
    results_dir: str = field(
        default=str(REPO_ROOT / "bench" / "results"), metadata={"help": "Where the results JSON goes."}
    )
    markdown: Optional[str] = field(
        default=str(REPO_ROOT / "BENCHMARKS.md"), metadata={"help": "Markdown report to regenerate ('' to skip)."}
    )
    tag: Optional[str] = field(
        default=None, metadata={"help": "Results file name part instead of <date>-<mode>-<device>."}
    )
    repeat_of: Optional[str] = field(
        default=None,
        metadata={
            "help": "This run repeats an earlier one (its results file name in --results_dir): BENCHMARKS.md keeps showing "
            "that run and lists this one as run-to-run spread."
        },
    )
    wait_idle_minutes: float = field(
        default=0.0,
        metadata={
            "help": "Before starting, wait up to this long for the 1-minute load average to drop below --idle_load."
        },
    )
    idle_load: float = field(default=0.5, metadata={"help": "Load average under which the machine counts as idle."})
    job_timeout_s: float = field(default=1800.0, metadata={"help": "Time limit of one measurement process."})

    def __post_init__(self):
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got '{self.device}'")
        unknown = set(self.sections) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"--sections: unknown {sorted(unknown)} (use {', '.join(SECTIONS)})")
        check_range("rounds", self.rounds, 1)
        check_range("rounds_blocks", self.rounds_blocks, 1)
        check_range("rounds_batch1_sentences", self.rounds_batch1_sentences, 1)
        check_range("rounds_batch16_sentences", self.rounds_batch16_sentences, 1)
        for alpha in self.alphas:
            check_range("alphas", alpha, 0.0, 1.0)
        known = set(CPU_BACKENDS) | set(GPU_BACKENDS)
        bad = [b for b in self.backends if b not in known]
        if bad:
            raise ConfigError(f"--backends: unknown {bad} (known: {', '.join(sorted(known))})")
        from bench.workload import known_shapes

        for shape in [self.student_shape, self.teacher_shape, *self.extra_shapes]:
            if shape not in known_shapes():
                raise ConfigError(f"unknown shape '{shape}' (known: {', '.join(known_shapes())})")
        for name in (
            "new_tokens",
            "source_tokens",
            "train_batch_size",
            "topk",
            "harness_sentences",
            "harness_batch_size",
            "gpu_eval_sentences",
            "gpu_eval_batch_size",
        ):
            check_range(name, getattr(self, name), 1)
        for name in ("batch1_sentences", "batch16_sentences", "train_steps", "calibration_count"):
            check_range(name, getattr(self, name), 1)
        check_range("train_warmup_steps", self.train_warmup_steps, 0)
        check_range("wait_idle_minutes", self.wait_idle_minutes, 0.0)
        check_range("job_timeout_s", self.job_timeout_s, 1.0)
        if self.repeat_of and not (Path(self.results_dir) / Path(self.repeat_of).name).is_file():
            raise ConfigError(f"--repeat_of {self.repeat_of}: no such results file in {self.results_dir}")

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


# ----------------------------------------------------------------------------- machine state


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def cpu_flags() -> list[str]:
    """The CPU features that decide int8/bf16 speed (AVX-512, VNNI, AMX), from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")) or "vnni" in f)
    except OSError:
        pass
    return []


def write_side_study(script: str, argv: list[str] | None, fields: dict, out: str | Path) -> Path:
    """Write a side study's results file: its exact command, provenance and CPU flags, then ``fields``."""
    from llmdiet.provenance import provenance

    record = {
        "command": " ".join(["python", script, *(argv if argv is not None else sys.argv[1:])]),
        "provenance": provenance(seed=0),
        "cpu_flags": cpu_flags(),
        **fields,
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print("wrote", path)
    return path


def wait_for_idle(minutes: float, threshold: float, log) -> list[float] | None:
    deadline = time.time() + minutes * 60
    while True:
        load = load_average()
        if load is None or load[0] < threshold or time.time() >= deadline:
            return load
        log(f"waiting for an idle machine: 1-minute load {load[0]:.2f} >= {threshold} (until {minutes:g} min pass)")
        time.sleep(min(60.0, max(1.0, deadline - time.time())))


# ----------------------------------------------------------------------------- the plan


@dataclass
class Runner:
    args: BenchArguments
    started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {message}", flush=True)

    @property
    def work(self) -> Path:
        return Path(self.args.work_dir)

    def job(self, module: str, spec: dict) -> dict:
        spec = {**spec, "tokenizer_dir": str(self.work / "tokenizer")}
        load_start = load_average()
        result = run_job(module, spec, self.args.job_timeout_s, log=self.log)
        result["load_average"] = {"start": load_start, "end": load_average()}
        return result

    # -- models and artifacts

    def random_model(self, shape: str) -> dict:
        out = self.work / shape
        if not self.args.reuse_artifacts and out.exists():
            import shutil

            shutil.rmtree(out)
        self.log(f"building random-init {shape}")
        return self.job("bench.artifacts", {"kind": "random", "shape": shape, "out": str(out)})

    def artifact(self, shape: str, method: str, model_dir: str) -> dict:
        self.log(f"  llmdiet quantize {shape} --method {method}")
        device = self.args.device if method in ("ct2-int8", "quanto-int8", "torchao-int8", "torch-bf16") else "cpu"
        return self.job(
            "bench.artifacts",
            {
                "kind": "quantize",
                "method": method,
                "model": model_dir,
                "out": str(self.work / f"{shape}-{method}"),
                "device": device,
                "reuse": self.args.reuse_artifacts,
                "calibration_count": self.args.calibration_count or (16 if self.args.quick else 128),
                "calibration_max_new_tokens": self.args.new_tokens,
            },
        )

    # -- sections

    def generation_plan(self) -> list[tuple[str, str, list[str], list[dict]]]:
        """(shape, role, backends, runs) per shape."""
        a = self.args
        backends = a.backends or (GPU_BACKENDS if a.on_gpu else CPU_BACKENDS)
        if a.teacher_shape == a.student_shape:  # one model plays both roles (the runner's smoke test does this)
            shapes = [(a.student_shape, "student and teacher")]
        else:
            shapes = [(a.student_shape, "student"), (a.teacher_shape, "teacher")]
        extra = a.extra_shapes if (a.extra_shapes or a.quick) else ["flan-t5-base"]
        shapes += [(s, "extra") for s in extra if s not in (a.student_shape, a.teacher_shape)]
        plan = []
        for shape, role in shapes:
            small_run = a.quick and role.startswith("student")
            b1 = a.batch1_sentences or (16 if not a.quick else 8 if small_run else 4)
            b16 = a.batch16_sentences or (64 if not a.quick else 32 if small_run else 16)
            plan.append(
                (
                    shape,
                    role,
                    backends,
                    [{"batch_size": 1, "num_sentences": b1}, {"batch_size": 16, "num_sentences": b16}],
                )
            )
        return plan

    def run_generation(self, models: dict) -> tuple[list[dict], dict]:
        a = self.args
        rows: list[dict] = []
        artifacts: dict = {}
        for shape, role, backends, runs in self.generation_plan():
            model = models.get(shape) or self.random_model(shape)
            models[shape] = model
            artifacts[shape] = {"random-init fp32": model}
            for backend in backends:
                row = {"shape": shape, "role": role, "backend": backend, "device": a.device}
                if "error" in model:
                    rows.append({**row, "status": "skipped", "reason": f"random model: {model['error']}"})
                    continue
                if a.quick and role == "teacher" and backend in QUICK_TEACHER_SKIP and not a.backends:
                    rows.append({**row, "status": "skipped", "reason": QUICK_TEACHER_SKIP[backend]})
                    continue
                method = ARTIFACT_METHOD.get(backend, backend)
                model_dir = model["dir"]
                if method is not None:
                    if method not in artifacts[shape]:
                        artifacts[shape][method] = self.artifact(shape, method, model["dir"])
                    built = artifacts[shape][method]
                    if "error" in built:
                        rows.append(
                            {
                                **row,
                                "status": "skipped",
                                "reason": f"llmdiet quantize --method {method}: {built['error']}",
                            }
                        )
                        continue
                    model_dir = built["dir"]
                sizes = ", ".join(f"batch {r['batch_size']} x {r['num_sentences']}" for r in runs)
                self.log(f"  timing {shape} {backend} ({sizes})")
                profile = a.profile_generation and not a.on_gpu and "teacher" in role and backend in PROFILED_BACKENDS
                result = self.job(
                    "bench.generation",
                    {
                        "backend": backend,
                        "shape": shape,
                        "model_dir": model_dir,
                        "device": a.device,
                        "runs": runs,
                        "source_tokens": a.source_tokens,
                        "new_tokens": a.new_tokens,
                        "warmup_batches": 1,
                        "profile_batch_size": max(r["batch_size"] for r in runs) if profile else None,
                    },
                )
                if "error" in result:
                    rows.append(
                        {
                            **row,
                            "status": "skipped",
                            "reason": result["error"],
                            "load_average": result.get("load_average"),
                        }
                    )
                else:
                    rows.append({**row, "status": "ok", **result})
        return rows, artifacts

    def run_rounds(self, models: dict, artifacts: dict, block: int = 0) -> list[dict]:
        """One block of paired comparisons in interleaved rounds (``bench/rounds.py``): one process per shape. The
        engine-alone memory measurement runs in the first block only (memory does not drift with the load)."""
        a = self.args
        if a.on_gpu:
            return []
        rounds = a.rounds or (3 if a.quick else 5)
        batched_alpha = 0.7 if 0.7 in a.alphas else a.alphas[0]  # the batch-16 speculative row (issue 33's target)
        b1 = a.rounds_batch1_sentences or (1 if a.quick else 4)
        b16 = a.rounds_batch16_sentences or (16 if a.quick else 32)

        def built(shape: str, method: str | None) -> dict:
            models[shape] = models.get(shape) or self.random_model(shape)
            if method is None:
                return models[shape]
            have = artifacts.setdefault(shape, {})
            if method not in have:
                have[method] = self.artifact(shape, method, models[shape]["dir"])
            return have[method]

        draft = built(a.student_shape, "dynamic-int8")
        plans = [
            (
                a.teacher_shape,
                {
                    "1": [
                        "ct2-direct",
                        "dynamic-int8",
                        "dynamic-int8+draft",
                        *(f"dynamic-int8+draft@{alpha:g}" for alpha in a.alphas),
                    ],
                    "16": ["ct2-direct", "dynamic-int8", f"dynamic-int8+draft@{batched_alpha:g}"],
                    "16-natural": ["ct2-direct", "dynamic-int8", "dynamic-int8+drop"],
                },
            )
        ]
        if block > 0:  # the later blocks re-measure what the targets rest on (the other rates: the first block)
            plans[0][1]["1"] = ["ct2-direct", "dynamic-int8", f"dynamic-int8+draft@{batched_alpha:g}"]
        if a.student_shape != a.teacher_shape:
            plans.append((a.student_shape, {"1": ["ct2-direct", "dynamic-int8", "torch-fp32"]}))
        else:  # one model plays both roles (the runner's smoke test)
            plans[0][1]["1"].append("torch-fp32")
        out = []
        for shape, paths in plans:
            dirs = {"dynamic-int8": built(shape, "dynamic-int8"), "ct2-direct": built(shape, "ct2-int8")}
            dirs["torch-fp32"], dirs["draft"] = built(shape, None), draft
            failed = {k: v["error"] for k, v in dirs.items() if "error" in v}
            if failed:
                out.append({"shape": shape, "block": block, "status": "skipped", "reason": f"artifacts: {failed}"})
                continue
            self.log(
                f"interleaved rounds, block {block + 1}/{a.rounds_blocks}: {shape}, {rounds} rounds of "
                f"{', '.join(sorted(set(sum(paths.values(), []))))}"
            )
            block_started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            run_minute = (time.perf_counter() - self.started) / 60
            result = self.job(
                "bench.rounds",
                {
                    "shape": shape,
                    "rounds": rounds,
                    "source_tokens": a.source_tokens,
                    "new_tokens": a.new_tokens,
                    "dirs": {k: v["dir"] for k, v in dirs.items()},
                    "paths": paths,
                    "sentences": {"1": b1, "16": b16, "16-natural": b16},
                    **({"memory": {"batch": 16}} if shape == a.teacher_shape and block == 0 else {}),
                },
            )
            role = "teacher" if shape == a.teacher_shape else "student"
            row = {
                "shape": shape,
                "role": "student and teacher" if a.student_shape == a.teacher_shape else role,
                "block": block,
                "block_started": block_started,
                "run_minute": round(run_minute, 1),
            }
            out.append(
                {**row, "status": "skipped", "reason": result["error"]}
                if "error" in result
                else {**row, "status": "ok", **result}
            )
        return out

    def run_gpu_eval(self, models: dict, artifacts: dict) -> dict:
        a = self.args
        shape = a.student_shape
        method = "torch-bf16"
        built = artifacts.get(shape, {}).get(method) or self.artifact(shape, method, models[shape]["dir"])
        if "error" in built:
            return {"status": "skipped", "reason": built["error"]}
        self.log(f"GPU eval: {a.gpu_eval_sentences} sentences, {shape} torch-bf16, batch {a.gpu_eval_batch_size}")
        result = self.job(
            "bench.generation",
            {
                "backend": "torch-bf16",
                "shape": shape,
                "model_dir": built["dir"],
                "device": a.device,
                "runs": [{"batch_size": a.gpu_eval_batch_size, "num_sentences": a.gpu_eval_sentences}],
                "source_tokens": a.source_tokens,
                "new_tokens": a.new_tokens,
                "warmup_batches": 1,
            },
        )
        return {"status": "skipped", "reason": result["error"]} if "error" in result else {"status": "ok", **result}

    def run_distillation(self, models: dict) -> dict:
        a = self.args
        for shape in (a.student_shape, a.teacher_shape):
            models[shape] = models.get(shape) or self.random_model(shape)
            if "error" in models[shape]:
                return {"status": "skipped", "reason": f"random model {shape}: {models[shape]['error']}"}
        steps = a.train_steps or (5 if a.quick else 10)
        self.log(
            f"distillation step: student {a.student_shape}, teacher {a.teacher_shape}, "
            f"batch {a.train_batch_size}, {a.train_warmup_steps} warm-up + {steps} timed rounds of the three kinds of step"
        )
        spec = {
            "student_dir": models[a.student_shape]["dir"],
            "teacher_dir": models[a.teacher_shape]["dir"],
            "device": a.device,
            "batch_size": a.train_batch_size,
            "source_tokens": a.source_tokens,
            "target_tokens": a.new_tokens,
            "warmup_steps": a.train_warmup_steps,
            "steps": steps,
            "topk": a.topk,
            "temperature": 2.0,
            "alpha": 0.5,
            "profile": True,
            "flush_denormal": True,
        }
        result = self.job("bench.train_step", spec)
        out = {"student_shape": a.student_shape, "teacher_shape": a.teacher_shape}
        if "error" in result:
            return {**out, "status": "skipped", "reason": result["error"]}
        out = {**out, "status": "ok", **result}
        if not a.on_gpu:  # evidence for the flush-to-zero choice: a few plain steps with subnormals kept
            self.log("  plain fine-tuning steps again, subnormal floats not flushed (evidence for the notes)")
            check = self.job(
                "bench.train_step",
                {**spec, "modes": ["plain"], "flush_denormal": False, "profile": False, "warmup_steps": 1, "steps": 3},
            )
            out["subnormal_check"] = (
                check
                if "error" in check
                else {
                    "plain_median_s": check["modes"]["plain"]["median_s"],
                    "steps_s": check["modes"]["plain"]["steps_s"],
                    "subnormal_softmax_share": check["subnormal_softmax_share"],
                    "ratio_vs_flushed_plain": check["modes"]["plain"]["median_s"]
                    / result["modes"]["plain"]["median_s"],
                    "contention": check.get("contention"),
                    "load_average": check.get("load_average"),
                }
            )
        return out

    def run_harness(self, models: dict) -> dict:
        a = self.args
        shape = a.student_shape
        models[shape] = models.get(shape) or self.random_model(shape)
        if "error" in models[shape]:
            return {"status": "skipped", "reason": f"random model {shape}: {models[shape]['error']}"}
        backend = "torch-bf16" if a.on_gpu else "torch-fp32"
        self.log(
            f"harness overhead: {shape} {backend}, {a.harness_sentences} sentences, batch {a.harness_batch_size} "
            "vs one at a time"
        )
        result = self.job(
            "bench.harness_overhead",
            {
                "backend": backend,
                "model_dir": models[shape]["dir"],
                "device": a.device,
                "num_sentences": a.harness_sentences,
                "batch_size": a.harness_batch_size,
                "new_tokens": a.new_tokens,
            },
        )
        return (
            {"shape": shape, "status": "skipped", "reason": result["error"]}
            if "error" in result
            else {"shape": shape, "status": "ok", **result}
        )


def results_path(args: BenchArguments, date: str) -> Path:
    name = args.tag or f"{date}-{args.mode}-{'cuda' if args.on_gpu else 'cpu'}"
    return Path(args.results_dir) / f"{name}.json"


def run(args: BenchArguments, argv: list[str]) -> dict:
    from bench.report import evaluate_targets, write_markdown
    from bench.workload import load_tokenizer
    from llmdiet.provenance import provenance

    runner = Runner(args)
    load_before_wait = load_average()
    load_start = (
        wait_for_idle(args.wait_idle_minutes, args.idle_load, runner.log)
        if args.wait_idle_minutes
        else load_before_wait
    )
    runner.started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc)
    runner.log(
        f"llmdiet benchmarks, {args.mode} mode on {args.device}; 1-minute load average {load_start[0] if load_start else '?'}"
    )
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    load_tokenizer(Path(args.work_dir) / "tokenizer")
    command = "python bench/run.py " + " ".join(argv)
    results: dict = {
        "mode": args.mode,
        "device": args.device,
        "command": command.strip(),
        "settings": asdict(args),
        "repeat_of": args.repeat_of,
        "provenance": provenance(seed=0, command=["python", "bench/run.py", *argv]),
        "cpu_flags": cpu_flags(),
        "started": started_at.isoformat(timespec="seconds"),
    }
    models: dict = {}
    sections = set(args.sections)
    if "generation" in sections:
        results["generation"], results["artifacts"] = runner.run_generation(models)
        if args.on_gpu:
            results["gpu_eval"] = runner.run_gpu_eval(models, results["artifacts"])
    blocks: list[list[dict]] = []
    if "rounds" in sections:
        blocks.append(runner.run_rounds(models, results.setdefault("artifacts", {}), block=0))
    if "distillation" in sections:
        results["distillation"] = runner.run_distillation(models)
    if "harness" in sections:
        results["harness"] = runner.run_harness(models)
    if "rounds" in sections:  # the later blocks at the end of the run: the verdicts span its whole length
        for block in range(1, args.rounds_blocks):
            blocks.append(runner.run_rounds(models, results["artifacts"], block=block))
        from bench.rounds import merge_blocks

        results["rounds"] = merge_blocks(blocks)
    results["random_models"] = models
    results["total_wall_s"] = time.perf_counter() - runner.started
    results["load_average"] = {"before_wait": load_before_wait, "start": load_start, "end": load_average()}
    results["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results["targets"] = evaluate_targets(results)
    path = results_path(args, started_at.strftime("%Y-%m-%d"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    runner.log(f"results: {path} (total {results['total_wall_s'] / 60:.1f} min)")
    if args.markdown:
        md = write_markdown(path, args.markdown)
        runner.log(f"report: {md}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        (args,) = parse_config(
            [BenchArguments],
            argv,
            prog="python bench/run.py",
            description="llmdiet benchmarks on random-init flan-T5 shapes (see bench/README.md).",
        )
    except ConfigError as err:
        print(f"bench/run.py: error: {err}", file=sys.stderr)
        return 2
    if args.on_gpu:
        import torch

        if not torch.cuda.is_available():
            print(
                f"bench/run.py: error: --device {args.device} asked for, but CUDA is not available on this machine "
                "(GPU figures need a GPU; run the CPU benchmarks with --device cpu)",
                file=sys.stderr,
            )
            return 2
    results = run(args, argv)
    for target in results["targets"]:
        print(f"  {target['status']:<8} {target['name']}: {target['measured_text']} (target {target['target_text']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
