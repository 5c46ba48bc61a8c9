"""CTranslate2's best CPU settings, measured: threads layout and compute type, per shape and batch size.

    python bench/ct2_settings.py --shapes flan-t5-small flan-t5-large --out bench/results/ct2-settings.json

For each random-init flan-T5 shape (``llmdiet.shapes``) converted with ``llmdiet quantize --method ct2-int8``,
times ``Translator.translate_batch`` (greedy, exactly 40 new tokens from 40-token sources, one warm-up, median
of 3) under each setting, each in a fresh process: one worker with all cores as intra-op threads, one worker
with one thread, and ``inter_threads`` = cores workers of one thread each with the batch split between them
(``max_batch_size`` = batch / workers). ``compute_type``: ``int8`` (on CPU the same kernels as ``int8_float32``)
is the only int8 type CTranslate2 supports on CPU here (``get_supported_compute_types`` is recorded). The
fastest setting per batch size is what ``bench/generation.py``'s ``ct2-direct`` reference and llmdiet's
``ct2-int8`` backend use.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def time_setting(model_dir: str, batch: int, intra: int, inter: int, rounds: int = 3) -> dict:
    import ctranslate2

    translator = ctranslate2.Translator(
        model_dir, device="cpu", compute_type="int8", intra_threads=intra, inter_threads=inter
    )
    vocab = json.loads((Path(model_dir) / "shared_vocabulary.json").read_text())
    import random

    rng = random.Random(0)
    sources = [[vocab[rng.randrange(5, len(vocab) - 100)] for _ in range(39)] + ["</s>"] for _ in range(batch)]
    split = -(-batch // inter) if inter > 1 else 0
    options = dict(
        beam_size=1,
        max_batch_size=split,
        max_decoding_length=40,
        min_decoding_length=40,
        max_input_length=0,
        return_end_token=True,
    )
    translator.translate_batch(sources, **options)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        results = translator.translate_batch(sources, **options)
        times.append(time.perf_counter() - start)
    tokens = sum(len(r.hypotheses[0]) for r in results)
    median = statistics.median(times)
    return {
        "batch_size": batch,
        "intra_threads": intra,
        "inter_threads": inter,
        "max_batch_size": split,
        "median_s": median,
        "times_s": times,
        "tokens_per_s": tokens / median,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["flan-t5-small", "flan-t5-large"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--out", default="bench/results/ct2-settings.json")
    parser.add_argument("--_worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        model_dir, batch, intra, inter, rounds = args._worker
        print(json.dumps(time_setting(model_dir, int(batch), int(intra), int(inter), int(rounds))))
        return 0

    import ctranslate2

    from bench.run import cpu_flags
    from llmdiet.demo import build_demo_tokenizer
    from llmdiet.provenance import available_cores, provenance
    from llmdiet.quantize import quantize_model
    from llmdiet.shapes import random_flan_t5

    cores = available_cores()
    layouts = [(cores, 1), (1, 1), (1, cores)]  # (intra, inter)
    tokenizer = build_demo_tokenizer()
    out = {
        "command": " ".join(["python", "bench/ct2_settings.py", *(argv or sys.argv[1:])]),
        "provenance": provenance(seed=0),
        "cpu_flags": cpu_flags(),
        "cores": cores,
        "supported_compute_types_cpu": sorted(ctranslate2.get_supported_compute_types("cpu")),
        "shapes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            hf_dir, ct2_dir = Path(tmp) / shape, Path(tmp) / f"{shape}-ct2"
            random_flan_t5(shape).save_pretrained(hf_dir)
            tokenizer.save_pretrained(hf_dir)
            quantize_model(str(hf_dir), "ct2-int8", ct2_dir)
            rows = []
            for batch in args.batches:
                for intra, inter in layouts:
                    if inter > batch:
                        continue
                    done = subprocess.run(
                        [sys.executable, __file__, "--_worker", str(ct2_dir), str(batch), str(intra), str(inter), "3"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    print(
                        shape,
                        row["batch_size"],
                        f"intra {intra} inter {inter}",
                        f"{row['tokens_per_s']:.1f} tok/s",
                        flush=True,
                    )
                    rows.append(row)
            best = {
                b: max((r for r in rows if r["batch_size"] == b), key=lambda r: r["tokens_per_s"]) for b in args.batches
            }
            out["shapes"][shape] = {
                "rows": rows,
                "best": {str(b): {k: v for k, v in r.items() if k != "times_s"} for b, r in best.items()},
            }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
