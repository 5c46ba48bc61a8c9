"""Memory of one engine alone in a fresh process: the bare runtime, the loaded model, the peak while generating.

Run by ``bench/rounds.py`` (spec ``"memory": {"batch": 16}``) for the teacher shape, one child process per engine:

* ``ct2``: imports only ``ctranslate2`` (never torch or transformers: checked and recorded), loads the int8 model
  with one thread layout, translates one batch of pre-tokenised sentences;
* ``dynamic-int8``: imports llmdiet's engines (torch, transformers), loads the artifact, translates the same batch
  through the static decoder.

Recorded per engine: RSS after the imports (*runtime*), after loading, the peak while generating (polled) and the
lifetime peak (``getrusage``), so that *peak - runtime* is the model and its generation alone. For dynamic-int8 the
generation overhead (peak while generating - RSS after loading) is set beside what the decoder must hold: the
cross-attention and self-attention KV caches and the float32 logits of a step, computed from the shapes.
"""

from __future__ import annotations

import json
import subprocess
import sys

RESULT = "@@memory-result "


def _child(spec: dict) -> dict:
    from llmdiet.evaluation.generation import PeakRSSMonitor, lifetime_peak_rss_bytes
    from llmdiet.provenance import rss_bytes

    runtime = rss_bytes()
    batch, new = spec["batch"], spec["new_tokens"]
    if spec["engine"] == "ct2":
        import ctranslate2

        runtime = rss_bytes()
        translator = ctranslate2.Translator(
            spec["dir"], device="cpu", compute_type="int8", intra_threads=spec["cores"], inter_threads=1
        )
        loaded, load_peak = rss_bytes(), lifetime_peak_rss_bytes()
        with PeakRSSMonitor() as monitor:
            translator.translate_batch(
                spec["tokens"][:batch], beam_size=1, max_decoding_length=new, min_decoding_length=new
            )
        out: dict = {}
    else:
        import torch

        from llmdiet.engines import GenerationSettings, load_backend

        torch.set_num_threads(spec["cores"])
        runtime = rss_bytes()
        backend = load_backend("dynamic-int8", spec["dir"], device="cpu")
        loaded, load_peak = rss_bytes(), lifetime_peak_rss_bytes()
        settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, num_beams=1)
        with PeakRSSMonitor() as monitor:
            backend.translate(spec["sources"][:batch], settings)
        config = backend.model.config
        per_position = config.num_decoder_layers * 2 * batch * config.num_heads * config.d_kv * 4  # fp32 K and V
        source_len = len(backend.tokenizer(spec["sources"][0])["input_ids"])
        out = {
            "decoder_capacity_tokens": min(new, 64),
            "source_tokens": source_len,
            "expected_bytes": {
                "cross_attention_kv": per_position * source_len,
                "self_attention_kv": per_position * min(new, 64),
                "step_logits_fp32": batch * config.vocab_size * 4,
            },
        }
    peak = monitor.peak
    out.update(
        {
            "engine": spec["engine"],
            "batch": batch,
            "new_tokens": new,
            "runtime_rss_bytes": runtime,
            "rss_after_load_bytes": loaded,
            "load_peak_rss_bytes": load_peak,
            "generation_peak_rss_bytes": peak,
            "lifetime_peak_rss_bytes": lifetime_peak_rss_bytes(),
            "peak_minus_runtime_bytes": max(peak, load_peak or 0) - runtime,
            "generation_overhead_bytes": peak - loaded,
            "torch_imported": "torch" in sys.modules,
            "transformers_imported": "transformers" in sys.modules,
        }
    )
    if "expected_bytes" in out:
        out["unexplained_generation_bytes"] = out["generation_overhead_bytes"] - sum(out["expected_bytes"].values())
    return out


def measure(spec: dict) -> dict:
    """Run one engine's memory child (a fresh process) and return its record (``{"error": ...}`` on failure)."""
    from .jobs import REPO_ROOT, job_environment

    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory_paths", "--child"],
        input=json.dumps(spec),
        cwd=REPO_ROOT,
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    return {"engine": spec["engine"], "error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        print(RESULT + json.dumps(_child(json.loads(sys.stdin.read()))), flush=True)
        raise SystemExit(0)
    raise SystemExit("usage: python -m bench.memory_paths --child < SPEC.json (run by bench/rounds.py)")
