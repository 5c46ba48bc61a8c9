"""llmdiet's batched, length-sorted generation against a one-sentence-at-a-time loop.

Worker spec (see ``bench/jobs.py``)::

    {"backend": "torch-fp32", "model_dir": DIR, "tokenizer_dir": DIR, "device": "cpu",
     "num_sentences": 64, "batch_size": 16, "new_tokens": 40, "min_source_tokens": 10, "max_source_tokens": 60}

The same ``num_sentences`` prefixed sources, whose lengths spread over 10 to 60 tokens in a mixed
order (``bench.workload.varied_length_sources``), are translated three ways by the same loaded model,
greedy with exactly ``new_tokens`` new tokens each:

* ``batched-sorted``: :func:`llmdiet.evaluation.generation.generate_all` with the ``llmdiet eval`` defaults
  (batch 16, longest first, one warm-up batch not timed);
* ``batched-unsorted``: the same with ``sort_by_length=False`` (shows what sorting adds);
* ``one-at-a-time``: a plain loop ``tokenizer([s]) -> model.generate -> decode`` per sentence, the
  way a first script (and the reference study) evaluates; its first sentence is run once as warm-up.
"""

from __future__ import annotations

import time

from .jobs import worker_main


def one_at_a_time(model, tokenizer, sources: list[str], new_tokens: int, device) -> dict:
    import torch

    def translate(source: str) -> int:
        enc = tokenizer([source], return_tensors="pt").to(device)
        out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=1, do_sample=False)
        tokenizer.decode(out[0], skip_special_tokens=True)
        return out.shape[1] - 1  # the decoder start token is not generated

    with torch.inference_mode():
        translate(sources[0])  # warm-up, not timed
        start = time.perf_counter()
        tokens = sum(translate(s) for s in sources)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "sentences_per_s": len(sources) / wall,
        "tokens_per_s": tokens / wall,
        "generated_tokens": tokens,
        "num_sentences": len(sources),
        "batch_size": 1,
    }


def run(spec: dict) -> dict:
    import torch

    from llmdiet.engines import GenerationSettings, load_backend
    from llmdiet.evaluation.generation import generate_all
    from llmdiet.provenance import available_cores

    from .workload import load_tokenizer, token_count, varied_length_sources

    torch.set_num_threads(spec.get("threads") or available_cores())
    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    n, new = spec.get("num_sentences", 64), spec.get("new_tokens", 40)
    sources = varied_length_sources(tokenizer, n, spec.get("min_source_tokens", 10), spec.get("max_source_tokens", 60))
    backend = load_backend(spec.get("backend", "torch-fp32"), spec["model_dir"], device=spec.get("device", "cpu"))
    if not hasattr(backend, "model"):
        raise ValueError(f"backend {backend.name} has no transformers model to run the one-at-a-time loop with")
    settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, num_beams=1)
    batch_size = spec.get("batch_size", 16)
    keep = (
        "wall_s",
        "sentences_per_s",
        "tokens_per_s",
        "generated_tokens",
        "num_sentences",
        "batch_size",
        "num_batches",
        "latency_p50_s",
        "latency_p95_s",
        "sorted_by",
        "warmup_batches",
    )
    modes = {}
    for name, sort in (("batched-sorted", True), ("batched-unsorted", False)):
        timing = generate_all(backend, sources, settings, batch_size, sort_by_length=sort, progress=False).timing_dict()
        modes[name] = {k: timing[k] for k in keep}
    modes["one-at-a-time"] = one_at_a_time(backend.model, backend.tokenizer, sources, new, backend.device)
    loop = modes["one-at-a-time"]["sentences_per_s"]
    for mode in modes.values():
        mode["speedup_vs_loop"] = mode["sentences_per_s"] / loop
    lengths = [token_count(tokenizer, s) for s in sources]
    return {
        "backend": backend.name,
        "describe": backend.describe(),
        "modes": modes,
        "new_tokens": new,
        "source_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)},
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    raise SystemExit(worker_main(run))
