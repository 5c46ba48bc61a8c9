"""Which int8 path of torch is fastest on this CPU: torch.ao dynamic int8 on the fbgemm (x86) or oneDNN engine, and
torchao int8 dynamic-activation/int8-weight, eager or under ``torch.compile``.

    python bench/int8_cpu_paths.py --shape flan-t5-small --batches 1 16 --out bench/results/int8-cpu-paths-flan-t5-small.json

One random-init flan-T5 shape (``llmdiet.shapes``), greedy, exactly 40 new tokens from 40-token sources, one
warm-up call, median of ``--rounds`` calls per variant and batch size, every variant in this one process:

* ``dynamic-int8 x86``: ``llmdiet quantize --method dynamic-int8``'s quantization (``torch.ao`` ``quantize_dynamic``,
  per-tensor) packed for the ``x86`` quantized engine (fbgemm kernels), decoded by llmdiet's static-cache decoder;
* ``dynamic-int8 onednn``: the same, packed for oneDNN (``torch.backends.quantized.engine = "onednn"``);
* ``torchao-int8 eager``: ``torchao`` ``Int8DynamicActivationInt8WeightConfig`` in bfloat16 (llmdiet's
  ``torchao-int8`` method), static-cache decoder;
* ``torchao-int8 compiled``: the same model with the fixed-shape decoding step of ``bench/static_decoding.py``
  under ``torch.compile`` (inductor lowers torchao's int8 matmuls); its first call, outside the timings, is
  recorded as ``compile_s``.

The ids of each variant are compared with ``dynamic-int8 x86`` (share equal; different int8 schemes round
differently, so this is a closeness figure, not a pass/fail).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NEW_TOKENS = 40


def variants(shape: str) -> dict:
    """name -> (decode(ids, mask) -> ids) for each int8 path; models are built once here."""
    import torch

    from bench.static_decoding import compiled_decoder
    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
    from llmdiet.quantize.gpu_int8 import quantize_torchao_int8
    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8
    from llmdiet.shapes import random_flan_t5

    base = random_flan_t5(shape).eval()
    out = {}
    for engine in ("x86", "onednn"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine  # weights are packed for the engine active at quantization time
        decoder = StaticCacheT5Decoder(quantize_dynamic_int8(copy.deepcopy(base)))
        out[f"dynamic-int8 {engine}"] = (
            engine,
            lambda ids, mask, d=decoder: d.generate(ids, mask, NEW_TOKENS, NEW_TOKENS),
        )
    torch.backends.quantized.engine = (
        "x86" if "x86" in torch.backends.quantized.supported_engines else torch.backends.quantized.engine
    )
    torchao_model = quantize_torchao_int8(copy.deepcopy(base))
    eager = StaticCacheT5Decoder(torchao_model)
    out["torchao-int8 eager"] = (None, lambda ids, mask: eager.generate(ids, mask, NEW_TOKENS, NEW_TOKENS))
    compiled = compiled_decoder(torchao_model, NEW_TOKENS)
    out["torchao-int8 compiled"] = (None, compiled)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="flan-t5-small")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from bench.run import write_side_study

    ways = variants(args.shape)
    rows = []
    for batch in args.batches:
        ids = torch.randint(5, 30000, (batch, 40), generator=torch.Generator().manual_seed(0))
        ids[:, -1] = 1
        mask = torch.ones_like(ids)
        outputs, first, times = {}, {}, {name: [] for name in ways}
        with torch.inference_mode():
            for name, (engine, fn) in ways.items():
                if engine:
                    torch.backends.quantized.engine = engine
                start = time.perf_counter()
                outputs[name] = fn(ids, mask)
                first[name] = time.perf_counter() - start
            for _ in range(args.rounds):
                for name, (engine, fn) in ways.items():
                    if engine:
                        torch.backends.quantized.engine = engine
                    start = time.perf_counter()
                    fn(ids, mask)
                    times[name].append(time.perf_counter() - start)
        reference = outputs[next(iter(ways))]
        for name in ways:
            median = statistics.median(times[name])
            row = {
                "variant": name,
                "batch_size": batch,
                "median_s": median,
                "times_s": times[name],
                "tokens_per_s": batch * NEW_TOKENS / median,
                "first_call_s": first[name],
                "compile_s": first[name] - median if "compiled" in name else None,
                "equal_ids_share_vs_first": float((outputs[name] == reference).float().mean()),
            }
            print(json.dumps({k: v for k, v in row.items() if k != "times_s"}), flush=True)
            rows.append(row)
    write_side_study(
        "bench/int8_cpu_paths.py",
        argv,
        {"shape": args.shape, "new_tokens": NEW_TOKENS, "rows": rows},
        args.out or f"bench/results/int8-cpu-paths-{args.shape}.json",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
