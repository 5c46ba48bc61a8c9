"""Two ideas for the dynamic-int8 static decoder, measured in interleaved rounds on one architecture-exact shape:

    python bench/batch_layouts.py [--shape flan-t5-large] [--rounds 5]   # -> bench/results/batch-layouts-<shape>.json

* **fusion**: q/k/v and wi_0/wi_1 as one GEMM each (``llmdiet/engines/fused_linear.py``, on by default) against
  the separate layers, at batch 1 and 16, with the number of identical output rows (exact fusion: all of them);
* **two workers**: a batch of 16 split into two halves decoded by two threads at one intra-op thread each,
  against the whole batch on two intra-op threads (int8 activation scales are per tensor, so the halves' outputs
  may differ from the whole batch's: the identical rows are counted).

Each round runs every layout once in the same order (fixed 40 output tokens); the median and min-max of the
per-round ratios are recorded. Adopted only what wins: see bench/notes.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENS = 40


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(REPO))
    import argparse

    parser = argparse.ArgumentParser(prog="python bench/batch_layouts.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="flan-t5-large", help="Architecture-exact shape (llmdiet/shapes.py).")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (>= 1).")
    parser.add_argument("--out", default=None, help="Result file (default bench/results/batch-layouts-<shape>.json).")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    import torch

    from bench.run import cpu_flags
    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
    from llmdiet.provenance import provenance
    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8
    from llmdiet.shapes import random_flan_t5

    torch.set_num_threads(2)
    separate = StaticCacheT5Decoder(quantize_dynamic_int8(random_flan_t5(args.shape)), fuse=False)
    fused = StaticCacheT5Decoder(quantize_dynamic_int8(random_flan_t5(args.shape)), fuse=True)
    generator = torch.Generator().manual_seed(0)
    batches = {b: torch.randint(2, 32000, (b, 24), generator=generator) for b in (1, 16)}
    pool = ThreadPoolExecutor(2)

    def half(ids):
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
        with torch.inference_mode():
            return fused.generate(ids, torch.ones_like(ids), TOKENS, TOKENS)

    def two_workers(ids):
        h = ids.shape[0] // 2
        return torch.cat(list(pool.map(half, [ids[:h], ids[h:]])))

    layouts = {
        "separate-b1": lambda: separate.generate(batches[1], torch.ones_like(batches[1]), TOKENS, TOKENS),
        "fused-b1": lambda: fused.generate(batches[1], torch.ones_like(batches[1]), TOKENS, TOKENS),
        "separate-b16": lambda: separate.generate(batches[16], torch.ones_like(batches[16]), TOKENS, TOKENS),
        "fused-b16": lambda: fused.generate(batches[16], torch.ones_like(batches[16]), TOKENS, TOKENS),
        "two-workers-b16": lambda: two_workers(batches[16]),
    }
    seconds: dict[str, list[float]] = {name: [] for name in layouts}
    outputs: dict = {}
    for name, run in layouts.items():  # warm-up, outputs kept for the identity check
        outputs[name] = run()
    for _ in range(args.rounds):
        for name, run in layouts.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)

    def ratio(slow: str, fast: str) -> dict:
        ratios = [a / b for a, b in zip(seconds[slow], seconds[fast])]
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}

    def identical(a: str, b: str) -> int:
        return int((outputs[a] == outputs[b]).all(dim=1).sum())

    record = {
        "shape": args.shape,
        "backend": "dynamic-int8 (llmdiet static decoder)",
        "tokens": TOKENS,
        "rounds": args.rounds,
        "seconds": seconds,
        "speedup": {
            "fused vs separate, batch 1": ratio("separate-b1", "fused-b1"),
            "fused vs separate, batch 16": ratio("separate-b16", "fused-b16"),
            "two workers vs one batch (fused), batch 16": ratio("fused-b16", "two-workers-b16"),
        },
        "identical_rows": {
            "fused vs separate, batch 1": f"{identical('separate-b1', 'fused-b1')}/1",
            "fused vs separate, batch 16": f"{identical('separate-b16', 'fused-b16')}/16",
            "two workers vs one batch, batch 16": f"{identical('fused-b16', 'two-workers-b16')}/16",
        },
        "provenance": provenance(0, ["python", "bench/batch_layouts.py", *argv]),
        "cpu_flags": cpu_flags(),
    }
    out = Path(args.out or REPO / "bench" / "results" / f"batch-layouts-{args.shape}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("speedup", "identical_rows")}, indent=1))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
