"""GPU measurements in one prepared script (``bench/gpu.sh`` runs it; under 8 minutes on an H100/H200).

    python bench/gpu.py                  # on a GPU machine -> bench/results/gpu-<date>.json
    python bench/gpu.py --dry_run        # on CPU: the same code on the demo's toy shape, tiny batches

Needs only torch and transformers (what a lent GPU image has) plus this checkout on ``PYTHONPATH``. On
architecture-exact random-init flan-T5 shapes (``llmdiet.shapes``), greedy, exactly ``--new_tokens`` tokens:

* bf16 **static decoder vs transformers' generate** on flan-t5-large at batch 1, 16, 128 and 512 (tokens/s, peak
  GPU memory);
* **torchao int8** (dynamic int8 activations, int8 weights) with the static decoder at the same batches, when
  torchao is importable;
* the **student eval**: 2,000 sentences through flan-t5-small in bf16 at batch 128 (goal < 10 s), and the
  **teacher eval**: 2,000 sentences through flan-t5-large in bf16 at batch 128 (goal < 30 s);
* speculative decoding (flan-t5-small drafting for flan-t5-large, bf16, batch 1) at controlled acceptance 0.7;
* **2:4 semi-structured sparsity**: flan-t5-large pruned 2:4 by |w| (``llmdiet.prune``'s N:M code) in bf16, its
  encoder/decoder Linear weights then swapped for ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt/CUTLASS
  sparse tensor cores), static decoder at batch 1, 16 and 128: tokens/s against the same 2:4 model on dense
  kernels, and the share of output tokens that agree (CPU dry run: the pruning runs, the sparse kernels are
  recorded as CUDA only).

CUDA graphs for the decoder step are not measured: llmdiet's static decoder attends over ``[:t+1]`` of its
buffers (shapes change every step), which a captured graph cannot replay; that needs a fixed-length masked step.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def time_decoding(model, decode: str, batch: int, source_len: int, new_tokens: int, device, repeats: int = 1) -> dict:
    """tokens/s of ``decode`` ('static' or 'generate') on random source ids, one warm-up call first."""
    import torch

    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder

    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, model.config.vocab_size, (batch, source_len), generator=generator).to(device)
    mask = torch.ones_like(ids)
    static = StaticCacheT5Decoder(model) if decode == "static" else None

    def once():
        if static is not None:
            return static.generate(ids, mask, new_tokens, new_tokens)
        return model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )

    once()
    _sync(device)
    _peak_reset(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = once()
    _sync(device)
    wall = (time.perf_counter() - start) / repeats
    generated = int(out.shape[0] * (out.shape[1] - 1))
    return {
        "batch": batch,
        "decoding": decode,
        "wall_s": wall,
        "tokens_per_s": generated / wall,
        "peak_gpu_bytes": _peak(device),
    }


def eval_wall(model, sentences: int, batch: int, source_len: int, new_tokens: int, device) -> dict:
    """Wall time of ``sentences`` sentences in batches of ``batch`` through the static decoder (one warm-up batch)."""
    import torch

    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder

    decoder = StaticCacheT5Decoder(model)
    ids = torch.randint(3, model.config.vocab_size, (batch, source_len)).to(device)
    mask = torch.ones_like(ids)
    decoder.generate(ids, mask, new_tokens, new_tokens)
    _sync(device)
    _peak_reset(device)
    start = time.perf_counter()
    done = 0
    while done < sentences:
        n = min(batch, sentences - done)
        decoder.generate(ids[:n], mask[:n], new_tokens, new_tokens)
        done += n
    _sync(device)
    return {
        "sentences": sentences,
        "batch": batch,
        "wall_s": time.perf_counter() - start,
        "peak_gpu_bytes": _peak(device),
    }


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(prog="python bench/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry_run", action="store_true", help="CPU, toy shapes, tiny batches: checks the script.")
    parser.add_argument("--new_tokens", type=int, default=40)
    parser.add_argument("--source_tokens", type=int, default=40)
    parser.add_argument("--out", default=None, help="Results file (default bench/results/gpu-<date>.json).")
    args = parser.parse_args(argv)

    import torch

    from llmdiet.provenance import provenance

    if args.dry_run:
        device, teacher_shape, student_shape = torch.device("cpu"), "tiny-teacher", "tiny-student"
        batches, eval_sentences = [1, 2], 8
    else:
        if not torch.cuda.is_available():
            print("bench/gpu.py: error: no CUDA device; use --dry_run to check the script on CPU", file=sys.stderr)
            return 2
        device, teacher_shape, student_shape = torch.device("cuda"), "flan-t5-large", "flan-t5-small"
        batches, eval_sentences = [1, 16, 128, 512], 2000

    def build(shape: str):
        if shape.startswith("tiny-"):
            from llmdiet.demo import build_tiny_t5

            return build_tiny_t5(shape.split("-")[1], 32128).eval()
        from llmdiet.compat import t5_as_in_4x
        from llmdiet.shapes import random_flan_t5

        return t5_as_in_4x(random_flan_t5(shape)).eval()

    started = time.perf_counter()
    record: dict = {"device": str(device), "dry_run": args.dry_run, "new_tokens": args.new_tokens}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    teacher = build(teacher_shape).to(device, torch.bfloat16)
    rows = []
    for batch in batches:
        for decode in ("static", "generate"):
            row = {"shape": teacher_shape, "dtype": "bfloat16"}
            try:
                row.update(time_decoding(teacher, decode, batch, args.source_tokens, args.new_tokens, device))
            except torch.cuda.OutOfMemoryError as err:  # batch 512 x generate's dynamic cache on a small GPU
                row.update({"batch": batch, "decoding": decode, "error": f"out of memory: {str(err)[:120]}"})
            rows.append(row)
            print(json.dumps(row))
    record["decoding"] = rows
    record["teacher_eval"] = {
        "shape": teacher_shape,
        **eval_wall(teacher, eval_sentences, min(128, batches[-1]), args.source_tokens, args.new_tokens, device),
    }
    print("teacher eval", record["teacher_eval"])
    student = build(student_shape).to(device, torch.bfloat16)
    record["student_eval"] = {
        "shape": student_shape,
        **eval_wall(student, eval_sentences, min(128, batches[-1]), args.source_tokens, args.new_tokens, device),
    }
    print("student eval", record["student_eval"])
    record["speculative"] = _speculative(teacher, student, args, device)
    print("speculative", record["speculative"])
    try:
        import copy

        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        int8 = copy.deepcopy(teacher)
        quantize_(int8, Int8DynamicActivationInt8WeightConfig())
        record["torchao_int8"] = [
            {"shape": teacher_shape, **time_decoding(int8, "static", b, args.source_tokens, args.new_tokens, device)}
            for b in batches
        ]
    except ImportError as err:
        record["torchao_int8"] = {"skipped": f"torchao not installed ({err})"}
    record["semi_structured_2_4"] = _semi_structured(teacher, teacher_shape, batches[:3], args, device)
    print("2:4", record["semi_structured_2_4"])
    record["cuda_graphs"] = "not measured: the static decoder's per-step shapes change (see the module docstring)"
    record["total_s"] = time.perf_counter() - started
    record["provenance"] = provenance(0, ["python", "bench/gpu.py", *(argv or sys.argv[1:])])
    stamp = _dt.date.today().isoformat()
    out = Path(args.out or REPO / "bench" / "results" / f"gpu-{'dry-run' if args.dry_run else stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    print("wrote", out, f"({record['total_s']:.0f} s)")
    return 0


def _semi_structured(teacher, shape: str, batches: list[int], args, device) -> dict:
    """2:4-pruned teacher on dense kernels vs on semi-structured sparse kernels (same weights)."""
    import copy

    import torch

    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
    from llmdiet.prune.unstructured import _zero_n_of_m, prunable_linears

    model = copy.deepcopy(teacher)
    with torch.no_grad():
        for module in prunable_linears(model).values():
            _zero_n_of_m(module.weight, module.weight.abs().float(), 2, 4)
    out: dict = {"shape": shape, "dtype": str(next(model.parameters()).dtype), "pattern": "2:4 by |w|"}
    out["dense_kernels"] = [
        time_decoding(model, "static", b, args.source_tokens, args.new_tokens, device) for b in batches
    ]
    ids = torch.randint(3, model.config.vocab_size, (4, args.source_tokens)).to(device)
    reference = StaticCacheT5Decoder(model).generate(ids, torch.ones_like(ids), args.new_tokens, args.new_tokens)
    try:
        from torch.sparse import to_sparse_semi_structured

        with torch.no_grad():
            for module in prunable_linears(model).values():
                module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight), requires_grad=False)
        out["sparse_kernels"] = [
            time_decoding(model, "static", b, args.source_tokens, args.new_tokens, device) for b in batches
        ]
        sparse = StaticCacheT5Decoder(model).generate(ids, torch.ones_like(ids), args.new_tokens, args.new_tokens)
        out["tokens_agreeing"] = float((sparse == reference).float().mean())
        out["speedup"] = {
            str(d["batch"]): s["tokens_per_s"] / d["tokens_per_s"]
            for d, s in zip(out["dense_kernels"], out["sparse_kernels"])
        }
    except Exception as err:  # noqa: BLE001 - CPU (dry run) or a GPU/driver without the kernels: recorded
        out["sparse_kernels"] = f"not run: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return out


def _speculative(teacher, student, args, device) -> dict:
    """Batch 1, each draft proposal accepted with probability 0.7 (as bench/rounds.py): real forward passes."""
    import torch

    from bench.rounds import Acceptance
    from llmdiet.engines.speculative import SpeculativeDecoder
    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder

    plain = StaticCacheT5Decoder(teacher)
    speculative = SpeculativeDecoder(plain, StaticCacheT5Decoder(student))
    ids = torch.randint(3, teacher.config.vocab_size, (1, args.source_tokens)).to(device)
    mask = torch.ones_like(ids)
    acceptance = Acceptance(0.7, seed=0)

    timings = {}
    for name, run in (
        ("plain", lambda: plain.generate(ids, mask, args.new_tokens, args.new_tokens)),
        ("draft@0.7", lambda: speculative.generate(ids, mask, args.new_tokens, args.new_tokens, accept=acceptance)),
    ):
        run()
        _sync(device)
        start = time.perf_counter()
        for _ in range(3):
            run()
        _sync(device)
        timings[name] = args.new_tokens * 3 / (time.perf_counter() - start)
    return {
        "tokens_per_s": timings,
        "speedup": timings["draft@0.7"] / timings["plain"],
        **SpeculativeDecoder.summarize(speculative.stats),
    }


if __name__ == "__main__":
    sys.exit(main())
