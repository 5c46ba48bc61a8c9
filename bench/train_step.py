"""Time per optimizer step of the three ways llmdiet trains a student, on the same batch.

Worker spec (see ``bench/jobs.py``)::

    {"student_dir": DIR, "teacher_dir": DIR, "tokenizer_dir": DIR, "device": "cpu", "batch_size": 8,
     "source_tokens": 40, "target_tokens": 40, "warmup_steps": 2, "steps": 5,
     "topk": 32, "temperature": 2.0, "alpha": 0.5, "profile": true,
     "flush_denormal": true, "modes": ["plain", "kd-live", "kd-cached"]}   # or just ["plain"]

One step = forward + backward + ``AdamW.step`` + ``zero_grad``, student in train mode
(dropout on, ``use_cache=False``), timed with ``time.perf_counter``. The kinds of step take turns
(``warmup_steps`` untimed rounds, then ``steps`` timed rounds of plain, kd-live, kd-cached), and the
figure is each kind's median: no kind profits from running later in the process.

* ``plain``: the student's own cross-entropy (``model(..., labels=labels).loss``): fine-tuning.
* ``kd-live``: the teacher (frozen, ``eval()``, ``no_grad``) runs on the same encoder inputs and
  ``decoder_input_ids`` every step, then :func:`llmdiet.distill.losses.distillation_loss`.
* ``kd-cached``: the teacher's top-k log-probs were written once to a cache on disk with
  :func:`llmdiet.distill.teacher_cache.build_teacher_cache` (outside the timed region); each step gets its
  batch from :class:`llmdiet.distill.teacher_cache.TeacherCache` (inside the timed region) and uses
  :func:`llmdiet.distill.losses.topk_distillation_loss`. The teacher stays loaded for the live steps but is
  not called by these.

With ``profile``, one more step of each kind runs under ``torch.profiler`` and the top operators by
self CPU time are stored: they are what BENCHMARKS.md cites when explaining a ratio.

**Subnormal floats.** A random-init flan-T5 has an untied ``lm_head`` with unit-variance weights, so its
logits have a standard deviation of about 24 and a large share of the softmax probabilities (reported as
``subnormal_softmax_share``) are subnormal floats (< 1.2e-38). x86 CPUs handle those in microcode, which
made the plain step about 4x slower than with trained weights. Trained checkpoints do not produce such
logits, so the worker turns on flush-to-zero (``torch.set_flush_denormal(True)``) before any computation
(``flush_denormal``, default true); the runner also times a few plain steps without it, as evidence.
Generation is not affected (measured: same tokens/s with and without).
"""

from __future__ import annotations

import statistics
import tempfile
import time

from .jobs import worker_main


