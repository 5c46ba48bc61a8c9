"""The 2–8-bit sweep: BLEU of teacher vs student weights quantized with RTN and GPFQ.

For every model, method (``rtn``, ``gpfq``) and bit width, the float model is quantized with
:func:`llmdiet.quantize.lowbit.quantize_linears` (GPFQ calibrated on training rows with teacher forcing)
and scored on one eval set with the same batched generation and metrics as ``llmdiet eval``.
Each finished point is appended to ``OUT/points.jsonl`` at once, so a killed sweep resumes where
it stopped; ``OUT/bit_sweep.json`` (all points + provenance), ``OUT/bit_sweep.md`` and
``OUT/bleu_vs_bits.png`` / ``OUT/bleu_vs_packed_size.png`` are rewritten at the end.

    llmdiet bit-sweep --models google/flan-t5-large runs/distill --eval_set pgv-en-fr --max_eval_samples 500
    python recipes/bit_sweep.py --preset demo      # demo teacher vs demo student (run the distill demo first)
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llmdiet.config import ConfigError, check_range, parse_config, precheck
from llmdiet.constants import REFERENCE_PREFIX, REFERENCE_TEACHER
from llmdiet.data import read_parallel_file, tokenize_rows
from llmdiet.engines import GenerationSettings
from llmdiet.evaluation.eval_sets import resolve_eval_set
from llmdiet.languages import default_prefix
from llmdiet.modeling import load_seq2seq
from llmdiet.provenance import provenance

METHODS = ("rtn", "gpfq")  # llmdiet.quantize.lowbit.METHODS (kept here so that checking flags needs no torch)

logger = logging.getLogger(__name__)


@dataclass
class BitSweepArguments:
    models: list[str] = field(
        default_factory=lambda: [REFERENCE_TEACHER, "runs/distill"],
        metadata={"help": "Models to sweep (teacher first, then students): hub ids or directories."},
    )
    bits: list[int] = field(
        default_factory=lambda: [2, 3, 4, 5, 6, 8], metadata={"help": "Bit widths, each in [2, 8]."}
    )
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "rtn and/or gpfq."})
    eval_set: str = field(default="pgv-en-fr", metadata={"help": "Eval set name or local file (as in llmdiet eval)."})
    max_eval_samples: int | None = field(default=500, metadata={"help": "Score only the first N rows of the eval set."})
    calibration_file: str | None = field(default=None, metadata={"help": "Parallel file of calibration rows for GPFQ."})
    source_column: str = field(default="en", metadata={"help": "Source column of --calibration_file."})
    target_column: str = field(default="fr", metadata={"help": "Target column of --calibration_file."})
    max_calibration_samples: int = field(
        default=128, metadata={"help": "Calibration rows, the first of --calibration_file (>= 1)."}
    )
    source_prefix: str | None = field(
        default=None,
        metadata={
            "help": "Prefix of the eval and calibration sources ('' = none). Default for T5-family models: the eval "
            "set's prefix, and the reference T5 prefix for --calibration_file; none for other families."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Generation and calibration batch size."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens generated per sentence."})
    scale: float = field(default=1.16, metadata={"help": "Alphabet radius factor C (step = C * mean row max / K)."})
    output_dir: str = field(default="runs/bit-sweep", metadata={"help": "Output directory (re-run to resume)."})
    seed: int = field(default=0, metadata={"help": "Seed (recorded; RTN and GPFQ are deterministic)."})

    def __post_init__(self):
        for b in self.bits:
            check_range("bits", b, 2, 8)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"--methods: unknown {unknown} (use {list(METHODS)})")
        check_range("max_eval_samples", self.max_eval_samples, 1)
        check_range("max_calibration_samples", self.max_calibration_samples, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("scale", self.scale, 0.0, low_open=True)


def demo_preset() -> dict:
    from llmdiet.demo import DEMO_EN_FR

    return {
        "models": ["llmdiet-demo:teacher", "runs/distill-demo"],
        "eval_set": "demo-en-fr",
        "max_eval_samples": 200,
        "calibration_file": str(DEMO_EN_FR),
        "max_calibration_samples": 64,
        "bits": [2, 3, 4, 6, 8],
        "max_new_tokens": 32,
        "output_dir": "runs/bit-sweep-demo",
    }


def calibration_batches(args: BitSweepArguments, tokenizer, model) -> list[dict]:
    if not args.calibration_file:
        raise ConfigError("GPFQ needs --calibration_file (parallel rows, e.g. training data); or use --methods rtn")
    from transformers import DataCollatorForSeq2Seq

    rows = read_parallel_file(args.calibration_file, args.source_column, args.target_column)[
        : args.max_calibration_samples
    ]
    prefix = default_prefix(model.config.model_type, REFERENCE_PREFIX, args.source_prefix)
    ds, _ = tokenize_rows(rows, tokenizer, prefix, 256, 256)
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    return [
        dict(collate([ds[j] for j in range(i, min(i + args.batch_size, len(ds)))]))
        for i in range(0, len(ds), args.batch_size)
    ]


def score(model, tokenizer, sources, references, args) -> dict:
    from llmdiet.engines.torch_engine import TorchSeq2SeqBackend
    from llmdiet.evaluation.generation import generate_all
    from llmdiet.evaluation.metrics import corpus_scores

    backend = TorchSeq2SeqBackend("in-memory", model=model, tokenizer=tokenizer, name="torch-fp32-fakequant")
    result = generate_all(
        backend,
        sources,
        GenerationSettings(max_new_tokens=args.max_new_tokens),
        args.batch_size,
        warmup_batches=0,
        progress=False,
    )
    scores = corpus_scores([t.hypothesis for t in result.translations], references)
    return {k: scores[k] for k in ("bleu", "chrf", "rougeL", "bleu_signature")}


def sweep_settings(args: BitSweepArguments, spec) -> dict:
    """Everything that changes a point besides (model name, method, bits): the fingerprint of ``points.jsonl``."""
    from llmdiet.fingerprint import file_sha256, model_identity
    from llmdiet.modeling import resolve_model

    calibration = None
    if args.calibration_file:
        calibration = {
            "file": file_sha256(args.calibration_file),
            "columns": [args.source_column, args.target_column],
            "rows": args.max_calibration_samples,
            "prefix": args.source_prefix,
        }
    models = {}
    for name in args.models:
        path = resolve_model(name)
        models[name] = model_identity(path) if Path(path).exists() else {"missing": name}
    return {
        "models": models,
        "eval_set": {
            "fingerprint": spec.fingerprint(),
            "prefix": spec.prefix if args.source_prefix is None else args.source_prefix,
            "rows": [spec.start, spec.stop],
        },
        "limit": args.max_eval_samples,
        "calibration": calibration,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "scale": args.scale,
    }


def check_sweep_settings(out: Path, args: BitSweepArguments, spec) -> None:
    """Points of an earlier run are reused only if they were made with the same settings (by content)."""
    from llmdiet.fingerprint import check_parts

    path, current = out / "sweep_settings.json", sweep_settings(args, spec)
    if path.exists():
        stored = json.loads(path.read_text())
        # a model added to --models is fine; a model whose content changed is not
        stored_models = {k: v for k, v in stored.get("models", {}).items() if k in current["models"]}
        check_parts(
            {**stored, "models": stored_models},
            {**current, "models": {k: v for k, v in current["models"].items() if k in stored_models}},
            out,
            "use another --output_dir (or delete points.jsonl) to sweep with the new settings",
        )
        current["models"] = {**stored.get("models", {}), **current["models"]}
    path.write_text(json.dumps(current, indent=2))


def run_sweep(args: BitSweepArguments, command=None) -> dict:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    points_path = out / "points.jsonl"
    done = _finished_points(points_path)
    spec = resolve_eval_set(args.eval_set)
    rows = spec.load()[: args.max_eval_samples]
    check_sweep_settings(out, args, spec)
    for model_name in args.models:
        _sweep_model(args, model_name, spec, rows, points_path, done)
    points = [done[k] for k in done if k[0] in args.models]
    summary = {
        "points": points,
        "eval_set": spec.describe(),
        "num_sentences": len(rows),
        "provenance": provenance(seed=args.seed, command=command),
    }
    (out / "bit_sweep.json").write_text(json.dumps(summary, indent=2))
    (out / "bit_sweep.md").write_text(markdown(points))
    plot(points, out)
    return summary


def _finished_points(points_path: Path) -> dict[tuple, dict]:
    """The points a killed or earlier run wrote, by (model, method, bits); a torn last line is dropped."""
    done, kept = {}, []
    if points_path.exists():
        for line in points_path.read_text().splitlines():
            try:
                p = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run: dropped below
            done[(p["model"], p["method"], p["bits"])] = p
            kept.append(line)
        points_path.write_text("".join(line + "\n" for line in kept))
    return done


def _sweep_model(args: BitSweepArguments, model_name: str, spec, rows, points_path: Path, done: dict) -> None:
    """Every (method, bits) point of one model not yet in ``done``, each appended to points.jsonl as it finishes."""
    from llmdiet.modeling import resolve_model
    from llmdiet.quantize.lowbit import quantize_linears

    path = resolve_model(model_name)
    if not Path(path).exists() and model_name.startswith("runs/"):
        raise ConfigError(f"model '{model_name}' not found: train it first (e.g. llmdiet distill --preset demo)")
    base, tokenizer = load_seq2seq(path)
    prefix = default_prefix(base.config.model_type, spec.prefix, args.source_prefix)  # T5's prefix for T5 only
    sources, references = [prefix + r.source for r in rows], [r.target for r in rows]
    calib = None
    for method, bits in [("float", 32)] + [(m, b) for m in args.methods for b in args.bits]:
        if (model_name, method, bits) in done:
            continue
        model = base if method == "float" else copy.deepcopy(base)
        if method == "float":
            size = {"packed_bytes": sum(p.numel() * 4 for p in base.parameters())}
            size["fp32_bytes"] = size["packed_bytes"]
        else:
            if method == "gpfq" and calib is None:
                calib = calibration_batches(args, tokenizer, base)
            size = quantize_linears(model, method, bits, calib if method == "gpfq" else None, args.scale).as_dict()
        point = {
            "model": model_name,
            "method": method,
            "bits": bits,
            "parameters": sum(p.numel() for p in base.parameters()),
            **size,
            **score(model, tokenizer, sources, references, args),
        }
        logger.info("%s %s %d-bit: BLEU %.2f", model_name, method, bits, point["bleu"])
        with points_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")
        done[(model_name, method, bits)] = point
        del model


def markdown(points: list[dict]) -> str:
    lines = [
        "| model | method | bits | BLEU | chrF | ROUGE-L | packed MB | size vs fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["model"], p["method"] != "float", p["method"], p["bits"])):
        ratio = p["packed_bytes"] / p["fp32_bytes"]
        lines.append(
            f"| {p['model']} | {p['method']} | {p['bits']} | {p['bleu']:.2f} | {p['chrf']:.2f} | "
            f"{p['rougeL']:.2f} | {p['packed_bytes'] / 1e6:.2f} | {ratio:.3f} |"
        )
    return (
        "\n".join(lines)
        + "\n\nPacked size: b bits per Linear weight + one fp32 step per layer + float tensors at 4 bytes.\n"
    )


def plot(points: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for x_key, fname, xlabel in (
        ("bits", "bleu_vs_bits.png", "bits per weight"),
        ("packed_bytes", "bleu_vs_packed_size.png", "packed size (MB)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for model in dict.fromkeys(p["model"] for p in points):
            for method, style in (("rtn", "--"), ("gpfq", "-")):
                pts = sorted((p[x_key], p["bleu"]) for p in points if p["model"] == model and p["method"] == method)
                if pts:
                    xs = [x / 1e6 if x_key == "packed_bytes" else x for x, _ in pts]
                    ax.plot(xs, [y for _, y in pts], style, marker="o", label=f"{model} {method}")
            base = [p for p in points if p["model"] == model and p["method"] == "float"]
            if base and x_key == "bits":
                ax.axhline(base[0]["bleu"], color="grey", lw=0.8, ls=":")
            elif base:
                ax.plot([base[0]["packed_bytes"] / 1e6], [base[0]["bleu"]], "k*", label=f"{model} fp32")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("BLEU (sacrebleu)")
        if x_key == "packed_bytes":
            ax.set_xscale("log")
        what = "bits per Linear weight (dotted: fp32)" if x_key == "bits" else "packed size (b-bit codes + scales)"
        ax.set_title(f"BLEU vs {what}: RTN (dashed) vs GPFQ (solid), per model", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    precheck([BitSweepArguments], argv, presets={"demo": demo_preset}, prog="llmdiet bit-sweep")
    (args,) = parse_config(
        [BitSweepArguments],
        argv,
        presets={"demo": demo_preset},
        prog="llmdiet bit-sweep",
        description="2-8-bit RTN vs GPFQ sweep of teacher and student weights.",
    )
    import torch

    torch.manual_seed(args.seed)
    summary = run_sweep(args, command=["recipes/bit_sweep.py", *argv])
    print(markdown(summary["points"]))
    print(f"wrote {Path(args.output_dir) / 'bit_sweep.json'}, bit_sweep.md, bleu_vs_bits.png, bleu_vs_packed_size.png")
    return 0
