"""Pruned flan-T5 shapes on CPU: is a width-pruned model faster, and does unstructured sparsity help at all?

    python bench/pruned_shapes.py [--shape flan-t5-large] [--ffn_sparsity 0.5] [--head_sparsity 0.25] [--rounds 3]
    # -> bench/results/pruned-shapes-<shape>.json (BENCHMARKS.md shows it)

On an architecture-exact random-init shape (``llmdiet.shapes``; speed does not depend on weight values):

1. ``llmdiet prune --method width`` (calibrated on demo training rows) makes the smaller **dense** model
   (``d_ff`` and ``num_heads`` cut), and ``llmdiet prune --method magnitude --sparsity 0.5`` a same-shape model
   with 50% real zeros; ``llmdiet quantize`` makes dynamic-int8 and CTranslate2 int8 artifacts of the unpruned
   and the width-pruned model. All through the commands users run.
2. **Interleaved rounds** (``bench/rounds.py``: two engine processes, every path runs the same 40-token sources in
   every round, the order rotating): dynamic-int8 and CTranslate2 int8 of both models at batch 1 and 16, and
   torch fp32 of the unpruned, the width-pruned and the 50%-zero model at batch 16. Each ratio (pruned / unpruned
   tokens/s) is taken inside a round; median and min-max reported, "faster" only when the smallest round ratio is
   above 1, "slower" when the largest is below 1, "within noise" otherwise.
3. **Sparse kernels on this CPU**: one of the shape's gated-FFN matrices (``wi_0``) with 50% unstructured zeros
   and 2:4 zeros, multiplied as a dense tensor, as ``torch.sparse`` CSR, and through
   ``torch.sparse.to_sparse_semi_structured`` (CUDA only: the error is recorded), at 1 and 640 input rows
   (batch 1 and batch 16 x 40 tokens), median of ``--matmul_repeats`` timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.jobs import job_environment, run_job  # noqa: E402

TOKENS = 40


def _prune(model_dir: Path, out: Path, method_argv: list[str]) -> dict:
    """``llmdiet prune`` in a fresh process (the exact command is recorded)."""
    from llmdiet.demo import DEMO_EN_FR

    argv = ["--model", str(model_dir), *method_argv, "--output_dir", str(out), "--overwrite_output_dir"]
    argv += ["--calibration_file", str(DEMO_EN_FR), "--max_calibration_samples", "32"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmdiet.cli", "prune", *argv], check=True, env=job_environment(), cwd=REPO)
    report = json.loads((out / "llmdiet_prune.json").read_text())
    return {
        "dir": str(out),
        "command": "llmdiet prune " + " ".join(argv),
        "build_s": time.perf_counter() - start,
        **{k: report.get(k) for k in ("method", "settings", "parameters", "dense_bytes", "sparse_bytes", "d_ff")},
        "num_heads": report.get("num_heads"),
        "zeros": report["sparsity"]["overall"],
    }


def _quantize(model_dir: str, method: str, out: Path, tokenizer_dir: Path) -> dict:
    spec = {"kind": "quantize", "method": method, "model": model_dir, "out": str(out), "device": "cpu"}
    result = run_job("bench.artifacts", {**spec, "tokenizer_dir": str(tokenizer_dir)}, 3600)
    if "error" in result:
        raise RuntimeError(f"llmdiet quantize {method} {model_dir}: {result['error']}")
    return result


def _round_ratios(values: dict, pruned: str, base: str) -> dict:
    ratios = [p / b for p, b in zip(values[pruned]["values"], values[base]["values"])]
    low, high = min(ratios), max(ratios)
    verdict = "faster" if low > 1 else "slower" if high < 1 else "within noise"
    if len(ratios) < 3:
        verdict = f"no verdict ({len(ratios)} round(s); 3 or more decide)"
    return {"median": statistics.median(ratios), "min": low, "max": high, "verdict": verdict}


def sparse_matmuls(shape: str, repeats: int, tokenizer_dir: Path) -> dict:
    """Dense vs torch.sparse CSR vs semi-structured 2:4 for one wi_0 matrix of ``shape`` on this CPU."""
    import torch

    from bench.workload import build_model, load_tokenizer
    from llmdiet.prune.unstructured import _zero_lowest_per_row, _zero_n_of_m

    torch.manual_seed(0)
    weight = (
        build_model(shape, load_tokenizer(tokenizer_dir))
        .encoder.block[0]
        .layer[1]
        .DenseReluDense.wi_0.weight.detach()
        .clone()
    )
    patterns = {"50% unstructured": weight.clone(), "2:4": weight.clone()}
    _zero_lowest_per_row(patterns["50% unstructured"], weight.abs(), 0.5)
    _zero_n_of_m(patterns["2:4"], weight.abs(), 2, 4)
    out: dict = {"matrix": f"encoder.block.0 wi_0 {list(weight.shape)}", "repeats": repeats, "rows": {}}
    for rows in (1, 16 * TOKENS):
        x = torch.randn(rows, weight.shape[1])

        def timed(fn) -> float:
            fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        entry: dict = {"dense_ms": 1000 * timed(lambda x=x: torch.nn.functional.linear(x, weight))}
        for name, w in patterns.items():
            csr = w.to_sparse_csr()
            entry[name] = {
                "zeros": float((w == 0).float().mean()),
                "dense_storage_ms": 1000 * timed(lambda w=w, x=x: torch.nn.functional.linear(x, w)),
                "csr_ms": 1000 * timed(lambda csr=csr, x=x: torch.sparse.mm(csr, x.t())),
            }
            entry[name]["csr_vs_dense"] = entry["dense_ms"] / entry[name]["csr_ms"]
        try:
            torch.sparse.to_sparse_semi_structured(patterns["2:4"].half())
            entry["semi_structured"] = "converted (unexpected on CPU)"
        except Exception as err:  # noqa: BLE001 - the message is the measurement
            entry["semi_structured"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        out["rows"][str(rows)] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python bench/pruned_shapes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="flan-t5-large", help="Architecture-exact shape (llmdiet/shapes.py).")
    parser.add_argument("--ffn_sparsity", type=float, default=0.5, help="Width pruning: FFN neurons removed.")
    parser.add_argument("--head_sparsity", type=float, default=0.25, help="Width pruning: heads removed.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (>= 1).")
    parser.add_argument("--batch1_sentences", type=int, default=2, help="Sentences per round at batch 1.")
    parser.add_argument("--batch16_sentences", type=int, default=16, help="Sentences per round at batch 16.")
    parser.add_argument("--matmul_repeats", type=int, default=20, help="Timings per sparse-kernel measurement.")
    parser.add_argument(
        "--work_dir", default=None, help="Where models are built and kept (default: a temporary directory, removed)."
    )
    parser.add_argument("--out", default=None, help="Result file (default bench/results/pruned-shapes-<shape>.json).")
    args = parser.parse_args(argv)
    for name in ("rounds", "batch1_sentences", "batch16_sentences", "matmul_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    for name in ("ffn_sparsity", "head_sparsity"):
        if not 0.0 <= getattr(args, name) < 1.0:
            parser.error(f"--{name} must be in [0, 1)")

    if args.work_dir:
        return _run(args, argv, Path(args.work_dir))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="llmdiet-pruned-shapes-") as tmp:  # ~12 GB for flan-t5-large: removed
        return _run(args, argv, Path(tmp))


def _run(args, argv: list[str], work: Path) -> int:
    """Build the models under ``work``, time them, write the results file."""
    from bench import rounds
    from bench.run import cpu_flags
    from llmdiet.provenance import provenance

    tokenizer_dir = work / "tokenizer"
    started = time.perf_counter()
    base = run_job("bench.artifacts", {"kind": "random", "shape": args.shape, "out": str(work / args.shape),
                                       "tokenizer_dir": str(tokenizer_dir)}, 3600)  # fmt: skip
    if "error" in base:
        raise RuntimeError(base["error"])
    width_argv = ["--method", "width", "--ffn_sparsity", str(args.ffn_sparsity)]
    width_argv += ["--head_sparsity", str(args.head_sparsity)]
    models = {
        "": base,
        "width": _prune(Path(base["dir"]), work / "width", width_argv),
        "magnitude-50": _prune(
            Path(base["dir"]), work / "magnitude-50", ["--method", "magnitude", "--sparsity", "0.5"]
        ),
    }
    dirs = {"torch-fp32": base["dir"], "torch-fp32:width": models["width"]["dir"]}
    dirs["torch-fp32:magnitude-50"] = models["magnitude-50"]["dir"]
    artifacts = {}
    for variant in ("", "width"):
        suffix = f":{variant}" if variant else ""
        for method, path in (("dynamic-int8", "dynamic-int8"), ("ct2-int8", "ct2-direct")):
            built = _quantize(models[variant]["dir"], method, work / f"{variant or 'base'}-{method}", tokenizer_dir)
            artifacts[path + suffix] = {k: built.get(k) for k in ("dir", "disk_bytes", "command", "build_s")}
            dirs[path + suffix] = built["dir"]
    spec = {
        "shape": args.shape,
        "tokenizer_dir": str(tokenizer_dir),
        "rounds": args.rounds,
        "source_tokens": TOKENS,
        "new_tokens": TOKENS,
        "dirs": dirs,
        "paths": {
            "1": ["ct2-direct", "ct2-direct:width", "dynamic-int8", "dynamic-int8:width"],
            "16": [
                "ct2-direct",
                "ct2-direct:width",
                "dynamic-int8",
                "dynamic-int8:width",
                "torch-fp32",
                "torch-fp32:width",
                "torch-fp32:magnitude-50",
            ],
        },  # fmt: skip
        "sentences": {"1": args.batch1_sentences, "16": args.batch16_sentences},
    }
    timed = rounds.run(spec)
    comparisons: dict = {}
    for batch, entry in timed["by_batch"].items():
        values = entry["tokens_per_s"]
        for path in values:
            if ":" in path:
                comparisons[f"{path} vs {path.split(':')[0]}, batch {batch}"] = _round_ratios(
                    values, path, path.split(":")[0]
                )
    record = {
        "shape": args.shape,
        "pruned": {name: info for name, info in models.items() if name},
        "unpruned": {k: base[k] for k in ("dir", "parameters", "disk_bytes") if k in base},
        "artifacts": artifacts,
        "rounds": timed,
        "pruned_vs_unpruned": comparisons,
        "sparse_kernels": sparse_matmuls(args.shape, args.matmul_repeats, tokenizer_dir),
        "total_s": time.perf_counter() - started,
        "provenance": provenance(0, ["python", "bench/pruned_shapes.py", *argv]),
        "cpu_flags": cpu_flags(),
    }
    out = Path(args.out or REPO / "bench" / "results" / f"pruned-shapes-{args.shape}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    print(json.dumps({"pruned_vs_unpruned": comparisons}, indent=1))
    print("wrote", out, f"({record['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
