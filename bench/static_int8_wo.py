"""What keeping T5's feed-forward output (``wo``) in float costs the ONNX static int8 backend.

    python bench/static_int8_wo.py [--shape flan-t5-small] [--sentences 64]

Builds the architecture-exact random-init shape, quantizes it with ``llmdiet quantize --method onnx-static-int8``
twice (the T5-safe default, ``--static_keep_float wo``, and every weight-bearing node in int8,
``--static_keep_float none``), and times both through the ``llmdiet eval`` generation path (40 new tokens per
sentence, forced) at batch 16 and batch 1, in this one process, alternating the two artifacts. Writes
``bench/results/static-int8-wo-<shape>.json``: size, sentences/s, the ratio, the CPU and its flags.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import argparse

    import torch

    from bench.workload import fixed_length_sources, load_tokenizer, save_random_model
    from llmdiet.demo import DEMO_EN_FR
    from llmdiet.engines import GenerationSettings, load_backend
    from llmdiet.evaluation.generation import generate_all
    from llmdiet.provenance import provenance
    from llmdiet.quantize.job import main as quantize_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="flan-t5-small")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--work", default=str(REPO / "runs" / "bench-static-int8"))
    args = parser.parse_args()
    work = Path(args.work)
    tokenizer = load_tokenizer()
    model_dir = save_random_model(args.shape, work / args.shape, tokenizer)
    variants = {"keep wo float (default)": ["wo"], "all int8 (--static_keep_float none)": ["none"]}
    dirs = {}
    for name, keep in variants.items():
        out = work / f"{args.shape}-static-{keep[0]}"
        code = quantize_main(
            [
                "--model",
                str(model_dir),
                "--method",
                "onnx-static-int8",
                "--output_dir",
                str(out),
                "--overwrite_output_dir",
                "--calibration_file",
                str(DEMO_EN_FR),
                "--max_calibration_samples",
                "32",
                "--calibration_max_new_tokens",
                "40",
                "--static_keep_float",
                *keep,
            ]
        )
        if code:
            return code
        dirs[name] = out
    settings = GenerationSettings(max_new_tokens=40, min_new_tokens=40)
    sources = fixed_length_sources(tokenizer, args.sentences)
    backends = {name: load_backend("onnx-static-int8", str(d)) for name, d in dirs.items()}
    rows = {
        name: {"disk_bytes": sum(f.stat().st_size for f in d.rglob("*") if f.is_file())} for name, d in dirs.items()
    }
    for batch, n in ((16, args.sentences), (1, max(8, args.sentences // 4))):
        for _rep in range(2):  # alternate the variants, keep the faster of two runs of each
            for name, backend in backends.items():
                result = generate_all(backend, sources[:n], settings, batch, warmup_batches=1, progress=False)
                key = f"batch{batch}_sentences_per_s"
                rows[name][key] = max(rows[name].get(key, 0.0), result.timing_dict()["sentences_per_s"])
    safe, unsafe = rows["keep wo float (default)"], rows["all int8 (--static_keep_float none)"]
    summary = {
        "shape": args.shape,
        "rows": rows,
        "torch_threads": torch.get_num_threads(),
        "safe_vs_all_int8": {k: safe[k] / unsafe[k] for k in safe if k.endswith("_per_s")},
        "size_vs_all_int8": safe["disk_bytes"] / unsafe["disk_bytes"],
        "provenance": provenance(0, [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
    }
    path = REPO / "bench" / "results" / f"static-int8-wo-{args.shape}.json"
    path.write_text(json.dumps(summary, indent=2))
    print("| variant | size MB | batch 16 sent/s | batch 1 sent/s |\n|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['disk_bytes'] / 1e6:.1f} | {r['batch16_sentences_per_s']:.2f} | {r['batch1_sentences_per_s']:.2f} |"
        )
    print(f"T5-safe / all-int8: {summary['safe_vs_all_int8']}, size {summary['size_vs_all_int8']:.2f}x\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
