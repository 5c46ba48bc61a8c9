"""What per-row activation scales cost the dynamic-int8 decoder (``llmdiet.quantize.per_row_int8``), and what they buy.

    python bench/per_row_int8.py --shapes flan-t5-small flan-t5-large --batches 1 16 \
        --out bench/results/per-row-int8.json

One random-init flan-T5 shape at a time (``llmdiet.shapes``), quantized once by ``llmdiet quantize --method
dynamic-int8``'s code (per-tensor int8 weights, fbgemm), decoded by llmdiet's static-cache decoder, greedy, exactly
40 new tokens from 40-token sources. The two activation schemes share the packed weights and are timed alternately
in ``--rounds`` rounds (order rotating); per round the ratio per-row / per-batch seconds, reported as median and
min-max. Beside the timings, the batch-independence each scheme gives: the share of rows whose output ids at batch
B equal the same sentence decoded alone (batch 1).
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["flan-t5-small", "flan-t5-large"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from bench.run import write_side_study
    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
    from llmdiet.quantize.per_row_int8 import use_activation_scales
    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8
    from llmdiet.shapes import random_flan_t5

    rows = []
    for shape in args.shapes:
        per_batch = quantize_dynamic_int8(random_flan_t5(shape).eval(), activation_scales="per_batch")
        per_row = use_activation_scales(copy.deepcopy(per_batch), "per_row")
        decoders = {"per_batch": StaticCacheT5Decoder(per_batch), "per_row": StaticCacheT5Decoder(per_row)}
        for batch in args.batches:
            ids = torch.randint(5, 30000, (batch, 40), generator=torch.Generator().manual_seed(batch))
            ids[:, -1] = 1
            mask = torch.ones_like(ids)
            times: dict[str, list[float]] = {name: [] for name in decoders}
            same_alone = {}
            with torch.inference_mode():
                for name, decoder in decoders.items():
                    batched = decoder.generate(ids, mask, NEW_TOKENS, NEW_TOKENS)  # warm-up, and the batch's ids
                    alone = [
                        decoder.generate(ids[i : i + 1], mask[i : i + 1], NEW_TOKENS, NEW_TOKENS) for i in range(batch)
                    ]
                    same_alone[name] = sum(torch.equal(batched[i : i + 1], alone[i]) for i in range(batch)) / batch
                names = list(decoders)
                for round_ in range(args.rounds):
                    for name in names[round_ % 2 :] + names[: round_ % 2]:
                        start = time.perf_counter()
                        decoders[name].generate(ids, mask, NEW_TOKENS, NEW_TOKENS)
                        times[name].append(time.perf_counter() - start)
            ratios = [r / b for r, b in zip(times["per_row"], times["per_batch"])]
            row = {
                "shape": shape,
                "batch_size": batch,
                "per_batch_median_s": statistics.median(times["per_batch"]),
                "per_row_median_s": statistics.median(times["per_row"]),
                "per_row_over_per_batch": {
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                    "values": ratios,
                },
                "rows_identical_to_alone": same_alone,
            }
            rows.append(row)
            print(json.dumps(row))
    out = args.out or "bench/results/per-row-int8.json"
    write_side_study("bench/per_row_int8.py", argv, {"rows": rows, "new_tokens": NEW_TOKENS}, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
