"""Generation throughput of one backend, in a process that loads only that backend.

Worker spec (see ``bench/jobs.py``)::

    {"backend": "dynamic-int8", "model_dir": DIR, "tokenizer_dir": DIR, "device": "cpu",
     "source_tokens": 40, "new_tokens": 40, "warmup_batches": 1,
     "runs": [{"batch_size": 1, "num_sentences": 4}, {"batch_size": 16, "num_sentences": 32}]}

Every llmdiet backend is timed through :func:`llmdiet.evaluation.generation.generate_all`, the code path of
``llmdiet eval``: greedy, ``min_new_tokens = max_new_tokens = new_tokens`` (random weights never
stop early then), sources of exactly ``source_tokens`` tokens, length-sorted batches, one warm-up
batch excluded from timing. Runs go from the smallest batch to the largest, so the peak RSS of the
last run is the process peak while generating.

``backend = "ct2-direct"`` is the reference for "no slower than CTranslate2 used directly":
``ctranslate2.Translator.translate_batch`` called in a plain loop on pre-tokenised input (token
strings made before timing), same batches, same thread count, same warm-up, same RSS monitor.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from .jobs import worker_main


def _available_cores() -> int:
    from llmdiet.provenance import available_cores

    return available_cores()


def artifact_bytes(model_dir: str | Path) -> int:
    """On-disk size of an artifact: ``disk_bytes`` from ``llmdiet_artifact.json``, else the directory size."""
    from llmdiet.engines import ARTIFACT_FILE
    from llmdiet.modeling import directory_bytes

    meta = Path(model_dir) / ARTIFACT_FILE
    if meta.is_file():
        data = json.loads(meta.read_text())
        if data.get("disk_bytes"):
            return int(data["disk_bytes"])
    return directory_bytes(model_dir)


def mapped_file_rss_bytes(directory: str | Path) -> int | None:
    """Resident bytes of memory-mapped files under ``directory`` (/proc/self/smaps), or None off Linux.

    Weights read through a memory map stay resident (and count in RSS) as long as any tensor still
    views the mapping.
    """
    smaps = Path("/proc/self/smaps")
    if not smaps.is_file():
        return None
    root = str(Path(directory).resolve())
    total, inside = 0, False
    for line in smaps.read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:  # a mapping header: "start-end perms offset dev inode path"
            inside = len(head) >= 6 and head[5].startswith(root)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


def heap_retained_bytes() -> int | None:
    """RSS released by glibc's ``malloc_trim(0)``: freed heap memory the allocator was still holding, or None."""
    import ctypes

    from llmdiet.provenance import rss_bytes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    before = rss_bytes()
    libc.malloc_trim(0)
    return max(0, before - rss_bytes())


def _summary(timing: dict) -> dict:
    keep = (
        "batch_size",
        "num_sentences",
        "num_batches",
        "generated_tokens",
        "wall_s",
        "warmup_s",
        "sentences_per_s",
        "tokens_per_s",
        "latency_p50_s",
        "latency_p95_s",
        "peak_rss_bytes",
        "lifetime_peak_rss_bytes",
        "peak_gpu_bytes",
        "torch_threads",
        "device",
        "sorted_by",
        "batch_latencies_s",
        "first_token_p50_s",
        "per_token_latency_p50_s",
    )
    return {k: timing.get(k) for k in keep}


def measure_llmdiet_backend(spec: dict, sources: list[str], settings) -> dict:
    import torch

    from llmdiet.engines import load_backend
    from llmdiet.evaluation.generation import generate_all
    from llmdiet.provenance import rss_bytes

    torch.set_num_threads(spec.get("threads") or _available_cores())
    rss_before = rss_bytes()
    start = time.perf_counter()
    name, _, variant = spec["backend"].partition("+")  # "dynamic-int8+generate": transformers' own decoding loop
    options = {"decoding": variant} if variant else {}
    backend = load_backend(name, spec["model_dir"], device=spec.get("device", "cpu"), **options)
    load_s = time.perf_counter() - start
    rss_loaded = rss_bytes()
    mapped_model_rss = mapped_file_rss_bytes(spec["model_dir"])
    runs = []
    for run in sorted(spec["runs"], key=lambda r: r["batch_size"]):
        result = generate_all(
            backend,
            sources[: run["num_sentences"]],
            settings,
            run["batch_size"],
            warmup_batches=spec.get("warmup_batches", 1),
            progress=False,
        )
        runs.append(_summary(result.timing_dict()))
        del result
        gc.collect()
    out = {
        "describe": backend.describe(),
        "size_info": backend.size_info(),
        "load_s": load_s,
        "rss_before_load_bytes": rss_before,
        "rss_after_load_bytes": rss_loaded,
        "mapped_model_files_rss_bytes": mapped_model_rss,
        "runs": runs,
    }
    if spec.get("profile_batch_size") and isinstance(getattr(backend, "model", None), torch.nn.Module):
        size = spec["profile_batch_size"]
        out["profile"] = profile_one_batch(backend, sources[:size], settings)
    # after every measurement: how much of the RSS was freed heap that glibc had kept (diagnostic only)
    out["rss_end_bytes"] = rss_bytes()
    out["heap_released_by_malloc_trim_bytes"] = heap_retained_bytes()
    return out