def make_batch(tokenizer, batch_size: int, source_tokens: int, target_tokens: int):
    """Encoder inputs of exactly ``source_tokens`` and labels of exactly ``target_tokens`` tokens per row."""
    from .workload import fixed_length_sources, sources_of_lengths

    sources = fixed_length_sources(tokenizer, batch_size, source_tokens)
    # Targets: other demo text of the exact length (their content does not matter for timing).
    targets = sources_of_lengths(tokenizer, [target_tokens] * (2 * batch_size))[batch_size:]
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    labels = tokenizer(targets, return_tensors="pt", padding=True)["input_ids"]
    assert enc["input_ids"].shape == (batch_size, source_tokens) and labels.shape == (batch_size, target_tokens)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def interleaved_timing(steps: dict, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Warm every step kind up, then time them in turns (``plain, kd-live, kd-cached, plain, ...``).

    Taking turns puts each kind under the same conditions (allocator state, caches, anything else that
    drifts during a process's first seconds), so the ratios do not depend on which kind ran first.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def _profile(step, top: int = 8) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [
        {
            "op": e.key,
            "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
            "calls": e.count,
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in rows[:top]
    ]


def _stats(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
        "steps_s": times,
    }


def run(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

    from llmdiet.distill.losses import distillation_loss, topk_distillation_loss
    from llmdiet.distill.teacher_cache import TeacherCache, build_teacher_cache
    from llmdiet.evaluation.generation import lifetime_peak_rss_bytes
    from llmdiet.provenance import available_cores

    from .workload import load_tokenizer

    flush = spec.get("flush_denormal", True)
    torch.set_flush_denormal(flush)  # before any op, so that the intra-op threads start with it (see docstring)
    torch.manual_seed(0)
    torch.set_num_threads(spec.get("threads") or available_cores())
    device = torch.device(spec.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' asked for, but CUDA is not available")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    batch = make_batch(
        tokenizer, spec.get("batch_size", 8), spec.get("source_tokens", 40), spec.get("target_tokens", 40)
    )
    batch = {key: value.to(device) for key, value in batch.items()}
    warmup, steps = spec.get("warmup_steps", 2), spec.get("steps", 5)
    alpha, temperature, k = spec.get("alpha", 0.5), spec.get("temperature", 2.0), spec.get("topk", 32)
    profile = spec.get("profile", False)

    student = AutoModelForSeq2SeqLM.from_pretrained(spec["student_dir"]).to(device).train()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    labels = batch["labels"]
    decoder_input_ids = student._shift_right(labels)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)  # one optimizer: every kind of step ends the same way
    modes = spec.get("modes", ["plain", "kd-live", "kd-cached"])

    with torch.no_grad():  # diagnostic: how many softmax probabilities are subnormal floats (0 when flushed)
        probs = torch.softmax(student(**inputs, decoder_input_ids=decoder_input_ids).logits.float(), dim=-1)
        subnormal = ((probs > 0) & (probs < torch.finfo(torch.float32).tiny)).float().mean().item()
        del probs

    def optimizer_step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()  # CUDA runs asynchronously: a step is over when the device is done

    def plain_step():
        optimizer_step(student(**inputs, labels=labels, use_cache=False).loss)

    steps_by_mode = {"plain": plain_step}
    cache_build_s = None
    if "kd-live" in modes or "kd-cached" in modes:
        teacher = AutoModelForSeq2SeqLM.from_pretrained(spec["teacher_dir"]).to(device).eval().requires_grad_(False)
        if teacher.config.vocab_size != student.config.vocab_size:
            raise ValueError(f"teacher vocab {teacher.config.vocab_size} != student vocab {student.config.vocab_size}")

        def live_step():
            logits = student(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).logits
            with torch.no_grad():
                teacher_logits = teacher(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).logits
            optimizer_step(distillation_loss(logits, teacher_logits, labels, alpha, temperature).loss)

        # the cache on disk: built once, outside timing (what `llmdiet distill --teacher_cache` does first)
        with tempfile.TemporaryDirectory(prefix="llmdiet-bench-cache-") as cache_dir:
            rows = {
                "input_ids": batch["input_ids"].tolist(),
                "attention_mask": batch["attention_mask"].tolist(),
                "labels": labels.tolist(),
            }  # the cache build moves its batches to the teacher's device
            collator = DataCollatorForSeq2Seq(tokenizer, model=student, padding=True)
            t0 = time.perf_counter()
            build_teacher_cache(
                teacher,
                Dataset.from_dict(rows),
                collator,
                cache_dir,
                k=k,
                temperature=temperature,
                batch_size=len(labels),
            )
            cache_build_s = time.perf_counter() - t0
            cache = TeacherCache(cache_dir)  # reads every shard into memory
            cache.check_matches(rows["labels"], temperature)
        indices = list(range(len(labels)))

        def cached_step():
            topk_ids, topk_logprobs = (t.to(device) for t in cache.batch(indices, labels.shape[1]))
            logits = student(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).logits
            optimizer_step(topk_distillation_loss(logits, topk_ids, topk_logprobs, labels, alpha, temperature).loss)

        steps_by_mode.update({"kd-live": live_step, "kd-cached": cached_step})
    steps_by_mode = {m: steps_by_mode[m] for m in modes}

    times = interleaved_timing(steps_by_mode, warmup, steps)
    results: dict = {mode: _stats(times[mode]) for mode in modes}
    if profile:
        for mode, step in steps_by_mode.items():
            results[mode]["profile"] = _profile(step)
    if cache_build_s is not None and "kd-cached" in results:
        results["kd-cached"]["cache_build_s"] = cache_build_s
    plain = results["plain"]["median_s"]
    for name in results:
        results[name]["ratio_vs_plain"] = results[name]["median_s"] / plain
    common = {
        "batch_size": len(labels),
        "source_tokens": batch["input_ids"].shape[1],
        "target_tokens": labels.shape[1],
        "warmup_steps": warmup,
        "steps": steps,
        "timing": "interleaved rounds",
        "flush_denormal": flush,
        "subnormal_softmax_share": subnormal,
    }
    if modes == ["plain"]:
        return {"modes": results, **common, "device": str(device), "torch_threads": torch.get_num_threads()}
    return {
        "modes": results,
        **common,
        "topk": k,
        "temperature": temperature,
        "alpha": alpha,
        "optimizer": "AdamW(lr=1e-5)",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "lifetime_peak_rss_bytes": lifetime_peak_rss_bytes(),
        "student_parameters": sum(p.numel() for p in student.parameters()),
    }


if __name__ == "__main__":
    raise SystemExit(worker_main(run))