# aten operators that carry the Linear layers' matrix products (fp32/bf16 and torch.ao dynamic int8)
MATMUL_OPS = (
    "aten::addmm",
    "aten::mm",
    "aten::linear",
    "aten::matmul",
    "aten::bmm",
    "quantized::linear_dynamic",
    "aten::_addmm_activation",
    "mkldnn::_linear_pointwise",
)


def profile_one_batch(backend, sources: list[str], settings, top: int = 10) -> dict:
    """One extra (untimed) batch under ``torch.profiler``: top operators by self CPU time, and the matmul share."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        backend.translate(sources, settings)
        wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    return {
        "batch_size": len(sources),
        "wall_s_profiled": wall,
        "op_self_cpu_s": total_us / 1e6,
        "matmul_share_of_op_time": matmul_us / total_us if total_us else None,
        "op_time_share_of_wall": (total_us / 1e6) / wall if wall else None,
        "top_ops": [
            {
                "op": e.key,
                "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
                "calls": e.count,
                "share": round(e.self_cpu_time_total / total_us, 3),
            }
            for e in events[:top]
        ],
        "note": "self CPU time summed over threads' ops as torch.profiler reports it; python/generate overhead is the "
        "part of the wall time not covered by operators",
    }


def ct2_layouts(batch_size: int, cores: int) -> list[tuple[int, int]]:
    """(intra_threads, inter_threads) candidates for CTranslate2 at this batch size (``bench/ct2_settings.py``)."""
    if batch_size == 1:
        return [(cores, 1), (1, 1)]
    return [(1, cores), (cores, 1)] if cores > 1 else [(1, 1)]


def measure_ct2_direct(spec: dict, sources: list[str], settings) -> dict:
    """``Translator.translate_batch`` in a plain loop on pre-tokenised batches (the CTranslate2 reference).

    CTranslate2 gets its best settings: every run is timed under each thread layout of :func:`ct2_layouts`
    (one worker with all cores, one single-thread worker, or one single-thread worker per core with the batch split
    between them) and the fastest is kept; the others are stored under ``layouts``.
    """
    import ctranslate2
    import numpy as np
    from transformers import AutoTokenizer

    from llmdiet.evaluation.generation import PeakRSSMonitor, lifetime_peak_rss_bytes, plan_batches
    from llmdiet.provenance import rss_bytes

    device = spec.get("device", "cpu")
    dev_type = device.split(":")[0]
    cores = spec.get("threads") or _available_cores()
    compute_type = "int8" if dev_type == "cpu" else "int8_bfloat16"  # never float16 for T5
    rss_before = rss_bytes()
    tokenizer = AutoTokenizer.from_pretrained(str(Path(spec["model_dir"]) / "tokenizer"))
    runs, load_s, rss_loaded = [], None, None
    for run in sorted(spec["runs"], key=lambda r: r["batch_size"]):
        batch_sources = sources[: run["num_sentences"]]
        ids = tokenizer(batch_sources)["input_ids"]
        tokens = [tokenizer.convert_ids_to_tokens(x) for x in ids]
        plan = plan_batches([len(x) for x in ids], run["batch_size"])
        batches = [[tokens[i] for i in batch] for batch in plan]
        tried = []
        for intra, inter in ct2_layouts(run["batch_size"], cores) if dev_type == "cpu" else [(0, 1)]:
            start = time.perf_counter()
            translator = ctranslate2.Translator(
                spec["model_dir"], device=dev_type, compute_type=compute_type, inter_threads=inter, intra_threads=intra
            )
            load_s = load_s if load_s is not None else time.perf_counter() - start
            rss_loaded = rss_loaded if rss_loaded is not None else rss_bytes()
            split = -(-run["batch_size"] // inter) if inter > 1 else 0
            options = dict(
                beam_size=settings.num_beams,
                max_batch_size=split,
                max_decoding_length=settings.max_new_tokens,
                min_decoding_length=settings.min_new_tokens,
                max_input_length=0,
                return_end_token=True,
            )
            latencies, firsts, per_token, generated = [], [], [], 0
            with PeakRSSMonitor() as rss:
                warm = time.perf_counter()
                for batch in batches[: spec.get("warmup_batches", 1)]:
                    translator.translate_batch(batch, **options)
                warmup_s = time.perf_counter() - warm
                t_start = time.perf_counter()
                for batch in batches:
                    first: list[float] = []

                    def callback(step, first=first):
                        return first.append(time.perf_counter()) if not first else None

                    t0 = time.perf_counter()
                    results = translator.translate_batch(batch, callback=callback, **options)
                    latencies.append(time.perf_counter() - t0)
                    longest = max(len(r.hypotheses[0]) for r in results)
                    if first:
                        firsts.append(first[0] - t0)
                        if longest > 1:
                            per_token.append((latencies[-1] - firsts[-1]) / (longest - 1))
                    generated += sum(len(r.hypotheses[0]) for r in results)
                wall = time.perf_counter() - t_start
            tried.append(
                {
                    "batch_size": run["batch_size"],
                    "num_sentences": len(batch_sources),
                    "num_batches": len(batches),
                    "generated_tokens": generated,
                    "wall_s": wall,
                    "warmup_s": warmup_s,
                    "sentences_per_s": len(batch_sources) / wall,
                    "tokens_per_s": generated / wall,
                    "latency_p50_s": float(np.percentile(latencies, 50)),
                    "latency_p95_s": float(np.percentile(latencies, 95)),
                    "first_token_p50_s": float(np.percentile(firsts, 50)) if firsts else None,
                    "per_token_latency_p50_s": float(np.percentile(per_token, 50)) if per_token else None,
                    "peak_rss_bytes": int(rss.peak),
                    "lifetime_peak_rss_bytes": lifetime_peak_rss_bytes(),
                    "peak_gpu_bytes": None,
                    "torch_threads": None,
                    "device": device,
                    "sorted_by": "tokens",
                    "batch_latencies_s": latencies,
                    "intra_threads": intra,
                    "inter_threads": inter,
                    "max_batch_size": split,
                }
            )
            del translator
            gc.collect()
        best = max(tried, key=lambda r: r["tokens_per_s"])
        runs.append(
            {**best, "layouts": [{k: r[k] for k in ("intra_threads", "inter_threads", "tokens_per_s")} for r in tried]}
        )
    return {
        "describe": {
            "backend": "ct2-direct",
            "engine": "ctranslate2 (Translator.translate_batch, plain loop)",
            "device": device,
            "compute_type": compute_type,
            "threads": "fastest of the layouts tried per batch size (see each run's layouts)",
        },
        "size_info": {"disk_bytes": artifact_bytes(spec["model_dir"])},
        "load_s": load_s,
        "rss_before_load_bytes": rss_before,
        "rss_after_load_bytes": rss_loaded,
        "runs": runs,
    }


def run(spec: dict) -> dict:
    from llmdiet.engines import GenerationSettings

    from .workload import fixed_length_sources, load_tokenizer

    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    n = max(r["num_sentences"] for r in spec["runs"])
    sources = fixed_length_sources(tokenizer, n, spec.get("source_tokens", 40))
    new = spec.get("new_tokens", 40)
    settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, num_beams=1)
    if spec["backend"] == "ct2-direct":
        result = measure_ct2_direct(spec, sources, settings)
    else:
        result = measure_llmdiet_backend(spec, sources, settings)
    for r in result["runs"]:
        expected = r["num_sentences"] * new
        if r["generated_tokens"] != expected:  # the fixed-length contract every comparison relies on
            result.setdefault("warnings", []).append(
                f"batch {r['batch_size']}: {r['generated_tokens']} tokens generated, expected {expected}"
            )
    result["artifact_bytes"] = artifact_bytes(spec["model_dir"])
    return {"backend": spec["backend"], "shape": spec.get("shape"), "model_dir": spec["model_dir"], **result}


if __name__ == "__main__":
    raise SystemExit(worker_main(run))
